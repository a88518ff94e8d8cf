"""How a trial uses its device: mixed precision, channels-last, pinned copies and cuDNN autotuning on a GPU;
float32 channels-last on a CPU, where oneDNN's convolutions run 1.2-1.8x faster in that layout for every backbone
measured and bfloat16 did not pay (``benchmarks/layout.py``)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["Accel", "to_unit"]


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """uint8 images as float32 in 0..1, on the device they are on."""
    return x.float().div_(255)


@dataclass
class Accel:
    """The device and the speed-ups it takes; ``dtype`` None means float32 throughout."""

    device: torch.device
    dtype: torch.dtype | None = None
    scaler: torch.amp.GradScaler | None = None  # fp16 only: bf16 has float32's range and needs no scaling
    channels_last: bool = False

    @classmethod
    def for_device(cls, device: torch.device) -> Accel:
        if device.type != "cuda":
            return cls(device, channels_last=True)
        torch.backends.cudnn.benchmark = True  # fixed input sizes: let cuDNN pick its fastest kernels once
        if torch.cuda.is_bf16_supported():
            return cls(device, torch.bfloat16, None, True)
        return cls(device, torch.float16, torch.amp.GradScaler("cuda"), True)

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def model(self, model: nn.Module) -> nn.Module:
        model.to(self.device)
        return model.to(memory_format=torch.channels_last) if self.channels_last else model

    def batch(self, x: torch.Tensor) -> torch.Tensor:
        """A host batch on the device, in the model's memory format, through pinned memory without waiting: uint8
        photos copied as bytes (a quarter of the floats' size) and made float 0..1 there; float activations as
        they are."""
        if self.device.type == "cuda" and x.device.type == "cpu":
            x = x.pin_memory().to(self.device, non_blocking=True)
        x = x.to(self.device)
        return self._layout(x if x.is_floating_point() else to_unit(x))

    def _layout(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def backward_step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        if self.scaler is None:
            loss.backward()
            optimizer.step()
            return
        self.scaler.scale(loss).backward()
        self.scaler.step(optimizer)
        self.scaler.update()
