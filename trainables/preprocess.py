"""Preprocessing a backbone's pretrained weights expect, applied to whole batches of decoded images."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["Preprocess"]


@dataclass(frozen=True)
class Preprocess:
    """What a backbone's pretrained weights expect (timm's data config), applied to decoded batches: the centre
    ``crop_pct`` of each image resized back with ``interpolation``, then normalised by ``mean`` and ``std``."""

    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    crop_pct: float = 1.0
    interpolation: str = "bilinear"

    def view(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-1]
        crop = round(size * self.crop_pct)
        if crop >= size:
            return x
        top = (size - crop) // 2
        mode = self.interpolation if self.interpolation in ("bilinear", "bicubic", "nearest") else "bilinear"
        x = x[..., top : top + crop, top : top + crop]
        return F.interpolate(x, size=(size, size), mode=mode, align_corners=False, antialias=False).clamp_(0, 1)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        m = torch.tensor(self.mean).view(1, -1, 1, 1).to(x)
        s = torch.tensor(self.std).view(1, -1, 1, 1).to(x)
        return (x - m) / s

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.normalize(self.view(x))
