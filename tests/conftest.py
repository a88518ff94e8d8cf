"""Shared fixtures: one real local Ray for the session, small generated image folders, a private cache."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from datasets import make_demo_dataset

TINY_SPLITS = {"train": 24, "valid": 8, "test": 8}


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Keep decoded caches and generated data out of the user's home."""
    root = tmp_path_factory.mktemp("cache")
    os.environ["SEARCH_CACHE"] = str(root)
    return root


@pytest.fixture(scope="session")
def ray_cluster():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=300 * 2**20)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_eggs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real JPEG folder, train/valid/test/{broken,intact}, 40 small images per class."""
    return make_demo_dataset("egg", tmp_path_factory.mktemp("eggs"), per_class=TINY_SPLITS)


def write_image(path: Path, colour=(200, 30, 30), size=(40, 30), mode="RGB", fmt=None) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, colour if mode == "RGB" else 128).save(path, format=fmt)
    return path
