"""What each backbone costs to run: parameters and inference latency, measured where the driver runs."""

from __future__ import annotations

import statistics
import time

import timm
import torch

__all__ = ["backbone_costs"]


@torch.no_grad()
def backbone_costs(backbones: list[str], num_classes: int, image_size: int, repeats: int = 10) -> dict[str, dict]:
    """Millions of parameters and the median latency of one image (batch 1, CPU, one thread, after a warm-up):
    the same conditions for every backbone, so they compare; not a GPU throughput figure."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        costs = {}
        x = torch.rand(1, 3, image_size, image_size)
        for name in backbones:
            model = timm.create_model(name, pretrained=False, num_classes=num_classes).eval()
            model(x)
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                model(x)
                times.append(time.perf_counter() - start)
            costs[name] = {
                "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
                "latency_ms": 1000 * statistics.median(times),
            }
        return costs
    finally:
        torch.set_num_threads(threads)
