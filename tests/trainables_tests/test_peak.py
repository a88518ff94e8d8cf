"""An epoch's peak memory is its own: what an earlier epoch (or trial) of the worker allocated does not count."""

from __future__ import annotations

import numpy as np
import torch

from trainables.peak import peak_memory_mb, reset_peak_memory

CPU = torch.device("cpu")


def test_the_peak_counts_what_was_touched_since_the_reset_and_a_reset_forgets_it():
    reset_peak_memory(CPU)
    before = peak_memory_mb(CPU)
    block = np.ones(300 * 2**20, dtype=np.uint8)  # 300 MiB, every page touched
    del block
    during = peak_memory_mb(CPU)
    assert during - before > 250, (before, during)
    reset_peak_memory(CPU)
    assert peak_memory_mb(CPU) < during - 250, "the next epoch's peak starts from what is resident now"
