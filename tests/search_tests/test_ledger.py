"""The trial ledger: each epoch once whoever passes it on, one file that a resumed search reads back, and the one
object every restored reader shares."""

import json
import logging
import math
import pickle
from types import SimpleNamespace

import pytest

from datasets import DamagedFile
from search.tuning.asha import make_scheduler
from search.tuning.ledger import TrialLedger
from search.tuning.progress import Progress


def _epoch(epoch: int, acc: float, loss: float = 0.5, **extra) -> dict:
    return {"epoch": epoch, "val_acc": acc, "val_loss": loss, "wall_s": 10.0 * epoch, "train_s": 8.0, **extra}


def test_each_epoch_is_taken_once_whether_it_comes_nested_or_flattened(tmp_path):
    ledger = TrialLedger.open(tmp_path / "search.json", fresh=True)
    # the scheduler gets Ray Tune's flattened result, the stopper and the callbacks the nested one
    assert ledger.record("a", _epoch(1, 0.6, **{"config/backbone": "resnet10t"}))
    assert not ledger.record("a", _epoch(1, 0.6, config={"backbone": "resnet10t"}))
    assert not ledger.record("a", _epoch(1, 0.9)), "an epoch run again after a restore keeps its first result"
    assert not ledger.record("a", _epoch(2, math.nan)) and not ledger.record("a", {"epoch": 2})
    assert ledger.record("a", _epoch(2, 0.7, loss=0.4))
    entry = ledger.entries["a"]
    assert entry.backbone == "resnet10t" and [e["epoch"] for e in entry.epochs] == [1, 2]
    assert entry.epoch_s(0) == 10.0 and entry.epoch_s() == 10.0 and entry.best() == (0.7, -0.4)
    ledger.start({"trials": 3}, spent_s=120.0)
    saved = json.loads((tmp_path / "search.json").read_text())
    assert [e["val_acc"] for e in saved["trials"]["a"]["epochs"]] == [0.6, 0.7]
    assert saved["search"] == {"trials": 3} and saved["elapsed_s"] == pytest.approx(120.0, abs=1.0)


def test_a_resumed_search_reads_the_file_back_and_every_restored_reader_shares_it(tmp_path, caplog):
    path = tmp_path / "search.json"
    ledger = TrialLedger.open(path, fresh=True)
    scheduler = make_scheduler(4, ledger)
    progress = Progress("egg", 3, 4, ledger)
    pickled = pickle.dumps((scheduler, progress))  # as Ray Tune keeps them when the search starts
    ledger.record("a", _epoch(1, 0.6, config={"backbone": "resnet10t"}))
    ledger.record("b", _epoch(1, 0.8, config={"backbone": "resnet18"}))
    ledger.end("b", stopped_by="asha")

    resumed = TrialLedger.open(path, fresh=False)  # the next run's driver, from the file
    scheduler, progress = pickle.loads(pickled)
    assert scheduler.ledger is resumed and progress.ledger is resumed
    assert resumed.entries["b"].stopped_by == "asha" and resumed.entries["b"].done
    assert scheduler.rung(1.0) == {"a": 0.6, "b": 0.8}, "the restored scheduler sees the epochs since the start"
    trial = SimpleNamespace(trial_id="c", status="RUNNING", last_result={})
    with caplog.at_level(logging.INFO, logger="search.tuning.progress"):
        progress.on_trial_complete(0, [trial], trial)
    assert "best val_acc 0.800 (resnet18, trial b)" in caplog.records[-1].getMessage()


def test_a_damaged_ledger_is_named_and_a_missing_one_is_a_search_with_no_results_yet(tmp_path):
    path = tmp_path / "search.json"
    assert TrialLedger.open(path, fresh=False).entries == {}
    entry = {"backbone": "resnet10t", "on_features": False, "epochs": [{"epoch": "one", "val_acc": 0.5}]}
    path.write_text(json.dumps({"search": {}, "elapsed_s": 1.0, "trials": {"a": entry}, "ended_by": ""}))
    with pytest.raises(DamagedFile, match="search.json is damaged.*--overwrite"):
        TrialLedger.open(path, fresh=False)
