"""Search that earns its compute: backbones ranked before any trial, LP-FT trials, the study's PRUNED trials, and a
search held to a time budget. Real Ray, real timm models, weights saved by the test as safetensors."""

import json
import time

import optuna
import pandas as pd
import pytest
import timm
import torch
from safetensors.torch import save_file

from datasets import UsageError
from search import main
from search.tuning.budget import parse_duration
from tests.search_tests.tiny import tiny_search


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """Two backbones' "pretrained" weights as a user's --weights folder holds them."""
    folder = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    for name in ("resnet10t", "mobilenetv3_small_050"):
        state = timm.create_model(name).state_dict()
        save_file({k: v.contiguous() for k, v in state.items()}, str(folder / f"{name}.safetensors"))
    return folder


def _search(tiny_eggs, out, weights, *extra: str, trials: int, max_epochs: int) -> int:
    """A tiny search of both backbones from the weights in ``weights``, --pretrained left to its default."""
    both = "resnet10t,mobilenetv3_small_050"
    options = {"trials": trials, "max_epochs": max_epochs, "backbones": both, "pretrained": None}
    return main(tiny_search(tiny_eggs, out, "--weights", str(weights), *extra, **options))


def test_prescreen_keeps_the_best_scored_backbone_and_the_tables_say_why(ray_cluster, tiny_eggs, tmp_path, weights):
    code = _search(tiny_eggs, tmp_path, weights, "--prescreen", "1", "--no-retrain", trials=4, max_epochs=2)
    assert code == 0
    task = tmp_path / tiny_eggs.name
    best = json.loads((task / "best.json").read_text())
    scores = best["backbone_scores"]
    assert set(scores) == {"resnet10t", "mobilenetv3_small_050"}
    kept = max(scores, key=lambda b: (scores[b]["probe_val_acc"], scores[b]["logme"]))
    trials = pd.read_parquet(task / "trials.parquet")
    assert set(trials["backbone"]) == {kept} and len(trials) == 4
    backbones = pd.read_parquet(task / "backbones.parquet").set_index("backbone")
    for name, score in scores.items():
        assert backbones.loc[name, "logme"] == pytest.approx(score["logme"])
        assert 0 <= backbones.loc[name, "probe_val_acc"] <= 1
    assert backbones.loc[next(b for b in scores if b != kept), "trials"] == 0
    # the kept backbone's recipe (its probe) first, then TPE; its fine-tuning trials start from the fitted probe
    assert (trials["source"] == "recipe").sum() == 1 and (trials["source"] == "sampler").sum() == 3
    tuned = trials[trials["freeze_depth"] < 5]
    assert len(tuned) and trials["warm_head"].all(), "fine-tuning and probes alike start from the fitted probe"
    probes = trials[trials["freeze_depth"] == 5]
    assert (probes["aug_strength"] == 0).all()
    assert (probes["val_acc"] >= scores[kept]["probe_val_acc"]).all(), "a probe never scores below the fitted one"
    # ASHA's stopped trials are PRUNED in the study, the others COMPLETE, each with its epochs
    study = optuna.load_study(study_name="search", storage=f"sqlite:///{task / 'study.db'}")
    states = {t.user_attrs["ray_trial_id"]: t for t in study.trials}
    for row in trials.itertuples():
        trial = states[row.trial_id]
        expected = optuna.trial.TrialState.COMPLETE if row.epochs_run == 2 else optuna.trial.TrialState.PRUNED
        assert trial.state == expected and sorted(trial.intermediate_values) == list(range(1, row.epochs_run + 1))
        assert trial.user_attrs["source"] == row.source


def test_a_time_budget_ends_a_long_search_with_a_retrained_model(ray_cluster, tiny_eggs, tmp_path, weights):
    started = time.monotonic()
    code = _search(tiny_eggs, tmp_path, weights, "--time-budget", "25s", trials=200, max_epochs=20)
    wall = time.monotonic() - started
    assert code == 0
    task = tmp_path / tiny_eggs.name
    best = json.loads((task / "best.json").read_text())
    trials = pd.read_parquet(task / "trials.parquet")
    assert len(trials) < 200 and best["limit"].startswith("time budget 25 s: ") and "fit" in best["limit"]
    assert "test_acc" in best and (task / "model").is_dir()
    # the driver chose the final model itself, said why, and the plan sits beside what each stage took
    assert best["variants_asked"]["auto"] and best["model_variant"] in ("single", "ensemble") and best["variant_reason"]
    text = (task / "best.md").read_text()
    assert f"| search ended by | {best['limit']} |" in text and "Chosen: " in text
    assert "95% CI" in text and f"{best['val_n']} photos" in text and f"{best['test_n']} photos" in text
    plan = json.loads((task / "budget.json").read_text())
    assert plan["budget_s"] == 25 and plan["ended_by"] in best["limit"]
    assert {"prepare", "screening", "search", "final", "tables", "whole_s"} <= set(plan["actual"])
    assert plan["plan"]["final_s"] >= 10 and all(m["seconds"] > 0 for m in plan["plan"]["members"])
    assert (trials["val_acc_low"] <= trials["val_acc"]).all() and (trials["val_acc"] <= trials["val_acc_high"]).all()
    assert wall < 60, f"a 25 s budget took {wall:.0f} s"  # loose: the machine is shared; the budget held at 25 s


@pytest.mark.parametrize(("text", "seconds"), [("90", 90), ("90s", 90), ("20m", 1200), ("1h30m", 5400)])
def test_durations_read_as_people_write_them(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "0", "20x"])
def test_a_duration_that_is_not_one_is_refused_with_an_example(text):
    with pytest.raises(UsageError, match="--time-budget"):
        parse_duration(text)
