"""One augmentation knob, applied to whole batches of decoded tensors.

``strength`` scales the recipe the hand-made projects used: flips, rotation, zoom, shifts, colour.
At 0 the batch is returned unchanged.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["MAX_COLOUR", "MAX_ROTATION_DEG", "MAX_SHIFT", "MAX_ZOOM", "augment"]

MAX_ROTATION_DEG = 25.0
MAX_ZOOM = 0.25
MAX_SHIFT = 0.15
MAX_COLOUR = 0.4


def augment(
    x: torch.Tensor, strength: float, generator: torch.Generator, size: int | None = None, window: float = 1.0
) -> torch.Tensor:
    """Randomly transform a float batch ``[B, 3, H, W]`` in 0..1 into ``[B, 3, size, size]`` (default: H, W); the
    untransformed view is the centre ``window`` of each side. The generator makes it repeatable."""
    if strength <= 0 and size is None and window == 1.0:
        return x
    b = x.shape[0]

    def uniform(scale: float) -> torch.Tensor:
        return (torch.rand(b, generator=generator) * 2 - 1) * scale

    angle = uniform(math.radians(MAX_ROTATION_DEG) * strength)
    zoom = 1 + uniform(MAX_ZOOM * strength)
    flip = torch.where(torch.rand(b, generator=generator) < min(0.5, strength), -1.0, 1.0)
    shift = torch.stack([uniform(MAX_SHIFT * strength), uniform(MAX_SHIFT * strength)], dim=1) * 2
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = window * torch.stack(
        [torch.stack([cos * flip, -sin, shift[:, 0]], 1), torch.stack([sin * flip, cos, shift[:, 1]], 1)], 1
    )
    out = [b, x.shape[1], size, size] if size else list(x.shape)
    grid = F.affine_grid(theta.to(x), out, align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)

    brightness = (1 + uniform(MAX_COLOUR * strength)).view(b, 1, 1, 1).to(x)
    contrast = (1 + uniform(MAX_COLOUR * strength)).view(b, 1, 1, 1).to(x)
    saturation = (1 + uniform(MAX_COLOUR * strength)).view(b, 1, 1, 1).to(x)
    x = x * brightness
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * contrast + mean
    grey = 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]
    x = (x - grey) * saturation + grey
    return x.clamp_(0, 1)
