"""What Ray Tune costs per trial: the same N trials (one fixed configuration list, equal work) run through the
search's trainable under Ray Tune, one at a time, and as a plain loop of ``fit`` in this process.

    .venv/bin/python benchmarks/overhead.py [--trials 4] [--epochs 3] [--images 160] [--image-size 96]

The defaults make trials of about 20 s on one core of the 2-core development machine. The last lines print Ray's
start-up time, both wall times and their ratio (target: 1.15 or less).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import shutil
import time

import ray
import torch
from common import egg_setup
from ray import tune

from trainables import TrialConfig, fit, train_trial

BASE = TrialConfig(
    "resnet10t", freeze_depth=0, aug_strength=0.3, lr=1e-3, weight_decay=1e-4, batch_size=32, label_smoothing=0.1
)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=4)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--images", type=int, default=160, help="training images per class")
    p.add_argument("--image-size", type=int, default=96)
    args = p.parse_args()
    work, setup = egg_setup("overhead", args.images, args.image_size, args.epochs, valid=32)
    lrs = [1e-3 * (1 + i) for i in range(args.trials)]  # equal work, different configurations

    torch.set_num_threads(1)
    start = time.perf_counter()
    for lr in lrs:
        fit(dataclasses.replace(BASE, lr=lr), setup, ("train",), "val", lambda *_: None)
    plain = time.perf_counter() - start

    start = time.perf_counter()
    ray.init(num_cpus=1, include_dashboard=False, logging_level=logging.WARNING)
    ray_start = time.perf_counter() - start
    start = time.perf_counter()
    tuner = tune.Tuner(
        tune.with_resources(tune.with_parameters(train_trial, setup=setup), {"cpu": 1}),
        param_space={**dataclasses.asdict(BASE), "lr": tune.grid_search(lrs)},
        tune_config=tune.TuneConfig(max_concurrent_trials=1, reuse_actors=True),  # as the search does
        run_config=tune.RunConfig(storage_path=str(work / "tune"), verbose=0),
    )
    grid = tuner.fit()
    searched = time.perf_counter() - start
    ray.shutdown()
    shutil.rmtree(work, ignore_errors=True)
    assert not grid.errors, grid.errors
    print(f"{args.trials} trials of {args.epochs} epochs, {2 * args.images} images at {args.image_size} px, 1 core")
    print(f"plain loop: {plain:.1f} s ({plain / args.trials:.1f} s per trial)")
    print(f"Ray start-up: {ray_start:.1f} s (once per search)")
    print(f"through Ray Tune: {searched:.1f} s ({searched / args.trials:.1f} s per trial)")
    print(f"ratio: {searched / plain:.2f} (target 1.15 or less)")


if __name__ == "__main__":
    main()
