"""A worker runs trial after trial (Ray Tune reuses it): a trial stopped early must not leave its model behind."""

from __future__ import annotations

import gc
import json
import os
import sys
import time

from ray import cloudpickle, tune
from torch import nn

from datasets import build_cache, scan_folder
from trainables import TrialSetup, train_trial


def test_a_trial_stopped_early_leaves_no_model_in_its_worker(ray_cluster, tiny_eggs, tmp_path):
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import the tests
    marks = tmp_path / "marks"
    marks.mkdir()

    def counting_trial(config: dict, setup: TrialSetup) -> None:
        # no gc.collect() here: what the last trial left must already be gone
        models = sum(isinstance(o, nn.Module) for o in gc.get_objects())
        mark = {"pid": os.getpid(), "lr": config["lr"], "models": models, "t": time.time()}
        (marks / f"{time.time_ns()}.json").write_text(json.dumps(mark))
        train_trial(config, setup)

    setup = TrialSetup(build_cache(scan_folder(tiny_eggs), 24, tmp_path / "cache"), max_epochs=3)
    config = {"backbone": "resnet10t", "freeze_depth": 0, "aug_strength": 0.2, "weight_decay": 1e-4}
    config |= {"batch_size": 16, "label_smoothing": 0.0, "dropout": 0.0, "lr": tune.grid_search([1e-3, 2e-3, 3e-3])}
    tuner = tune.Tuner(
        tune.with_resources(tune.with_parameters(counting_trial, setup=setup), {"cpu": 1}),
        param_space=config,
        tune_config=tune.TuneConfig(max_concurrent_trials=1, reuse_actors=True),
        run_config=tune.RunConfig(storage_path=str(tmp_path / "tune"), stop={"epoch": 1}, verbose=0),
    )
    grid = tuner.fit()

    assert not grid.errors
    assert [r.metrics["epoch"] for r in grid] == [1, 1, 1], "each trial was stopped after its first of 3 epochs"
    runs = sorted((json.loads(p.read_text()) for p in marks.iterdir()), key=lambda m: m["t"])
    assert len(runs) == 3 and len({m["pid"] for m in runs}) == 1, "the three trials ran in one reused worker"
    assert [m["models"] for m in runs[1:]] == [0, 0], "a stopped trial's model was still alive in the next trial"
