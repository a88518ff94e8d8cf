import pickle
import random

import optuna
from ray.tune.experiment import Trial
from ray.tune.schedulers import AsyncHyperBandScheduler

from search import make_searcher, search_space
from search.tuning.asha import make_scheduler
from search.tuning.ledger import TrialLedger
from search.tuning.space import baseline_points, trial_sources
from trainables import TrialConfig, knob_range

BACKBONES = ["resnet10t", "mobilenetv3_small_050"]


def _proposals(seed: int, n: int = 6) -> list[dict]:
    searcher = make_searcher(BACKBONES, seed=seed, trials=12, max_epochs=4)
    return [searcher.suggest(f"t{i}") for i in range(n)]


def test_space_has_the_contract_names():
    assert set(search_space(BACKBONES)) == {
        "backbone",
        "freeze_depth",
        "aug_strength",
        "lr",
        "weight_decay",
        "batch_size",
        "label_smoothing",
        "dropout",
    }


def test_same_seed_proposes_the_same_configurations_and_another_seed_different_ones():
    first, again, other = _proposals(7), _proposals(7), _proposals(8)
    assert first == again
    assert first != other


def test_proposals_are_valid_trial_configs_within_the_contract_ranges():
    configs = _proposals(0, n=24)
    for config in configs:
        cfg = TrialConfig.from_dict(config)
        assert cfg.backbone in BACKBONES
        assert 1e-4 <= cfg.lr <= 1e-2 and 0 <= cfg.label_smoothing <= 0.2  # TrialConfig takes any lr > 0, any < 1
        assert cfg.batch_size in knob_range("batch_size").choices
    # TPE's start explores: several backbones and depths, learning rates spread over the log range
    assert len({c["backbone"] for c in configs}) > 1 and len({c["freeze_depth"] for c in configs}) >= 3
    assert max(c["lr"] for c in configs) / min(c["lr"] for c in configs) > 10
    # augmentation never reaches cached features or the cached activations at the last stage's boundary
    unaugmented = [c for c in configs if c["freeze_depth"] >= 4]
    assert {c["freeze_depth"] for c in unaugmented} == {4, 5} and all(c["aug_strength"] == 0 for c in unaugmented)
    assert all(c["aug_strength"] > 0 for c in configs if c["freeze_depth"] < 4)


def test_recipes_run_first_one_per_backbone_and_take_at_most_half(tmp_path):
    points = baseline_points(BACKBONES, trials=12, pretrained=["mobilenetv3_small_050"])
    assert [(p["backbone"], p["freeze_depth"]) for p in points] == [("resnet10t", 0), ("mobilenetv3_small_050", 5)]
    assert len(baseline_points(BACKBONES, trials=3, pretrained=BACKBONES)) == 1
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    searcher = make_searcher(
        BACKBONES,
        seed=0,
        trials=12,
        max_epochs=4,
        storage=optuna.storages.RDBStorage(storage),
        points=[("recipe", p) for p in points],
    )
    proposed = [searcher.suggest(f"t{i}") for i in range(3)]
    assert proposed[:2] == [{**p, "aug_strength": p.get("aug_strength", 0.0)} for p in points]
    assert proposed[2] not in proposed[:2]
    assert trial_sources(storage) == {"t0": "recipe", "t1": "recipe", "t2": "sampler"}


def test_a_trial_stopped_before_its_last_epoch_is_pruned_with_its_epochs_as_intermediate_values(tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    searcher = make_searcher(BACKBONES, seed=0, trials=4, max_epochs=4, storage=optuna.storages.RDBStorage(storage))
    for trial_id, accuracies in (("stopped", [0.5]), ("full", [0.4, 0.5, 0.6, 0.7]), ("failed", [0.9])):
        searcher.suggest(trial_id)
        for epoch, acc in enumerate(accuracies, start=1):
            searcher.on_trial_result(trial_id, {"val_acc": acc, "epoch": epoch})
        last = {"val_acc": accuracies[-1], "epoch": len(accuracies)}
        searcher.on_trial_complete(trial_id, last, error=trial_id == "failed")
    trials = {t.user_attrs["ray_trial_id"]: t for t in optuna.load_study(study_name="search", storage=storage).trials}
    assert trials["stopped"].state == optuna.trial.TrialState.PRUNED
    assert trials["stopped"].intermediate_values == {1: 0.5}
    assert trials["full"].state == optuna.trial.TrialState.COMPLETE and trials["full"].value == 0.7
    assert trials["full"].intermediate_values == {1: 0.4, 2: 0.5, 3: 0.6, 4: 0.7}
    assert trials["failed"].state == optuna.trial.TrialState.FAIL


def test_a_trial_told_after_the_last_snapshot_is_left_as_told_when_its_last_epoch_runs_again(tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    searcher = make_searcher(BACKBONES, seed=0, trials=4, max_epochs=2, storage=optuna.storages.RDBStorage(storage))
    searcher.suggest("t")
    searcher.on_trial_result("t", {"val_acc": 0.5, "epoch": 1})
    searcher.save(str(tmp_path / "snapshot.pkl"))  # the experiment snapshot; then the driver goes on
    searcher.on_trial_complete("t", {"val_acc": 0.75, "epoch": 2})  # the study has it at once; then kill -9

    restored = make_searcher(BACKBONES, seed=0, trials=4, max_epochs=2, storage=optuna.storages.RDBStorage(storage))
    restored.restore(str(tmp_path / "snapshot.pkl"))
    restored.on_trial_result("t", {"val_acc": 0.7, "epoch": 2})  # Ray Tune runs epoch 2 again from epoch 1's state
    restored.on_trial_complete("t", {"val_acc": 0.7, "epoch": 2})
    (trial,) = optuna.load_study(study_name="search", storage=storage).trials
    assert trial.state == optuna.trial.TrialState.COMPLETE and trial.value == 0.75
    assert trial.intermediate_values == {1: 0.5, 2: 0.75}


def test_asha_stops_a_weak_fine_tuning_trial_but_never_a_probe_on_cached_features(tmp_path):
    scheduler = make_scheduler(4, TrialLedger.open(tmp_path / "search.json", fresh=True))
    scheduler.set_search_properties("val_acc", "max")
    trials = {name: Trial("__fake", trial_id=name, stub=True, config={}) for name in ("good", "weak", "probe")}
    for trial in trials.values():
        scheduler.on_trial_add(None, trial)
    decide = scheduler.on_trial_result
    assert decide(None, trials["good"], {"epoch": 1, "val_acc": 0.9, "wall_s": 100.0}) == scheduler.CONTINUE
    assert decide(None, trials["weak"], {"epoch": 1, "val_acc": 0.8, "wall_s": 120.0}) == scheduler.STOP
    # below both at the first rung, but a probe's epochs take milliseconds: stopping it saves nothing
    probe = {"epoch": 1, "val_acc": 0.5, "wall_s": 0.3, "on_features": True}
    assert decide(None, trials["probe"], probe) == scheduler.CONTINUE
    assert scheduler.rung(1.0)["probe"] == 0.5, "its value still sets the rung's cutoff"
    assert scheduler.ledger.entries["weak"].stopped_by == "asha" and not scheduler.ledger.entries["probe"].done


def test_asha_judges_the_first_trial_against_the_screenings_fitted_probe(tmp_path):
    """Alone at a rung, a trial always goes on; with the fitted probe known there, one below it stops, at every rung,
    and a --resume keeps the known result."""
    plain = make_scheduler(4, TrialLedger.open(tmp_path / "plain.json", fresh=True))
    known = make_scheduler(4, TrialLedger.open(tmp_path / "search.json", fresh=True), {"fitted probe b": 0.9})
    first = Trial("__fake", trial_id="first", stub=True, config={})
    result = {"epoch": 1, "val_acc": 0.85, "wall_s": 10.0}
    for scheduler in (plain, known):
        scheduler.set_search_properties("val_acc", "max")
        scheduler.on_trial_add(None, first)
    assert plain.on_trial_result(None, first, result) == plain.CONTINUE
    assert known.on_trial_result(None, first, result) == known.STOP
    second = Trial("__fake", trial_id="second", stub=True, config={})
    known.on_trial_add(None, second)
    assert known.on_trial_result(None, second, {"epoch": 1, "val_acc": 0.95, "wall_s": 10.0}) == known.CONTINUE
    assert known.on_trial_result(None, second, {"epoch": 2, "val_acc": 0.88, "wall_s": 20.0}) == known.STOP
    restored = pickle.loads(pickle.dumps(known))
    assert all(restored.rung(m)["fitted probe b"] == 0.9 for m in restored.milestones)
    # --resume: the rungs are the ledger's, read back from its file, with each trial judged once per rung
    TrialLedger.open(tmp_path / "search.json", fresh=False)
    restored = pickle.loads(pickle.dumps(known))
    assert restored.rung(2.0) == {"fitted probe b": 0.9, "second": 0.88}
    assert restored.on_trial_result(None, second, {"epoch": 2, "val_acc": 0.88, "wall_s": 20.0}) == known.CONTINUE


def test_our_asha_stops_exactly_the_trials_rays_asha_stops(tmp_path):
    """Ray's scheduler keeps its rungs private, so the search has its own; it must decide as Ray's does."""
    ours = make_scheduler(8, TrialLedger.open(tmp_path / "search.json", fresh=True))
    theirs = AsyncHyperBandScheduler(
        time_attr="epoch", metric="val_acc", mode="max", max_t=8, grace_period=2, reduction_factor=2
    )
    ours.set_search_properties("val_acc", "max")
    rng = random.Random(0)
    epochs = {f"t{i}": 0 for i in range(16)}
    trials = {name: Trial("__fake", trial_id=name, stub=True, config={}) for name in epochs}
    for trial in trials.values():
        ours.on_trial_add(None, trial)
        theirs.on_trial_add(None, trial)
    decisions = []
    while epochs:
        name = rng.choice(sorted(epochs))
        epochs[name] += 1
        result = {"epoch": epochs[name], "val_acc": rng.random(), "wall_s": 10.0 * epochs[name]}  # equal costs
        decision = ours.on_trial_result(None, trials[name], result)
        assert decision == theirs.on_trial_result(None, trials[name], result), (name, result)
        decisions.append(decision)
        if decision == ours.STOP:
            del epochs[name]
    assert decisions.count(ours.STOP) == 16
    assert sum(len(ours.rung(m)) for m in ours.milestones) > 16, "trials were compared at more than one rung"


def test_the_space_the_tables_and_the_recipes_come_from_trialconfig_alone():
    from results import CONFIG_COLUMNS
    from trainables import KNOBS, RECIPE

    space = search_space(BACKBONES)
    assert list(space) == list(KNOBS) == CONFIG_COLUMNS
    for name, value in RECIPE.items():
        r = knob_range(name)
        assert value in r.choices if r.choices else r.low <= value <= r.high, (
            f"the recipe's {name} is outside its range"
        )
    # a search started before the declaration moved here still resumes: its signature holds these
    assert repr(space["lr"]) == "FloatDistribution(high=0.01, log=True, low=0.0001, step=None)"
    assert repr(space["freeze_depth"]) == "IntDistribution(high=5, log=False, low=0, step=1)"
    assert repr(space["batch_size"]) == "CategoricalDistribution(choices=(16, 32, 64))"
