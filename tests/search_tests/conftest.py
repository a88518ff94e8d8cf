"""Fixtures of the driver's fault tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from datasets import make_demo_dataset


@pytest.fixture(scope="module")
def eggs(tmp_path_factory) -> Path:
    """Enough images that an epoch lasts long enough to be killed in the middle."""
    return make_demo_dataset("egg", tmp_path_factory.mktemp("eggs"), per_class={"train": 80, "valid": 16, "test": 16})
