"""What the search benchmarks share: generated egg images, decoded once, as the trials' data."""

from __future__ import annotations

import tempfile
from pathlib import Path

from datasets import build_cache, make_demo_dataset, scan_folder
from trainables import TrialSetup


def egg_setup(name: str, images: int, image_size: int, epochs: int, valid: int) -> tuple[Path, TrialSetup]:
    """A fresh work folder and the trials' setup: ``images`` training images per class at ``image_size``."""
    work = Path(tempfile.mkdtemp(prefix=f"{name}-"))
    root = make_demo_dataset("egg", work / "data", per_class={"train": images, "valid": valid, "test": 8})
    cache = build_cache(scan_folder(root), image_size, work / "cache")
    return work, TrialSetup(cache, max_epochs=epochs, seed=0, cpus=1)
