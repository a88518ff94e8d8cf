"""A real tiny search: Ray Tune schedules trials, Optuna proposes, ASHA stops, the best is retrained."""

import json

import pandas as pd
import pytest
import timm
import torch
from safetensors.torch import load_file

import datasets.synthetic
from datasets import build_cache, default_cache_root, scan_folder
from results import EPOCH_COLUMNS, TRIAL_COLUMNS
from search import main
from tests.conftest import TINY_SPLITS
from trainables import Images, Preprocess, evaluate


@pytest.fixture(scope="module")
def finished_search(ray_cluster, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    patch = pytest.MonkeyPatch()
    patch.setitem(datasets.synthetic.DEMO_SIZES, "egg", TINY_SPLITS)  # the demo's pipeline on fewer images
    try:
        code = main(
            [
                "egg",
                "--demo",
                "--trials",
                "3",
                "--max-epochs",
                "2",
                "--image-size",
                "32",
                "--backbones",
                "resnet10t,mobilenetv3_small_050",
                "--out",
                str(out),
                "--seed",
                "3",
            ]
        )
    finally:
        patch.undo()
    assert code == 0
    return out


def test_every_contract_file_is_written(finished_search):
    task = finished_search / "egg"
    for name in (
        "trials.parquet",
        "epochs.parquet",
        "best.json",
        "best.md",
        "data_report.json",
        "model/weights.safetensors",
        "model/config.json",
        "model/labels.json",
    ):
        assert (task / name).is_file(), name
    assert (finished_search / "summary.md").is_file() and (finished_search / "summary.csv").is_file()


def test_tables_hold_every_trial_and_epoch(finished_search):
    trials = pd.read_parquet(finished_search / "egg" / "trials.parquet")
    epochs = pd.read_parquet(finished_search / "egg" / "epochs.parquet")
    assert list(trials.columns) == TRIAL_COLUMNS and list(epochs.columns) == EPOCH_COLUMNS
    assert len(trials) == 3
    assert set(trials["status"]) <= {"TERMINATED", "STOPPED"}
    assert (trials["node"].str.len() > 0).all()
    assert not trials["pretrained"].any()
    assert set(trials["backbone"]) <= {"resnet10t", "mobilenetv3_small_050"}
    assert len(epochs) == trials["epochs_run"].sum()
    assert epochs["img_per_s"].gt(0).all()


def test_best_json_is_synthetic_with_test_metrics_and_provenance(finished_search):
    best = json.loads((finished_search / "egg" / "best.json").read_text())
    assert 0 <= best["test_acc"] <= 1 and 0 <= best["test_macro_f1"] <= 1
    assert best["provenance"]["synthetic"] is True and best["provenance"]["seed"] == 3
    assert best["provenance"]["versions"]["ray"] and best["provenance"]["data_fingerprint"]
    assert best["pretrained"] is False
    summary = (finished_search / "summary.md").read_text()
    assert "| egg |" in summary
    assert "synthetic" in (finished_search / "egg" / "best.md").read_text()


def test_saved_model_loads_with_timm_and_reproduces_the_test_accuracy(finished_search):
    model_dir = finished_search / "egg" / "model"
    config = json.loads((model_dir / "config.json").read_text())
    labels = json.loads((model_dir / "labels.json").read_text())
    model = timm.create_model(config["backbone"], pretrained=False, num_classes=len(labels))
    model.load_state_dict(load_file(str(model_dir / "weights.safetensors")))
    best = json.loads((finished_search / "egg" / "best.json").read_text())
    root = datasets.synthetic.make_demo_dataset("egg", default_cache_root() / "demo", per_class=TINY_SPLITS)
    cache = build_cache(scan_folder(root), config["input_size"][-1])
    torch.set_num_threads(1)
    prep = Preprocess(tuple(config["mean"]), tuple(config["std"]), config["crop_pct"], config["interpolation"])
    result = evaluate(model, Images([cache.load("test")]), len(labels), prep)
    assert result["acc"] == pytest.approx(best["test_acc"])
