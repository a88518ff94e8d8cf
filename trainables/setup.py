"""What every trial of one search shares."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
import torch
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from datasets import DataCache, Piece, local_copy, read_piece

__all__ = ["TrialSetup", "device"]


@dataclass(frozen=True)
class TrialSetup:
    """What every trial of one search shares; it travels once through the object store."""

    data: DataCache
    max_epochs: int
    seed: int = 0
    cpus: int = 1
    weights: dict[str, Any] = field(default_factory=dict)  # backbone -> ObjectRef of its pretrained state dict
    feature_cache: bool = True  # probes train on cached features; fine-tuning starts from a head fitted on them
    # fine-tuning's first epochs at a smaller side (``trainables.steps.epoch_size``): off, as measured on real photos
    # (benchmarks/progressive.py: 1.6x cheaper first epochs, 2-3 points lower at ASHA's first rung and after)
    progressive: bool = False
    compile: bool = False  # torch.compile the model: slower first epoch, faster later ones on a GPU
    data_node: str = ""  # the Ray node whose disk holds ``data``: the driver's
    data_pieces: list[Piece] | None = None  # on a cluster: what the other nodes copy from ``data_node``

    def local_data(self) -> DataCache:
        """The decoded images on this node's disk: the driver's cache on its node, elsewhere a copy made once by
        the first trial on that node, one piece at a time from the data node (each piece read there by a task)."""
        if self.data_pieces is None:
            return self.data
        if ray.get_runtime_context().get_node_id() == self.data_node and (self.data.path / "meta.json").is_file():
            return self.data
        there = NodeAffinitySchedulingStrategy(self.data_node, soft=False)
        reader = _read_piece.options(scheduling_strategy=there)
        return local_copy(self.data, self.data_pieces, lambda piece: ray.get(reader.remote(str(self.data.path), piece)))

    def pretrained(self, backbone: str) -> dict[str, torch.Tensor] | None:
        ref = self.weights.get(backbone)
        return ray.get(ref) if isinstance(ref, ray.ObjectRef) else ref


@ray.remote(num_cpus=0)  # beside the trials, which hold the data node's CPUs
def _read_piece(folder: str, piece: Piece) -> bytes:
    return read_piece(Path(folder), piece)


def device() -> torch.device:
    """The GPU Ray gave this worker, if any (Ray hides the others through CUDA_VISIBLE_DEVICES)."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
