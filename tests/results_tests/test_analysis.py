"""The comparison frames: top-k, backbones against cost with the Pareto front, the search's progress, confusions."""

import math

import pandas as pd

from results import (
    BACKBONE_COLUMNS,
    PROGRESS_COLUMNS,
    TOP_COLUMNS,
    backbone_frame,
    epochs_frame,
    family_frame,
    pareto_front,
    progress_frame,
    top_confusions,
    top_k_frame,
    trials_frame,
)
from tests.results_tests.test_tables import RECORDS


def _frames():
    records = [
        {**r, "history": [{**h, "timestamp": 100 * i + h["epoch"]} for h in r["history"]]}
        for i, r in enumerate(RECORDS)
    ]
    return trials_frame(records, max_epochs=3), epochs_frame(records)


def test_top_k_ranks_the_comparable_trials_best_first_and_leaves_out_errors():
    trials, _ = _frames()
    top = top_k_frame(trials, k=2)
    assert list(top.columns) == TOP_COLUMNS
    assert top["trial_id"].tolist() == ["d", "a"] and top["rank"].tolist() == [1, 2]
    assert "c" not in top_k_frame(trials, k=10)["trial_id"].tolist()


def test_pareto_front_keeps_the_points_nothing_beats_on_both_accuracy_and_latency():
    assert pareto_front([0.9, 0.8, 0.95, 0.7, math.nan], [10, 5, 30, 6, 1]) == [True, True, True, False, False]
    assert pareto_front([0.9, 0.9], [5, 5]) == [True, True]


def test_backbone_table_has_each_backbones_best_and_cost():
    trials, _ = _frames()
    costs = {"resnet18": {"params_m": 11.7, "latency_ms": 8.0}, "efficientnet_b0": {"params_m": 5.3, "latency_ms": 9.0}}
    frame = backbone_frame(trials, costs)
    assert list(frame.columns) == BACKBONE_COLUMNS
    rows = frame.set_index("backbone")
    assert rows.loc["resnet18", "best_val_acc"] == 0.9 and rows.loc["resnet18", "trials"] == 3
    assert rows.loc["resnet18", "pareto"] and not rows.loc["efficientnet_b0", "pareto"]  # slower and less accurate
    assert rows.loc["efficientnet_b0", "best_trial"] == "b"
    assert rows.loc["resnet18", "family"] == "resnet" and rows.loc["efficientnet_b0", "family"] == "efficientnet"
    assert family_frame(frame).to_dict("records") == [
        {"family": "resnet", "backbone": "resnet18", "best_val_acc": 0.9},
        {"family": "efficientnet", "backbone": "efficientnet_b0", "best_val_acc": 0.5},
    ]


def test_progress_is_the_running_best_in_start_order_with_compute_spent():
    trials, epochs = _frames()
    progress = progress_frame(trials, epochs)
    assert list(progress.columns) == PROGRESS_COLUMNS
    assert progress["trial_id"].tolist() == ["a", "b", "c", "d"]
    assert progress["best_val_acc"].tolist() == [0.8, 0.8, 0.8, 0.9]  # the errored trial never counts
    assert progress["trial_epochs"].tolist() == [3, 4, 5, 6]


def test_top_confusions_count_only_mistakes_most_frequent_first():
    frame = top_confusions([[5, 1, 0], [3, 4, 2], [0, 0, 6]], ["a", "b", "c"], k=2)
    assert frame.to_dict("records") == [
        {"true": "b", "predicted": "a", "count": 3},
        {"true": "b", "predicted": "c", "count": 2},
    ]
    assert isinstance(frame, pd.DataFrame) and top_confusions([[2]], ["a"]).empty
