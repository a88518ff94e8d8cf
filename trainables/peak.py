"""An epoch's peak memory where it ran: the allocator's peak on a GPU, the worker's peak resident set on a CPU."""

from __future__ import annotations

import contextlib
import resource
from pathlib import Path

import torch

__all__ = ["peak_memory_mb", "reset_peak_memory"]

_STATUS, _CLEAR_REFS = Path("/proc/self/status"), Path("/proc/self/clear_refs")


def reset_peak_memory(dev: torch.device) -> None:
    """Start a new peak: a reused worker's peak so far belongs to its earlier trials."""
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
        return
    # Linux: VmHWM, the peak resident set, restarts from the current one; elsewhere the lifetime peak is reported
    with contextlib.suppress(OSError):
        _CLEAR_REFS.write_text("5")


def peak_memory_mb(dev: torch.device) -> float:
    """The peak since the last reset, in MiB: ``torch.cuda.max_memory_allocated`` on a GPU, else the process's peak
    resident set (VmHWM; the lifetime peak, ``ru_maxrss``, where /proc is missing)."""
    if dev.type == "cuda":
        return torch.cuda.max_memory_allocated(dev) / 2**20
    try:
        line = next(x for x in _STATUS.read_text().splitlines() if x.startswith("VmHWM:"))
        return int(line.split()[1]) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
