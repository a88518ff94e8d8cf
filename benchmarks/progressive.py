"""Progressive resizing against training every epoch at full size, side by side: the same fine-tuning trials (LP-FT
from the fitted probe, a few freeze depths) with and without it, their seconds and validation accuracy per epoch.
Usage (real photos and weights; about 10 minutes here for the defaults on hymenoptera):

    .venv/bin/python benchmarks/progressive.py ../shared/data/hymenoptera \\
        --weights ../shared/weights/tf_efficientnet_lite0.safetensors --backbone tf_efficientnet_lite0
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time
from pathlib import Path

from safetensors.torch import load_file

from datasets import build_cache, scan_folder
from trainables import TrialConfig, TrialSetup, fit


def run(config: TrialConfig, setup: TrialSetup) -> list[dict]:
    """Each epoch's metrics, with the seconds since the start (``at``)."""
    history: list[dict] = []
    started = time.perf_counter()
    fit(config, setup, ("train",), "val", lambda m, *_: history.append({**m, "at": time.perf_counter() - started}))
    return history


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data")
    p.add_argument("--weights", required=True)
    p.add_argument("--backbone", default="tf_efficientnet_lite0")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--depths", default="2,4")
    p.add_argument("--cpus", type=int, default=os.cpu_count() or 1)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cache = build_cache(scan_folder(Path(args.data)), args.size, Path(tmp, "cache"))
        setup = TrialSetup(cache, args.epochs, cpus=args.cpus, weights={args.backbone: load_file(args.weights)})
        print(f"{args.backbone}, {args.size} px, {cache.sizes}, {args.epochs} epochs, {args.cpus} threads")
        for depth in (int(d) for d in args.depths.split(",")):
            config = TrialConfig(args.backbone, depth, 0.3, 1e-3, 1e-4, 32, 0.1, 0.1)
            for progressive in (True, False):
                history = run(config, dataclasses.replace(setup, progressive=progressive))
                epochs = ", ".join(
                    f"epoch {h['epoch']} at {h['train_size']} px: {h['train_s']:.1f} s, val_acc {h['val_acc']:.3f}"
                    for h in history
                )
                print(
                    f"depth {depth} {'progressive' if progressive else 'full size  '}: {epochs}; "
                    f"whole {history[-1]['at']:.1f} s"
                )


if __name__ == "__main__":
    main()
