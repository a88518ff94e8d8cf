"""Preprocessing a backbone's pretrained weights expect, applied to whole batches of decoded images."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from trainables.augmentation import augment

__all__ = ["Preprocess"]

RESAMPLING = ("bilinear", "bicubic")


@dataclass(frozen=True)
class Preprocess:
    """What a backbone's pretrained weights expect (timm's data config), applied to decoded batches, which are
    stored larger than the model's input: the centre crop timm's evaluation takes (an image resized to
    ``int(size / crop_pct)``, then ``size`` px in the middle), then ``mean`` and ``std``."""

    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    crop_pct: float = 1.0
    interpolation: str = "bilinear"
    size: int | None = None  # the model's input; None: the stored size

    def crop(self, stored: int) -> int:
        """Pixels of a stored side that the centre crop keeps; equal to ``size`` when the cache was decoded at this
        backbone's own ``crop_pct`` (timm's default 0.875, most backbones'), so nothing is resampled."""
        size = self.size or stored
        return min(stored, round(stored * size / int(size / self.crop_pct)))

    def view(self, x: torch.Tensor) -> torch.Tensor:
        """The centre crop of a float batch ``[B, 3, S, S]``, at ``size``."""
        stored = x.shape[-1]
        size, crop = self.size or stored, self.crop(stored)
        top = (stored - crop) // 2
        x = x[..., top : top + crop, top : top + crop]
        if crop == size:
            return x
        mode = self.interpolation if self.interpolation in RESAMPLING else "bilinear"
        return F.interpolate(x, size=(size, size), mode=mode, align_corners=False, antialias=True).clamp_(0, 1)

    def train_view(self, x: torch.Tensor, strength: float, generator: torch.Generator) -> torch.Tensor:
        """The augmented view: the transform is applied around the centre crop and sampled from the whole stored
        image, so zooming out and shifting show real pixels, not a mirrored border."""
        if strength <= 0:
            return self.view(x)
        stored = x.shape[-1]
        return augment(x, strength, generator, size=self.size or stored, window=self.crop(stored) / stored)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        m = torch.tensor(self.mean).view(1, -1, 1, 1).to(x)
        s = torch.tensor(self.std).view(1, -1, 1, 1).to(x)
        return (x - m) / s

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.normalize(self.view(x))
