"""Per-epoch time of a linear-probe trial (freeze depth 5, no augmentation) with the feature cache against the same
trial recomputing the frozen backbone's forward pass every epoch. Usage:

    .venv/bin/python benchmarks/feature_cache.py [--backbone resnet18] [--size 128] [--epochs 4]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from datasets import build_cache, make_demo_dataset, scan_folder
from trainables import TrialConfig, TrialSetup, fit


def epoch_times(config: TrialConfig, setup: TrialSetup) -> list[float]:
    """Wall seconds of each epoch as the trial sees them (feature extraction falls in the first)."""
    stamps = [time.perf_counter()]
    fit(config, setup, ("train",), "val", lambda *_: stamps.append(time.perf_counter()))
    return list(np.diff(stamps))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbone", default="resnet18")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--cpus", type=int, default=os.cpu_count() or 1)
    args = p.parse_args()
    config = TrialConfig(
        args.backbone, freeze_depth=5, aug_strength=0.0, lr=3e-3, weight_decay=1e-4, batch_size=32, label_smoothing=0.1
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = make_demo_dataset("egg", Path(tmp) / "demo")
        cache = build_cache(scan_folder(root), args.size, Path(tmp) / "cache")
        setup = TrialSetup(cache, max_epochs=args.epochs, seed=0, cpus=args.cpus)
        cached = epoch_times(config, setup)
        plain = epoch_times(config, dataclasses.replace(setup, feature_cache=False))
    print(f"{args.backbone} at {args.size} px, {cache.sizes['train']} training images, {args.cpus} CPU threads")
    for epoch, (a, b) in enumerate(zip(cached, plain, strict=True), start=1):
        print(f"epoch {epoch}: feature cache {a:7.3f} s | recomputed forward {b:7.3f} s")
    later = slice(1, None)
    print(f"first epoch with the cache (extracts the features): {cached[0]:.2f} s")
    print(
        f"whole trial of {args.epochs} epochs: cache {sum(cached):.2f} s, recomputed {sum(plain):.2f} s, "
        f"ratio {sum(plain) / sum(cached):.1f}x"
    )
    print(f"per-epoch ratio after the first epoch: {np.mean(plain[later]) / np.mean(cached[later]):.0f}x (target 10x)")


if __name__ == "__main__":
    main()
