"""Fixtures of the driver's fault tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from datasets import make_demo_dataset
from search.inputs.lock import TaskLocks


@pytest.fixture(scope="module")
def eggs(tmp_path_factory) -> Path:
    """Enough images that an epoch lasts long enough to be killed in the middle."""
    return make_demo_dataset("egg", tmp_path_factory.mktemp("eggs"), per_class={"train": 80, "valid": 16, "test": 16})


@pytest.fixture()
def locks():
    """The task-folder locks of a test that prepares tasks itself, as one command holds them: released at its end."""
    with TaskLocks() as held:
        yield held
