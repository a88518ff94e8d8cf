"""How much compute the search needs to find a good configuration, against random and grid search, side by side.

    .venv/bin/python benchmarks/search_efficiency.py [--seeds 3] [--trials 12] [--epochs 6] [--images 200]
        [--image-size 32] [--backbones resnet10t,mobilenetv3_small_050]

On the generated egg task (trained from scratch, so configurations differ a lot), with each seed, four methods
search the contract's space over the same backbones, all through Ray Tune with the project's trainable:

- ``tpe+asha``: this project's search (baseline recipes, then TPE, with ASHA stopping the weak);
- ``random+asha``: Optuna's random sampler over the same space, the same ASHA;
- ``random``: the same random sampler, every trial runs all its epochs;
- ``grid``: backbone x freeze depth {0, 5} x learning rate {1e-4, 1e-3, 1e-2} x augmentation {0, 0.5}, the other
  knobs at the recipe's values, in an order shuffled by the seed.

For each it prints trial-epochs spent, wall time, the best validation accuracy, and the trial-epochs spent until a
trial first came within 1 point of the best accuracy any method reached with that seed. The last line is the ratio of
ours to the grid's (target: a third or less). The defaults take about 20 minutes on the 2-core development machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import logging
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import optuna
import ray
from common import egg_setup
from ray import tune
from ray.tune.schedulers import FIFOScheduler
from ray.tune.search import BasicVariantGenerator
from ray.tune.search.optuna import OptunaSearch

from search.tuning.asha import make_scheduler
from search.tuning.ledger import TrialLedger
from search.tuning.retention import CheckpointRetention
from search.tuning.space import METRIC, MODE, baseline_points, make_searcher, search_space
from trainables import MAX_FREEZE_DEPTH, RECIPE, TrialSetup, train_trial

METHODS = ("tpe+asha", "random+asha", "random", "grid")


def grid_points(backbones: list[str], seed: int) -> list[dict]:
    """The grid a person would write over the same space, in a seeded random order."""
    axes = itertools.product(backbones, (0, MAX_FREEZE_DEPTH), (1e-4, 1e-3, 1e-2), (0.0, 0.5))
    points = [{"backbone": b, "freeze_depth": f, "lr": lr, "aug_strength": a, **RECIPE} for b, f, lr, a in axes]
    order = np.random.default_rng(seed).permutation(len(points))
    return [points[i] for i in order]


class Recorder(tune.Callback):
    """Every reported epoch in the order the driver received it: (trial, validation accuracy)."""

    def __init__(self) -> None:
        self.epochs: list[tuple[str, float]] = []

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        self.epochs.append((trial.trial_id, float(result[METRIC])))


def run(method: str, setup: TrialSetup, backbones: list[str], trials: int, work: str) -> tuple[list[float], float]:
    """One search; returns each reported epoch's validation accuracy in arrival order, and the wall time."""
    scheduler = make_scheduler(setup.max_epochs, TrialLedger.open(Path(work) / f"{method}-search.json", fresh=True))
    space: dict = {}
    if method == "tpe+asha":
        points = [("recipe", p) for p in baseline_points(backbones, trials, pretrained=())]
        searcher = make_searcher(backbones, setup.seed, trials, setup.max_epochs, points=points)
    elif method == "grid":
        points = grid_points(backbones, setup.seed)
        searcher, scheduler, trials = BasicVariantGenerator(points_to_evaluate=points), FIFOScheduler(), len(points)
        space = dict(points[0])  # the generator takes each trial's values from its point, over a space of the same keys
    else:
        sampler = optuna.samplers.RandomSampler(seed=setup.seed)
        searcher = OptunaSearch(search_space(backbones), metric=METRIC, mode=MODE, sampler=sampler)
        scheduler = scheduler if method == "random+asha" else FIFOScheduler()
    recorder = Recorder()
    tuner = tune.Tuner(
        tune.with_resources(tune.with_parameters(train_trial, setup=setup), {"cpu": 1}),
        param_space=space,
        tune_config=tune.TuneConfig(
            metric=METRIC,
            mode=MODE,
            search_alg=searcher,
            scheduler=scheduler,
            num_samples=trials,
            max_concurrent_trials=2,
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=method,
            storage_path=work,
            callbacks=[recorder, CheckpointRetention()],  # as the search does: 12 runs fill no disk
            verbose=0,
        ),
    )
    start = time.perf_counter()
    grid = tuner.fit()
    wall = time.perf_counter() - start
    if grid.errors:
        raise RuntimeError(f"{method}: {len(grid.errors)} trials failed, e.g. {grid.errors[0]}")
    return [acc for _, acc in recorder.epochs], wall


def epochs_to(accs: list[float], target: float) -> int | None:
    """Trial-epochs spent until one reached ``target``; None if none did."""
    return next((i + 1 for i, acc in enumerate(accs) if acc >= target - 1e-9), None)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--trials", type=int, default=12, help="trials of the TPE and random searches")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--images", type=int, default=200, help="training images per class")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--backbones", default="resnet10t,mobilenetv3_small_050")
    args = p.parse_args()
    backbones = args.backbones.split(",")
    work, base = egg_setup("efficiency", args.images, args.image_size, args.epochs, valid=50)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")  # one per epoch is meant
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    rows: dict[str, list[dict]] = {m: [] for m in METHODS}
    try:
        for seed in range(args.seeds):
            setup = dataclasses.replace(base, seed=seed)
            runs = {}
            for m in METHODS:
                folder = tempfile.mkdtemp(dir=work)
                runs[m] = run(m, setup, backbones, args.trials, folder)
                shutil.rmtree(folder, ignore_errors=True)
            best = max(max(accs) for accs, _ in runs.values())
            for m, (accs, wall) in runs.items():
                to = epochs_to(accs, best - 0.01)
                rows[m].append({"spent": len(accs), "wall": wall, "best": max(accs), "to": to})
                print(f"seed {seed} {m:12s} {rows[m][-1]}", flush=True)
    finally:
        ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)

    summarize(
        rows,
        f"{args.seeds} seeds, egg at {args.image_size} px, {2 * args.images} training images, {args.epochs} epochs",
    )


def summarize(rows: dict[str, list[dict]], title: str) -> None:
    """The table and the ratio; a search that never came within 1 point counts all it spent (a lower bound, ">")."""

    def to(m: str) -> list[int]:
        return [r["to"] if r["to"] is not None else r["spent"] for r in rows[m]]

    def shown(r: dict) -> str:
        return str(r["to"]) if r["to"] is not None else f">{r['spent']}"

    print(f"\n{title}")
    print(f"{'method':12s} {'trial-epochs':>12s} {'wall s':>7s} {'best acc':>8s}  trial-epochs to within 1 point")
    for m in METHODS:
        r = rows[m]
        print(
            f"{m:12s} {statistics.mean(x['spent'] for x in r):12.1f} {statistics.mean(x['wall'] for x in r):7.0f} "
            f"{statistics.mean(x['best'] for x in r):8.3f}  {', '.join(shown(x) for x in r)} "
            f"(median {statistics.median(to(m)):g})"
        )
    missed = any(r["to"] is None for r in rows["grid"])
    ratio = statistics.median(to("tpe+asha")) / statistics.median(to("grid"))
    bound = " or less: the grid missed the target with some seeds" if missed else ""
    print(f"ratio tpe+asha / grid, median trial-epochs to within 1 point: {ratio:.2f}{bound} (target 0.33 or less)")


if __name__ == "__main__":
    main()
