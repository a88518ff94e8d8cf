"""How much GPU memory a trial needs, and how many trials one GPU takes: what ``--gpus-per-trial`` fractions allow."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pandas as pd
from ray import tune

from search.tuning.ledger import TrialLedger

__all__ = [
    "GPU_MEMORY_MIB",
    "PROCESS_MIB",
    "MemoryWatch",
    "Measured",
    "estimate_mib",
    "first_measured",
    "memory_check",
    "packing_warnings",
    "tensor_mib",
]

log = logging.getLogger(__name__)

# backbone: (fixed MiB, MiB per image at 224 px) for full fine-tuning with bf16 autocast and AdamW; measured by
# benchmarks/memory_table.py (2026-11-28). A frozen backbone needs less: no gradients or optimiser state for it.
GPU_MEMORY_MIB = {
    "resnet18": (168, 11.7),
    "resnet50": (326, 42.3),
    "efficientnet_b0": (54, 42.9),
    "efficientnet_b2": (103, 62.3),
    "mobilenetv3_large_100": (59, 21.8),
    "mobilenetv3_small_100": (21, 8.4),
}
# not tensors, so not in the table: the CUDA context, cuDNN's workspaces and the caching allocator's slack
PROCESS_MIB = 1024


@dataclass(frozen=True)
class Measured:
    """One trial's measured peak of tensor memory (MiB, ``torch.cuda.max_memory_allocated``), its batch and image
    size: the estimate for a backbone the table does not have."""

    peak_mib: float
    image_size: int
    batch_size: int
    trial_id: str = ""

    def scaled(self, image_size: int, batch_size: int) -> float:
        """The peak in proportion to the pixels of a batch: too high for a smaller batch (the fixed part, weights
        and optimiser state, does not shrink), too low for a larger one."""
        return self.peak_mib * batch_size * image_size**2 / (self.batch_size * self.image_size**2)


def tensor_mib(
    backbone: str, image_size: int, batch_size: int, measured: Mapping[str, Measured] | None = None
) -> float | None:
    """A trial's peak tensor memory in MiB: from the table, else from ``measured[backbone]``, else None."""
    if backbone in GPU_MEMORY_MIB:
        fixed, per_image = GPU_MEMORY_MIB[backbone]
        return fixed + per_image * batch_size * (image_size / 224) ** 2
    if measured and backbone in measured:
        return measured[backbone].scaled(image_size, batch_size)
    return None


def estimate_mib(
    backbone: str, image_size: int, batch_size: int, measured: Mapping[str, Measured] | None = None
) -> float | None:
    """A trial's peak GPU memory in MiB, the process's own included, or None for a backbone neither the table nor
    ``measured`` has."""
    tensors = tensor_mib(backbone, image_size, batch_size, measured)
    return None if tensors is None else PROCESS_MIB + tensors


def packing_warnings(
    backbones: Sequence[str],
    image_size: int,
    batch_size: int,
    gpus_per_trial: float,
    gpu_mib: float,
    measured: Mapping[str, Measured] | None = None,
) -> list[str]:
    """One line per backbone whose trial would not fit in its share of a ``gpu_mib`` GPU."""
    share = gpus_per_trial * gpu_mib
    lines = []
    for name in backbones:
        need = estimate_mib(name, image_size, batch_size, measured)
        if need is not None and need > share:
            lines.append(
                f"{name} at {image_size} px and batch {batch_size} needs about {need / 1024:.1f} GiB but "
                f"--gpus-per-trial {gpus_per_trial:g} gives each trial {share / 1024:.1f} GiB of the GPU; such trials "
                f"retry at half the batch when they run out, or pass --gpus-per-trial {_fitting(need, gpu_mib):g}"
            )
    return lines


def first_measured(trials: pd.DataFrame, epochs: pd.DataFrame, image_size: int) -> dict[str, Measured]:
    """For each backbone outside the table, the first epoch measured on a GPU (the earliest timestamp)."""
    gpu = epochs[epochs.get("device", pd.Series(dtype=str)) == "cuda"]
    gpu = gpu.merge(trials[["trial_id", "backbone"]], on="trial_id")
    gpu = gpu[~gpu["backbone"].isin(list(GPU_MEMORY_MIB))].sort_values(["timestamp", "trial_id", "epoch"])
    first = gpu.groupby("backbone", sort=False).head(1)
    return {
        row.backbone: Measured(float(row.peak_memory_mb), image_size, int(row.batch_size), str(row.trial_id))
        for row in first.itertuples()
    }


def memory_check(trials: pd.DataFrame, epochs: pd.DataFrame, image_size: int) -> pd.DataFrame:
    """One row per trial that ran on a GPU: its measured peak of tensor memory against the estimate (the table's,
    or its backbone's first measured trial's), and their ratio. Empty when no trial ran on a GPU."""
    columns = ["trial_id", "backbone", "freeze_depth", "batch_size", "measured_mib", "estimate_mib", "ratio", "basis"]
    if "device" not in epochs or not (epochs["device"] == "cuda").any():
        return pd.DataFrame(columns=columns)
    measured = first_measured(trials, epochs, image_size)
    gpu = epochs[epochs["device"] == "cuda"].merge(trials[["trial_id", "backbone", "freeze_depth"]], on="trial_id")
    # a trial that ran out of memory retries at half the batch: its peak is the smallest batch's
    peaks = gpu.groupby("trial_id").agg(
        backbone=("backbone", "first"),
        freeze_depth=("freeze_depth", "first"),
        batch_size=("batch_size", "min"),
        measured_mib=("peak_memory_mb", "max"),
    )
    rows = []
    for trial_id, row in peaks.iterrows():
        estimate = tensor_mib(row.backbone, image_size, int(row.batch_size), measured)
        basis = "table" if row.backbone in GPU_MEMORY_MIB else f"trial {measured[row.backbone].trial_id}"
        ratio = row.measured_mib / estimate if estimate else float("nan")
        rows.append(
            [trial_id, row.backbone, row.freeze_depth, row.batch_size, row.measured_mib, estimate, ratio, basis]
        )
    return pd.DataFrame(rows, columns=columns).round({"measured_mib": 0, "estimate_mib": 0, "ratio": 2})


class MemoryWatch(tune.Callback):
    """Once per backbone outside the table: its first trial's measured peak (the ledger's first epoch of it) becomes
    its estimate, and a warning says so when that estimate does not fit a trial's share of the GPU."""

    def __init__(
        self, ledger: TrialLedger, image_size: int, batch_size: int, gpus_per_trial: float, gpu_mib: float | None
    ):
        self.ledger, self.image_size, self.batch_size = ledger, image_size, batch_size
        self.gpus_per_trial, self.gpu_mib = gpus_per_trial, gpu_mib

    def measured(self) -> dict[str, Measured]:
        """backbone -> the first GPU peak measured of it, for the backbones the table lacks."""
        out: dict[str, Measured] = {}
        for trial_id, entry in self.ledger.entries.items():
            first = entry.epochs[0] if entry.epochs else {}
            known = entry.backbone in GPU_MEMORY_MIB or entry.backbone in out
            if entry.device == "cuda" and not known and "peak_memory_mb" in first:
                out[entry.backbone] = Measured(
                    float(first["peak_memory_mb"]), self.image_size, int(first["batch_size"]), trial_id
                )
        return out

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info) -> None:
        self.ledger.record(trial.trial_id, result)
        measured = self.measured()
        backbone = trial.config.get("backbone")
        first, entry = measured.get(backbone), self.ledger.entries.get(trial.trial_id)
        if first is None or first.trial_id != trial.trial_id or entry is None or len(entry.epochs) != 1:
            return  # the estimate is the first epoch's of the backbone's first trial, said once
        need = estimate_mib(backbone, self.image_size, self.batch_size, measured)
        log.info(
            "%s is not in the memory table: trial %s peaked at %.0f MiB at batch %d, so a trial at batch %d needs "
            "about %.1f GiB",
            *(backbone, trial.trial_id, first.peak_mib, first.batch_size, self.batch_size, need / 1024),
        )
        if self.gpu_mib:
            for line in packing_warnings(
                [backbone], self.image_size, self.batch_size, self.gpus_per_trial, self.gpu_mib, measured
            ):
                log.warning("%s", line)


def _fitting(need_mib: float, gpu_mib: float) -> float:
    """The largest number of trials per GPU that fits, as a fraction."""
    per_gpu = max(1, int(gpu_mib // need_mib))
    return 1 / per_gpu
