"""Measure the GPU memory each backbone's trial needs, for the table in ``search/cluster/packing.py``; no GPU needed.

    .venv/bin/python benchmarks/memory_table.py [--backbones resnet18,resnet50,...]

A trial's training steps (bf16 autocast, AdamW, every layer trained) run on fake tensors, which have sizes but no
data, under PyTorch's memory tracker; the peak at batch 16 and 32 at 224 px gives a fixed part (weights, gradients,
optimiser state) and a part per image. The CUDA context and cuDNN's workspaces are not tensors and are not counted:
``search.cluster.packing`` adds a constant for them. ``benchmarks/gpu.py`` prints the peak a real GPU allocates beside
this estimate. The last lines are the table, as ``search/cluster/packing.py`` holds it.
"""

from __future__ import annotations

import argparse

import timm
import torch
import torch.nn.functional as F
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.distributed._tools.mem_tracker import MemTracker

from datasets import DEFAULT_BACKBONES

MIB = 2**20


def peak_mib(backbone: str, batch_size: int, image_size: int = 224) -> float:
    """Peak tensor memory of two optimiser steps (the second holds the optimiser's state), in MiB."""
    with FakeTensorMode():
        model = timm.create_model(backbone, num_classes=2)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        x = torch.rand(batch_size, 3, image_size, image_size)
        y = torch.zeros(batch_size, dtype=torch.long)
        tracker = MemTracker()
        tracker.track_external(model, optimizer, x)
        with tracker:
            for _ in range(2):
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    loss = F.cross_entropy(model(x), y)
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                tracker.reset_mod_stats()  # the tracker refuses a module's second forward otherwise
        peak = tracker.get_tracker_snapshot("peak")
    return max(snap["Total"] for snap in peak.values()) / MIB


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbones", default=",".join(DEFAULT_BACKBONES))
    args = p.parse_args()
    rows = {}
    for name in args.backbones.split(","):
        small, large = peak_mib(name, 16), peak_mib(name, 32)
        per_image = (large - small) / 16
        rows[name] = (round(small - 16 * per_image), round(per_image, 1))
        print(f"{name}: {small:.0f} MiB at batch 16, {large:.0f} MiB at batch 32 (224 px)", flush=True)
    print("GPU_MEMORY_MIB = {  # backbone: (fixed MiB, MiB per image at 224 px)")
    for name, (fixed, per_image) in rows.items():
        print(f'    "{name}": ({fixed}, {per_image}),')
    print("}")


if __name__ == "__main__":
    main()
