"""A trial's checkpoint: the model as safetensors, optimizer and torch RNG through ``torch.load(weights_only=True)``,
the rest (epoch, batch size, time so far, Python and NumPy RNG) as JSON."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

MODEL_FILE = "model.safetensors"
TRAINER_FILE = "trainer.pt"
STATE_FILE = "state.json"


def _atomic(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)


def save_checkpoint(
    directory: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, int | float]
) -> None:
    """Everything needed to continue after ``state["epoch"]`` epochs; ``state`` is plain JSON (epoch, step, ...)."""
    directory = Path(directory)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    _atomic(directory / MODEL_FILE, lambda p: save_file(tensors, str(p)))
    trainer = {"optimizer": optimizer.state_dict(), "torch_rng": torch.get_rng_state()}
    if torch.cuda.is_available():
        trainer["cuda_rng"] = torch.cuda.get_rng_state_all()
    _atomic(directory / TRAINER_FILE, lambda p: torch.save(trainer, p))
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    rng = {"python": random.getstate(), "numpy": [name, keys.tolist(), pos, has_gauss, gauss]}
    _atomic(directory / STATE_FILE, lambda p: p.write_text(json.dumps({**state, "rng": rng})))


def load_checkpoint(directory: str | Path) -> dict:
    """``{"model": state_dict, "optimizer": ..., "torch_rng": tensor, "epoch": int, ...}``; safe formats only."""
    directory = Path(directory)
    trainer = torch.load(directory / TRAINER_FILE, weights_only=True)
    state = json.loads((directory / STATE_FILE).read_text())
    return {"model": load_file(str(directory / MODEL_FILE)), **trainer, **state}


def restore_rng(checkpoint: dict) -> None:
    """Put every random generator back where the checkpoint left it (dropout draws from torch's)."""
    torch.set_rng_state(checkpoint["torch_rng"])
    if "cuda_rng" in checkpoint and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(checkpoint["cuda_rng"])
    version, state, gauss = checkpoint["rng"]["python"]
    random.setstate((version, tuple(state), gauss))
    name, keys, pos, has_gauss, cached = checkpoint["rng"]["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
