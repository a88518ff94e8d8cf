"""Pretrained weights: resolved once in the driver, shipped through Ray's object store, required or not."""

from pathlib import Path

import pandas as pd
import pytest
import timm
import torch
from safetensors.torch import load_file, save_file

from search import SearchOptions, main
from search.driver import Prepared, run_task
from search.inputs.data import resolve_task


@pytest.fixture()
def weights_dir(tmp_path):
    torch.manual_seed(123)
    source = timm.create_model("resnet10t")
    folder = tmp_path / "weights"
    folder.mkdir()
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(folder / "resnet10t.safetensors"))
    return folder, source.state_dict()


def test_trials_get_the_files_weights_through_the_object_store_not_the_file(
    ray_cluster, tiny_eggs, tmp_path, weights_dir, locks
):
    folder, expected = weights_dir
    options = SearchOptions(
        task=str(tiny_eggs),
        backbones=("resnet10t",),
        weights=str(folder),
        pretrained="required",
        trials=4,
        max_epochs=1,
        image_size=32,
        retrain=False,
        concurrency=1,  # one worker, reused: each trial still gets the weights from the object store
        out=str(tmp_path / "runs"),
    )
    prepared = Prepared(options, locks)
    (folder / "resnet10t.safetensors").unlink()  # a trial that opened the file would fail now
    record = run_task(prepared)
    assert record["pretrained"] is True
    assert record["provenance"]["pretrained_sources"]["resnet10t"].endswith("resnet10t.safetensors")

    out = tmp_path / "runs" / resolve_task(str(tiny_eggs)).name
    trials = pd.read_parquet(out / "trials.parquet")
    assert trials["status"].ne("ERROR").all() and trials["pretrained"].all()
    probe = trials[trials["freeze_depth"] == 5].iloc[0]  # the warm start's linear probe keeps the backbone as is
    checkpoint = next(
        Path(prepared.files.experiment).glob(f"train_trial_{probe['trial_id']}_*/checkpoint_*/model.safetensors")
    )
    trained = load_file(str(checkpoint))
    backbone = [k for k in expected if not k.startswith("fc.")]
    assert backbone and all(torch.equal(trained[k], expected[k]) for k in backbone)
    assert not torch.equal(trained["fc.weight"][:2], expected["fc.weight"][:2])


def test_required_weights_that_are_missing_stop_before_ray_with_how_to_fix(tiny_eggs, tmp_path, capsys):
    code = main(
        [
            str(tiny_eggs),
            "--backbones",
            "test_resnet",
            "--pretrained",
            "required",
            "--weights",
            str(tmp_path),
            "--out",
            str(tmp_path / "runs"),
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "no pretrained weights for test_resnet" in err
    assert str(tmp_path / "test_resnet.safetensors") in err and "--pretrained auto" in err
    assert not (tmp_path / "runs").exists()


def test_a_search_whose_every_trial_fails_says_why_and_writes_no_winner(ray_cluster, tiny_eggs, tmp_path, locks):
    from search.failures import SearchFailed

    options = SearchOptions(
        task=str(tiny_eggs),
        backbones=("resnet10t",),
        pretrained="off",
        trials=2,
        max_epochs=1,
        image_size=20,
        retrain=False,
        max_failures=0,  # each failure starts a new worker: restarts would only repeat the same error
        out=str(tmp_path / "runs"),
    )
    prepared = Prepared(options, locks)
    (prepared.data.cache.path / "train_x.npy").unlink()  # the decoded images vanish: every trial fails for real
    with pytest.raises(SearchFailed, match="no trial finished.*FileNotFoundError"):
        run_task(prepared)
    out = tmp_path / "runs" / resolve_task(str(tiny_eggs)).name
    trials = pd.read_parquet(out / "trials.parquet")
    assert (trials["status"] == "ERROR").all() and len(trials) == 2
    assert not (out / "best.json").exists()
