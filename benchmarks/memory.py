"""Memory of a search as trials run side by side: the decoded image cache is memory-mapped, so K trials on a node
should cost one dataset plus K models, not K datasets.

    .venv/bin/python benchmarks/memory.py [--images 1000] [--image-size 128] [--epochs 2]

Runs the same two trials through Ray Tune at concurrency 1 and then 2 and samples the proportional set size (PSS:
shared pages split between the processes that map them) of this process and everything it started. The last lines
print both peaks, the increment per extra trial and the decoded dataset's size.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import threading
import time
from pathlib import Path

import ray
from common import egg_setup
from ray import tune

from trainables import TrialSetup, train_trial

CONFIG = {
    "backbone": "resnet10t",
    "freeze_depth": 2,
    "aug_strength": 0.3,
    "weight_decay": 1e-4,
    "batch_size": 32,
    "label_smoothing": 0.1,
    "dropout": 0.0,
}


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def _pss_mb(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:
            continue  # ended meanwhile
    return total / 1024


def peak_memory(setup: TrialSetup, concurrency: int, storage: Path) -> float:
    """Peak PSS (MB) of this process tree while two equal trials run ``concurrency`` at a time."""
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    peak, done = [0.0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _pss_mb(_descendants(os.getpid())))
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        grid = tune.Tuner(
            tune.with_resources(tune.with_parameters(train_trial, setup=setup), {"cpu": 1}),
            param_space={**CONFIG, "lr": tune.grid_search([1e-3, 2e-3])},
            tune_config=tune.TuneConfig(max_concurrent_trials=concurrency),
            run_config=tune.RunConfig(storage_path=str(storage), name=f"c{concurrency}", verbose=0),
        ).fit()
        assert not grid.errors, grid.errors
    finally:
        done.set()
        sampler.join()
        ray.shutdown()
    return peak[0]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=1000, help="training images per class")
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--epochs", type=int, default=2)
    args = p.parse_args()
    work, setup = egg_setup("memory", args.images, args.image_size, args.epochs, valid=50)
    dataset_mb = sum(f.stat().st_size for f in setup.data.path.glob("*.npy")) / 2**20
    one = peak_memory(setup, 1, work / "tune")
    two = peak_memory(setup, 2, work / "tune")
    shutil.rmtree(work, ignore_errors=True)
    print(f"{2 * args.images} training images at {args.image_size} px; decoded dataset {dataset_mb:.0f} MB")
    print(f"peak PSS, one trial at a time: {one:.0f} MB")
    print(f"peak PSS, two trials at once: {two:.0f} MB")
    print(f"increment for the second trial: {two - one:.0f} MB (a private copy of the data would add {dataset_mb:.0f})")


if __name__ == "__main__":
    main()
