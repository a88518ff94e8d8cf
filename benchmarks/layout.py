"""Channels-last against the default layout on this machine's CPU, side by side: a training step (whole model, and
frozen to depth 3) and an evaluation pass of a 32-image batch for each backbone, the faster of a few repetitions of
each, alternated. ``trainables.accel`` takes channels-last on a CPU because of what this prints. Usage:

    .venv/bin/python benchmarks/layout.py [--threads 1] [--size 224] [--backbones tf_efficientnet_lite0,resnet18]
"""

from __future__ import annotations

import argparse
import time

import timm
import torch
import torch.nn.functional as F

from trainables.model import freeze

BACKBONES = "tf_efficientnet_lite0,tf_efficientnet_lite2,resnet18,resnet50,mobilenetv3_large_100,efficientnet_b0"


def step_s(name: str, channels_last: bool, depth: int | None, size: int, repeats: int = 3) -> float:
    """Seconds of one training step at ``depth`` (None: an evaluation pass), the fastest of ``repeats``."""
    model = timm.create_model(name, num_classes=2)
    freeze(model, depth or 0)
    model.train(depth is not None)
    x, y = torch.rand(32, 3, size, size), torch.randint(0, 2, (32,))
    if channels_last:
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], 1e-3)
    best = float("inf")
    for _ in range(repeats + 1):  # the first warms oneDNN's kernels for this layout
        started = time.perf_counter()
        if depth is None:
            with torch.no_grad():
                model(x)
        else:
            optimizer.zero_grad()
            F.cross_entropy(model(x), y).backward()
            optimizer.step()
        best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--backbones", default=BACKBONES)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{args.threads} thread(s), {args.size} px, batch 32: seconds default -> channels-last (ratio)")
    for name in args.backbones.split(","):
        cells = []
        for label, depth in (("train, whole", 0), ("train, depth 3", 3), ("eval", None)):
            plain, last = (step_s(name, cl, depth, args.size) for cl in (False, True))
            cells.append(f"{label} {plain:.2f} -> {last:.2f} ({plain / last:.2f}x)")
        print(f"{name:24s} " + " | ".join(cells), flush=True)


if __name__ == "__main__":
    main()
