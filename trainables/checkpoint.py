"""A trial's checkpoint: the model as safetensors, optimizer and torch RNG through ``torch.load(weights_only=True)``,
the rest (epoch, batch size, time so far, Python and NumPy RNG) as JSON."""

from __future__ import annotations

import hashlib
import io
import json
import random
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load, save
from torch import nn

from datasets import atomic_write

__all__ = ["MODEL_FILE", "STATE_FILE", "TRAINER_FILE", "load_checkpoint", "restore_rng", "save_checkpoint"]

MODEL_FILE = "model.safetensors"
TRAINER_FILE = "trainer.pt"
STATE_FILE = "state.json"


def _write(path: Path, data: bytes) -> str:
    """Write ``data`` whole or not at all; returns its SHA-256, which ``load_checkpoint`` checks."""
    atomic_write(path, lambda p: p.write_bytes(data))
    return hashlib.sha256(data).hexdigest()


def save_checkpoint(
    directory: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, int | float]
) -> None:
    """Everything needed to continue after ``state["epoch"]`` epochs; ``state`` is plain JSON (epoch, step, ...)."""
    directory = Path(directory)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    trainer = {"optimizer": optimizer.state_dict(), "torch_rng": torch.get_rng_state()}
    if torch.cuda.is_available():
        trainer["cuda_rng"] = torch.cuda.get_rng_state_all()
    buffer = io.BytesIO()
    torch.save(trainer, buffer)
    sha256 = {
        MODEL_FILE: _write(directory / MODEL_FILE, save(tensors)),
        TRAINER_FILE: _write(directory / TRAINER_FILE, buffer.getvalue()),
    }
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    rng = {"python": random.getstate(), "numpy": [name, keys.tolist(), pos, has_gauss, gauss]}
    _write(directory / STATE_FILE, json.dumps({**state, "rng": rng, "sha256": sha256}).encode())


def load_checkpoint(directory: str | Path) -> dict:
    """``{"model": state_dict, "optimizer": ..., "torch_rng": tensor, "epoch": int, ...}``; safe formats only. A file
    cut short or changed since it was written raises ``ValueError`` naming it."""
    directory = Path(directory)
    state = json.loads((directory / STATE_FILE).read_text())
    blobs = {name: (directory / name).read_bytes() for name in (MODEL_FILE, TRAINER_FILE)}
    written = state.get("sha256", {})  # checkpoints of versions before the checksums have none
    for name, data in blobs.items():
        if name in written and hashlib.sha256(data).hexdigest() != written[name]:
            raise ValueError(f"{directory / name} is not the file the checkpoint wrote (its SHA-256 differs)")
    trainer = torch.load(io.BytesIO(blobs[TRAINER_FILE]), weights_only=True)
    return {"model": load(blobs[MODEL_FILE]), **trainer, **state}


def restore_rng(checkpoint: dict) -> None:
    """Put every random generator back where the checkpoint left it (dropout draws from torch's)."""
    torch.set_rng_state(checkpoint["torch_rng"])
    if "cuda_rng" in checkpoint and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(checkpoint["cuda_rng"])
    version, state, gauss = checkpoint["rng"]["python"]
    random.setstate((version, tuple(state), gauss))
    name, keys, pos, has_gauss, cached = checkpoint["rng"]["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
