"""A trial's checkpoint: tensors as safetensors, the optimizer through ``torch.load(weights_only=True)``."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

MODEL_FILE = "model.safetensors"
TRAINER_FILE = "trainer.pt"


def _atomic(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)


def save_checkpoint(directory: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer, epoch: int) -> None:
    """Everything needed to continue after ``epoch`` epochs."""
    directory = Path(directory)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    _atomic(directory / MODEL_FILE, lambda p: save_file(state, str(p)))
    trainer = {"optimizer": optimizer.state_dict(), "epoch": epoch, "torch_rng": torch.get_rng_state()}
    _atomic(directory / TRAINER_FILE, lambda p: torch.save(trainer, p))


def load_checkpoint(directory: str | Path) -> dict:
    """``{"model": state_dict, "optimizer": ..., "epoch": int, "torch_rng": tensor}``; safe formats only."""
    directory = Path(directory)
    trainer = torch.load(directory / TRAINER_FILE, weights_only=True)
    return {"model": load_file(str(directory / MODEL_FILE)), **trainer}
