"""A linear-probe trial (freeze depth 5) with augmentation 0.5 once its backbone's features exist, against the same
trial recomputing the frozen backbone's (augmented) forward pass every epoch, side by side. Usage:

    .venv/bin/python benchmarks/feature_cache.py [--backbone resnet18] [--size 128] [--epochs 4]
    .venv/bin/python benchmarks/feature_cache.py --data ../shared/data/sports-a50 \\
        --weights ../shared/weights/tf_efficientnet_lite0.safetensors --backbone tf_efficientnet_lite0 --size 224

With ``--data`` and ``--weights`` it runs on real photos with real weights and also prints both trials' validation
accuracy: whether augmenting a frozen backbone's input is worth its cost (docs/design.md, "Probes and fitted heads").
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time
from pathlib import Path

from safetensors.torch import load_file

from datasets import build_cache, make_demo_dataset, scan_folder
from trainables import TrialConfig, TrialSetup, fit


def trial(config: TrialConfig, setup: TrialSetup) -> tuple[float, float]:
    """Wall seconds of the whole trial and its last validation accuracy."""
    history: list[dict] = []
    start = time.perf_counter()
    fit(config, setup, ("train",), "val", lambda m, *_: history.append(m))
    return time.perf_counter() - start, history[-1]["val_acc"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbone", default="resnet18")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--cpus", type=int, default=os.cpu_count() or 1)
    p.add_argument("--data", help="an image folder (default: the generated egg set)")
    p.add_argument("--weights", help="the backbone's pretrained weights (safetensors)")
    args = p.parse_args()
    config = TrialConfig(
        args.backbone, freeze_depth=5, aug_strength=0.5, lr=3e-3, weight_decay=1e-4, batch_size=32, label_smoothing=0.1
    )
    weights = {args.backbone: load_file(args.weights)} if args.weights else {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.data) if args.data else make_demo_dataset("egg", Path(tmp) / "demo")
        cache = build_cache(scan_folder(root), args.size, Path(tmp) / "cache")
        setup = TrialSetup(cache, max_epochs=args.epochs, seed=0, cpus=args.cpus, weights=weights)
        first, _ = trial(config, setup)  # computes the features once, as the search's screening does
        cached, cached_acc = trial(config, setup)
        plain, plain_acc = trial(config, dataclasses.replace(setup, feature_cache=False))
    print(f"{args.backbone} at {args.size} px, {cache.sizes['train']} training images, {args.cpus} CPU threads")
    print(f"computing the features once (train and val): {first - cached:.2f} s")
    print(f"probe, aug 0.5, {args.epochs} epochs, features cached: {cached:.2f} s, val_acc {cached_acc:.3f}")
    print(f"the same trial recomputing the augmented forward pass:  {plain:.2f} s, val_acc {plain_acc:.3f}")
    print(f"ratio: {plain / cached:.0f}x cheaper with the features cached (target 10x)")


if __name__ == "__main__":
    main()
