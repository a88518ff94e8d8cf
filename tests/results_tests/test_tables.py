import math
import subprocess
import sys

import pytest

from results import (
    EPOCH_COLUMNS,
    SUMMARY_COLUMNS,
    TRIAL_COLUMNS,
    best_markdown,
    best_trial,
    epochs_frame,
    priced_variants,
    report_html,
    summary_frame,
    top_configs,
    trials_frame,
    variants_frame,
)
from tests.conftest import trial_config

CONFIG = trial_config()


def _epoch(epoch, acc, loss=0.5):
    return {
        "epoch": epoch,
        "train_loss": 0.6,
        "val_loss": loss,
        "val_acc": acc,
        "val_macro_f1": acc,
        "img_per_s": 100.0,
        "wall_s": 10.0 * epoch,
        "node": "n1",
    }


RECORDS = [
    {
        "trial_id": "a",
        "config": CONFIG,
        "history": [_epoch(1, 0.6), _epoch(2, 0.8), _epoch(3, 0.7)],
        "error": None,
        "node": "n1",
    },
    {
        "trial_id": "b",
        "config": {**CONFIG, "backbone": "efficientnet_b0"},
        "history": [_epoch(1, 0.5)],
        "error": None,
        "node": "n2",
    },
    {
        "trial_id": "c",
        "config": CONFIG,
        "history": [_epoch(1, math.nan, math.nan)],
        "error": "FloatingPointError: x",
        "node": "n1",
    },
    {"trial_id": "d", "config": CONFIG, "history": [_epoch(1, 0.9), _epoch(1, 0.9)], "error": None, "node": "n1"},
]


def test_trials_table_has_the_contract_columns_statuses_and_best_epoch_metrics():
    trials = trials_frame(RECORDS, max_epochs=3)
    assert list(trials.columns) == TRIAL_COLUMNS
    by_id = trials.set_index("trial_id")
    assert by_id.loc["a", "status"] == "TERMINATED" and by_id.loc["a", "val_acc"] == 0.8
    assert by_id.loc["a", "best_epoch"] == 2 and by_id.loc["a", "epochs_run"] == 3
    assert by_id.loc["b", "status"] == "STOPPED"
    assert by_id.loc["c", "status"] == "ERROR" and by_id.loc["c", "error"].startswith("FloatingPointError")


def test_epochs_table_keeps_each_epoch_once():
    epochs = epochs_frame(RECORDS)
    assert list(epochs.columns) == EPOCH_COLUMNS
    assert len(epochs[epochs.trial_id == "d"]) == 1
    assert len(epochs) == 3 + 1 + 1 + 1


def test_best_is_the_highest_finite_accuracy_and_never_an_errored_or_nan_trial():
    assert best_trial(trials_frame(RECORDS, 3))["trial_id"] == "d"
    only_bad = trials_frame([RECORDS[2]], 3)
    with pytest.raises(ValueError, match="no trial finished"):
        best_trial(only_bad)


def _best_json(**over):
    record = {
        "task": "egg",
        "classes": ["broken", "intact"],
        "images": 100,
        "config": CONFIG,
        "val_acc": 0.9,
        "val_macro_f1": 0.89,
        "val_loss": 0.3,
        "test_acc": 0.93,
        "test_macro_f1": 0.92,
        "trials": {"total": 8, "terminated": 3, "stopped": 5, "error": 0},
        "search_wall_s": 120.0,
        "cpu_hours": 0.1,
        "gpu_hours": 0.0,
        "pretrained": False,
        "provenance": {"synthetic": True, "data_root": "/x"},
    }
    return {**record, **over}


def test_best_markdown_marks_synthetic_and_not_pretrained_and_shows_the_config():
    text = best_markdown(_best_json())
    assert text.startswith("## Best configuration: egg (synthetic, not pretrained)")
    assert "| backbone | resnet18 |" in text and "| test_acc | 0.93 |" in text
    assert "8 (3 finished, 5 stopped early, 0 errored)" in text


def test_the_report_page_and_best_md_print_every_number_alike():
    best = _best_json(config=trial_config(aug_strength=0.4236547993389047, lr=0.0019578897201213002))
    page, text = report_html(best, {}, {}, {}), best_markdown(best)
    for shown in ("0.4237", "0.001958"):
        assert f"<td>{shown}</td>" in page and f"| {shown} |" in text
    assert "0.4236547993389047" not in page and "0.0019578897201213002" not in page


def test_summary_has_one_row_per_task_with_the_contract_columns():
    summary = summary_frame([_best_json(task="sports"), _best_json()])
    assert list(summary.columns) == SUMMARY_COLUMNS
    assert summary["task"].tolist() == ["egg", "sports"]
    assert summary["synthetic"].all()


def test_top_configs_for_a_warm_start_keep_the_best_with_known_backbones():
    trials = trials_frame(RECORDS, max_epochs=3)
    top = top_configs(trials, k=2, backbones=["resnet18"])
    assert [c["backbone"] for c in top] == ["resnet18", "resnet18"]
    assert top[0] == CONFIG and set(top[1]) == set(CONFIG)
    assert top_configs(trials, k=5, backbones=["efficientnet_b0"])[0]["backbone"] == "efficientnet_b0"


def test_variant_costs_count_a_soup_as_one_model_an_ensemble_as_its_members_and_tta_as_two_passes():
    costs = {"a": {"latency_ms": 10.0, "params_m": 3.0}, "b": {"latency_ms": 30.0, "params_m": 8.0}}
    two = [{"trial_id": "t1", "backbone": "a", "weight": 2}, {"trial_id": "t2", "backbone": "b", "weight": 1}]
    soup = [{"trial_id": "t1", "backbone": "a", "weight": 1}, {"trial_id": "t3", "backbone": "a", "weight": 1}]
    rows = [
        {"variant": "soup", "tta": False, "members": soup, "val_acc": 0.9, "test_acc": 0.9, "test_macro_f1": 0.9},
        {"variant": "ensemble", "tta": False, "members": two, "val_acc": 0.9, "test_acc": 0.9, "test_macro_f1": 0.9},
        {"variant": "ensemble", "tta": True, "members": two, "val_acc": None, "test_acc": 0.9, "test_macro_f1": 0.9},
    ]
    priced = priced_variants(rows, costs)
    assert [(r["latency_ms"], r["params_m"]) for r in priced] == [(10.0, 3.0), (40.0, 11.0), (80.0, 11.0)]
    frame = variants_frame({"variants": priced, "model_variant": "ensemble", "tta": True})
    assert frame["saved"].tolist() == ["", "", "yes"]
    assert frame["members"].iloc[1] == "t1 (a) x2, t2 (b)"


def test_the_tables_load_without_torch_or_ray():
    code = "import results, sys; print(sorted(m for m in ('torch', 'ray', 'timm') if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"
