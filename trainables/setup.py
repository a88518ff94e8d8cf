"""What every trial of one search shares."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import ray
import torch

from datasets import DataCache, local_copy

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
    compile: bool = False  # torch.compile the model: slower first epoch, faster later ones on a GPU
    data_node: str = ""  # the Ray node whose disk holds ``data``: the driver's
    data_copy: list | None = None  # [ObjectRef of cache_files(data)] for the other nodes, when on a cluster

    def local_data(self) -> DataCache:
        """The decoded images on this node's disk: the driver's cache on its node, elsewhere a copy made once by
        the first trial on that node, from the object store."""
        if self.data_copy is None:
            return self.data
        if ray.get_runtime_context().get_node_id() == self.data_node and (self.data.path / "meta.json").is_file():
            return self.data
        return local_copy(self.data, lambda: ray.get(self.data_copy[0]))

    def pretrained(self, backbone: str) -> dict[str, torch.Tensor] | None:
        ref = self.weights.get(backbone)
        return ray.get(ref) if isinstance(ref, ray.ObjectRef) else ref


def device() -> torch.device:
    """The GPU Ray gave this worker, if any (Ray hides the others through CUDA_VISIBLE_DEVICES)."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
