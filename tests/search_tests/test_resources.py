"""Fitting trials to a cluster's nodes: fractions of a GPU, refusals that say what the nodes offer, and whether a
backbone's trial fits its share of a GPU's memory."""

import logging
from types import SimpleNamespace

import pandas as pd
import pytest

from datasets import DEFAULT_BACKBONES, UsageError
from search import main
from search.cluster.packing import GPU_MEMORY_MIB, MemoryWatch, estimate_mib, memory_check, packing_warnings
from search.cluster.session import node_resources, plan_resources
from search.tuning.ledger import TrialLedger
from tests.search_tests.tiny import tiny_search

ONE_GPU = [{"CPU": 16.0, "GPU": 1.0, "memory": 1e11}]


@pytest.mark.parametrize(
    ("nodes", "gpus", "concurrency"),
    [
        (ONE_GPU, 0.25, 4),  # four trials share the GPU
        (ONE_GPU, 0.3, 3),  # 0.3 x 4 > 1: the fourth does not fit
        (ONE_GPU, 1.0, 1),
        ([{"CPU": 16.0, "GPU": 2.0}], 0.5, 4),
        ([{"CPU": 16.0, "GPU": 4.0}], 2.0, 2),
        ([{"CPU": 2.0, "GPU": 1.0}], 0.25, 2),  # the CPUs run out first
        ([{"CPU": 8.0, "GPU": 1.0}, {"CPU": 8.0, "GPU": 1.0}], 0.5, 4),  # two nodes, two trials each
        ([{"CPU": 4.0}], 0.0, 4),  # CPUs only
    ],
)
def test_a_fraction_of_a_gpu_packs_that_many_trials_on_each_gpu(nodes, gpus, concurrency):
    resources = plan_resources(nodes, 1, gpus, None)
    assert resources.gpus_per_trial == gpus and resources.concurrency == concurrency


def test_gpus_default_to_one_per_trial_where_there_are_gpus_and_none_where_not():
    assert plan_resources(ONE_GPU, 1, None, None).gpus_per_trial == 1.0
    assert plan_resources([{"CPU": 2.0}], 1, None, None).gpus_per_trial == 0.0
    assert plan_resources(ONE_GPU, 1, 1.0, None).retrain_gpus == 1.0
    assert plan_resources(ONE_GPU, 1, 0.25, 2).concurrency == 2, "--concurrency caps it"


@pytest.mark.parametrize(
    ("nodes", "cpus", "gpus", "message"),
    [
        ([{"CPU": 2.0}], 1, 0.5, "--gpus-per-trial 0.5 but no node of the cluster has a GPU"),
        (ONE_GPU, 1, 2.0, "asks for 1 CPUs and 2 GPUs but the largest node offers 16 CPUs and 1 GPUs"),
        ([{"CPU": 2.0}, {"CPU": 4.0}], 8, 0.0, "asks for 8 CPUs and 0 GPUs but the largest node offers 4 CPUs"),
        ([{"CPU": 2.0, "GPU": 1.0}], 4, 0.5, "the largest node offers 2 CPUs and 1 GPUs"),
    ],
)
def test_a_trial_larger_than_any_node_is_refused_with_what_the_largest_offers(nodes, cpus, gpus, message):
    with pytest.raises(UsageError, match=message.replace("(", r"\(")):
        plan_resources(nodes, cpus, gpus, None)


def test_a_fraction_of_a_gpu_on_a_cpu_cluster_exits_2_before_any_trial(ray_cluster, tiny_eggs, tmp_path, capsys):
    assert all(n.get("GPU", 0) == 0 for n in node_resources())
    argv = tiny_search(tiny_eggs, tmp_path, "--gpus-per-trial", "0.5", trials=None, max_epochs=None, image_size=24)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "error: --gpus-per-trial 0.5 but no node of the cluster has a GPU; leave it out (or pass 0) to train on "
        "CPUs, or pass --autoscaling when the cluster's autoscaler adds GPU nodes"
    ]
    assert not list(tmp_path.rglob("trials.parquet")) and not list(tmp_path.rglob("result.json"))


def test_every_default_backbone_has_a_memory_estimate_that_grows_with_batch_and_image_size():
    assert set(DEFAULT_BACKBONES) <= set(GPU_MEMORY_MIB)
    for name in DEFAULT_BACKBONES:
        small, large, larger = (estimate_mib(name, s, b) for s, b in ((224, 16), (224, 64), (320, 64)))
        assert 1024 < small < large < larger < 12 * 1024, name
    assert estimate_mib("resnet10t", 224, 32) is None


def test_packing_warns_about_the_backbones_that_do_not_fit_their_share_and_suggests_a_fraction():
    gpu = 12 * 1024
    assert packing_warnings(DEFAULT_BACKBONES, 224, 64, 1.0, gpu) == []
    lines = packing_warnings(DEFAULT_BACKBONES, 224, 64, 0.25, gpu)  # 3 GiB each
    named = {line.split()[0] for line in lines}
    assert named == {"resnet50", "efficientnet_b0", "efficientnet_b2"}
    resnet50 = next(line for line in lines if line.startswith("resnet50"))
    need = estimate_mib("resnet50", 224, 64)
    suggested = float(resnet50.rsplit(" ", 1)[1])
    assert suggested * gpu >= need and "--gpus-per-trial 0.25 gives each trial 3.0 GiB" in resnet50
    assert packing_warnings(["resnet10t"], 224, 64, 0.01, gpu) == [], "no estimate, no warning"


def _gpu_epochs(rows: list[tuple]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Trials and epochs as a GPU search records them: (trial, backbone, epoch, batch, peak MiB, timestamp)."""
    trials = pd.DataFrame(
        {"trial_id": t, "backbone": b, "freeze_depth": 0} for t, b, *_ in dict.fromkeys((r[0], r[1]) for r in rows)
    )
    epochs = pd.DataFrame(
        [
            {"trial_id": t, "epoch": e, "batch_size": n, "peak_memory_mb": m, "device": "cuda", "timestamp": ts}
            for t, _, e, n, m, ts in rows
        ]
    )
    return trials, epochs


def test_the_report_checks_measured_gpu_peaks_against_the_table_and_a_new_backbone_against_its_first_trial():
    resnet50 = estimate_mib("resnet50", 224, 64) - 1024  # the table's tensors, without the process's own memory
    trials, epochs = _gpu_epochs(
        [
            ("a", "resnet50", 1, 64, resnet50 * 0.9, 10),
            ("a", "resnet50", 2, 64, resnet50 * 1.1, 20),  # the trial's peak is its largest epoch's
            ("b", "convnext_atto", 1, 32, 3000.0, 15),  # the first trial of a backbone the table lacks
            ("c", "convnext_atto", 1, 64, 5000.0, 30),
        ]
    )
    check = memory_check(trials, epochs, 224).set_index("trial_id")
    assert check.loc["a", "basis"] == "table" and check.loc["a", "ratio"] == pytest.approx(1.1, abs=0.01)
    # the later trial, at twice the batch, is estimated from the first: twice its peak
    assert check.loc["c", "basis"] == "trial b" and check.loc["c", "estimate_mib"] == 6000
    assert check.loc["c", "ratio"] == pytest.approx(5000 / 6000, abs=0.01) and check.loc["b", "ratio"] == 1.0
    on_cpu = epochs.assign(device="cpu")
    assert memory_check(trials, on_cpu, 224).empty, "a CPU search has no GPU figures to check"


def _epoch(epoch: int, backbone: str, device: str = "cuda", **measured) -> dict:
    return {"epoch": epoch, "val_acc": 0.5, "device": device, "config": {"backbone": backbone}, **measured}


def test_a_backbone_outside_the_table_is_estimated_from_its_first_trial_during_the_search(caplog, tmp_path):
    ledger = TrialLedger.open(tmp_path / "search.json", fresh=True)
    watch = MemoryWatch(ledger, image_size=224, batch_size=64, gpus_per_trial=0.25, gpu_mib=80 * 1024)
    first = SimpleNamespace(trial_id="t1", config={"backbone": "convnext_atto"})
    with caplog.at_level(logging.INFO, logger="search.cluster.packing"):
        watch.on_trial_result(0, [], first, _epoch(1, "convnext_atto", peak_memory_mb=12_000.0, batch_size=32))
        watch.on_trial_result(1, [], first, _epoch(2, "convnext_atto", peak_memory_mb=30_000.0, batch_size=32))
    assert watch.measured()["convnext_atto"].peak_mib == 12_000, "the first measure stays the estimate"
    (info,) = [r.message for r in caplog.records if r.levelno == logging.INFO]
    assert "trial t1 peaked at 12000 MiB at batch 32" in info and "batch 64 needs about 24.4 GiB" in info
    (warning,) = [r.message for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.startswith("convnext_atto at 224 px and batch 64") and "--gpus-per-trial 0.25" in warning
    caplog.clear()
    listed = SimpleNamespace(trial_id="t2", config={"backbone": "resnet18"})
    watch.on_trial_result(2, [], listed, _epoch(1, "resnet18", peak_memory_mb=900.0, batch_size=64))
    on_cpu = SimpleNamespace(trial_id="t3", config={"backbone": "resnet10t"})
    watch.on_trial_result(3, [], on_cpu, _epoch(1, "resnet10t", device="cpu"))
    assert not caplog.records and set(watch.measured()) == {"convnext_atto"}
