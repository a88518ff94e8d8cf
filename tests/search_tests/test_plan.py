"""The time budget's plan: its reserve is its members' own measured costs, it refuses an epoch or a trial that does
not fit, and the final stage takes the ensemble the time left affords."""

import math
import pickle
from types import SimpleNamespace

import numpy as np
import pytest
from ray import tune

from search.final.choose import affordable_ensemble, ensemble_choice
from search.tuning.budget import FIXED_S, TASK_S, BudgetedSearch, Costs, TimeBudget, member_cost
from search.tuning.ledger import TrialLedger
from search.tuning.tuner import newest_checkpoint
from trainables.checkpoint import STATE_FILE
from trainables.combine import VAL_PROBS_FILE
from trainables.steps import epoch_size

SIZES = {"train": 100, "val": 25, "test": 25}
COSTS = Costs(
    forward_s={"a": 0.01, "b": 0.02},
    head_s={"a": 2.0, "b": 3.0},
    speedup=1.5,
    sizes=SIZES,
    image_size=64,
    max_epochs=4,
    progressive=True,
)


def _budget(tmp_path, seconds=1000.0, members=2, labels=None) -> TimeBudget:
    return TimeBudget(seconds, COSTS, members, TrialLedger.open(tmp_path / "search.json", fresh=True), labels)


def _spent(budget: TimeBudget, seconds: float) -> None:
    """The search has run ``seconds`` so far (as if the earlier runs had spent them)."""
    budget.ledger.spent_s = seconds


def _checkpoints(budget: TimeBudget, tmp_path, **probs: np.ndarray) -> None:
    """Each trial's newest checkpoint, holding its validation probabilities, as Ray Tune announces them."""
    for trial_id, array in probs.items():
        folder = tmp_path / f"checkpoint_{trial_id}"
        folder.mkdir()
        np.save(folder / VAL_PROBS_FILE, array)
        budget.ledger.on_checkpoint(0, [], SimpleNamespace(trial_id=trial_id), tune.Checkpoint(str(folder)))


def _probe(epoch, acc, wall):
    return {
        "epoch": epoch,
        "val_acc": acc,
        "wall_s": wall,
        "train_s": 0.01,
        "on_features": True,
        "config": {"backbone": "a"},
    }


def _tuned(epoch, acc, wall, train_s, backbone="b"):
    side = epoch_size(64, epoch - 1, 4)
    return {
        "epoch": epoch,
        "val_acc": acc,
        "wall_s": wall,
        "train_s": train_s,
        "train_size": side,
        "config": {"backbone": backbone},
    }


def test_the_reserve_is_the_sum_of_its_members_own_measured_costs(tmp_path):
    budget = _budget(tmp_path, members=2)
    assert budget.reserve() == FIXED_S  # nothing measured: nothing to retrain yet
    budget("p", _probe(1, 0.80, 0.5))
    budget("f", _tuned(1, 0.85, 30.0, 24.0))
    budget("w", _tuned(1, 0.50, 40.0, 30.0, backbone="a"))  # third best: not a member of two
    more = (100 + 25) / 100
    probe = TASK_S + 2.0 * more + 0.01 * (25 * 2 + 25)
    full = 24.0 / (epoch_size(64, 0, 4) / 64) ** 2  # its first epoch trained smaller: measured, then scaled
    area = sum((epoch_size(64, e, 4) / 64) ** 2 for e in range(4))
    tuned = TASK_S + full * area * more / 1.5 + 0.02 * (25 * 2 + 25)
    assert [t for t, _ in budget.plan()] == ["f", "p"]
    assert budget.reserve() == pytest.approx(FIXED_S + probe + tuned)
    assert member_cost(COSTS, budget.ledger.entries["p"]) == pytest.approx(probe)
    # the same epoch passed on twice (by the stopper, then the scheduler and the callbacks) counts once
    assert not budget.ledger.record("f", _tuned(1, 0.85, 30.0, 24.0))
    f = budget.ledger.entries["f"]
    assert len(f.epochs) == 1 and f.epoch_s() == 30.0 and budget.reserve() == pytest.approx(FIXED_S + probe + tuned)


def test_a_trial_stops_when_its_next_epoch_does_not_fit_and_then_no_trial_starts(tmp_path):
    budget = _budget(tmp_path, seconds=400.0, members=1)
    assert budget.admits_new()
    assert not budget("f", _tuned(1, 0.9, 30.0, 20.0))  # 30 s now, a bigger next epoch, well inside 400 s
    budget.ledger.record("f", _tuned(2, 0.9, 70.0, 36.0))
    _spent(budget, 400.0 - budget.reserve() - 10.0)  # 10 s left beside the reserve
    assert budget("f", _tuned(2, 0.9, 70.0, 36.0)), "its third epoch takes longer than the 10 s left"
    assert budget.ledger.entries["f"].stopped_by == "budget"
    assert not budget.admits_new() and "does not fit" in budget.ended_by
    saved = (tmp_path / "budget.json").read_text()
    assert "final_s" in saved and budget.ended_by in saved


def test_the_searcher_asks_for_no_trial_once_none_fits(tmp_path):
    class Counting(tune.search.Searcher):
        asked = 0

        def suggest(self, trial_id):
            self.asked += 1
            return {"backbone": "a"}

    inner = Counting(metric="val_acc", mode="max")
    budget = _budget(tmp_path, seconds=1000.0)
    search = BudgetedSearch(inner, budget)
    assert search.suggest("t1") == {"backbone": "a"}
    search.on_trial_result("t1", _tuned(1, 0.7, 100.0, 80.0))
    budget.ledger.record("t1", _tuned(1, 0.7, 100.0, 80.0))  # as the stopper records it
    assert budget.ledger.entries["t1"].epoch == 1
    _spent(budget, 999.0)
    assert search.suggest("t2") == tune.search.Searcher.FINISHED and inner.asked == 1


def test_the_final_stage_takes_the_ensemble_that_fits_the_time_left():
    labels = np.array([0, 1, 0, 1, 0, 1])
    # "best" errs on the last two images, "cheap" and "costly" each on one other: together they beat it
    onehot = np.eye(2)[labels] * 0.8 + 0.1
    best, cheap, costly = onehot.copy(), onehot.copy(), onehot.copy()
    best[[4, 5]] = best[[4, 5]][:, ::-1]
    cheap[0], costly[1] = cheap[0][::-1], costly[1][::-1]
    probs = {"best": best, "cheap": cheap, "costly": costly}
    costs = {"best": 0.0, "cheap": 5.0, "costly": 500.0}
    members, accuracy = affordable_ensemble(probs, labels, 3, costs, allowance=1000.0)
    assert set(members) == {"best", "cheap", "costly"} and accuracy == 1.0
    members, accuracy = affordable_ensemble(probs, labels, 3, costs, allowance=100.0)
    assert "costly" not in members and sum(costs[t] for t in members) <= 100.0
    members, accuracy = affordable_ensemble({"best": best}, labels, 3, costs, allowance=0.0)
    assert members == {"best": 1} and accuracy == pytest.approx(4 / 6)


def test_a_trial_stopped_mid_search_is_scored_from_its_newest_checkpoint(tmp_path):
    trial = tmp_path / "trial"
    for name in ("checkpoint_000000", "checkpoint_000001", "checkpoint_000002"):
        (trial / name).mkdir(parents=True)
    (trial / "checkpoint_000000" / STATE_FILE).write_text("{}")
    (trial / "checkpoint_000001" / STATE_FILE).write_text("{}")  # 000002: copied in part when the driver stopped
    stale = tune.Checkpoint(str(trial / "checkpoint_000000"))
    result = tune.Result(metrics={"epoch": 2}, checkpoint=stale, error=None, path=str(trial))
    assert newest_checkpoint(result).path.endswith("checkpoint_000001")
    assert newest_checkpoint(tune.Result(metrics={}, checkpoint=None, error=None, path=str(trial))) is None
    assert math.isfinite(COSTS.first_epoch_s("a"))


def test_the_plan_reserves_the_ensemble_the_validation_probabilities_choose(tmp_path):
    labels = np.array([0, 1, 0, 1])
    budget = _budget(tmp_path, 1000.0, 3, labels)
    right, wrong_last = np.eye(2)[labels] * 0.9 + 0.05, np.eye(2)[labels] * 0.9 + 0.05
    wrong_last[3] = wrong_last[3][::-1]
    budget("best", _probe(1, 0.80, 0.5))
    budget("costly", _tuned(1, 0.75, 300.0, 250.0))  # ranked second, but adds nothing to the best
    budget("cheap", _tuned(1, 0.70, 30.0, 20.0))  # ranked third, and fixes what the best gets wrong
    _checkpoints(budget, tmp_path, best=wrong_last, costly=wrong_last, cheap=right)
    assert [t for t, _ in budget.plan()] == ["best", "cheap"]
    assert budget.reserve() == pytest.approx(
        FIXED_S + sum(member_cost(COSTS, budget.ledger.entries[t]) for t in ("best", "cheap"))
    )


def test_identical_probes_count_once_and_leave_room_for_others():
    labels = np.array([0, 1, 0, 1])
    fitted = np.eye(2)[labels] * 0.9 + 0.05
    fitted[3] = fitted[3][::-1]
    other = np.eye(2)[labels] * 0.9 + 0.05
    probs = {f"probe{i}": fitted.copy() for i in range(10)} | {"other": other}
    members, accuracy = ensemble_choice([*(f"probe{i}" for i in range(10)), "other"], probs, labels, 3)
    assert "other" in members and accuracy == 1.0, "the eleventh trial, beyond ten copies, still joins"


def test_a_member_the_time_left_cannot_retrain_leaves_the_plan(tmp_path):
    labels = np.array([0, 1, 0, 1])
    wrong_last, right = np.eye(2)[labels] * 0.9 + 0.05, np.eye(2)[labels] * 0.9 + 0.05
    wrong_last[3] = wrong_last[3][::-1]
    budget = _budget(tmp_path, 2000.0, 3, labels)
    budget("best", _probe(1, 0.80, 0.5))
    assert not budget("tuned", _tuned(1, 0.70, 300.0, 250.0))  # its second epoch, about 300 s, is now under way
    _checkpoints(budget, tmp_path, best=wrong_last, tuned=right)
    tuned = member_cost(COSTS, budget.ledger.entries["tuned"])
    assert [t for t, _ in budget.plan()] == ["best", "tuned"]
    # the epoch under way ends in ~300 s: a plan that still holds the tuned member's retrain must leave room for both
    _spent(budget, 2000.0 - FIXED_S - tuned - 200.0)
    assert [t for t, _ in budget.plan()] == ["best"], "after the epoch under way, its retrain would no longer fit"
    for trial in ("best", "tuned"):
        budget.ledger.end(trial)
    assert budget.in_flight() == 0.0


def test_a_restored_budget_reads_the_ledger_the_resumed_search_opened_and_its_time_spent(tmp_path):
    budget = _budget(tmp_path, seconds=1000.0, members=1)
    budget("f", _tuned(1, 0.9, 30.0, 20.0))
    _spent(budget, 600.0)
    assert not budget("f", _tuned(2, 0.9, 70.0, 36.0)) and budget.ledger.entries["f"].until is not None
    pickled = pickle.dumps(budget)  # what Ray Tune kept of the stopper when the search started (here: later)
    # --resume in a new process: the driver opens the ledger from its file, with the time the runs have spent
    resumed = TrialLedger.open(tmp_path / "search.json", fresh=False)
    assert resumed.spent_s == pytest.approx(600.0, abs=1.0), "the file holds the seconds run when it was saved"
    resumed.start({}, 900.0)  # the plan of the resumed run, made 300 s into it
    restored = pickle.loads(pickled)
    assert restored.ledger is resumed and restored.remaining() == pytest.approx(100.0, abs=1.0)
    f = resumed.entries["f"]
    assert [e["epoch"] for e in f.epochs] == [1, 2] and f.epoch_s() == 40.0
    assert f.until is None and restored.in_flight() == 0.0, "the epoch under way was another process's"
    assert restored("f", _tuned(3, 0.9, 110.0, 36.0)), "100 s left cannot hold the retrain and the next epoch"
