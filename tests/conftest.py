"""Shared fixtures: one real local Ray for the session, small generated image folders, a private cache."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from datasets import make_demo_dataset

TINY_SPLITS = {"train": 24, "valid": 8, "test": 8}


def trial_config(**values) -> dict:
    """A whole trial configuration, ``values`` over these: every knob, so one added with a default joins by itself."""
    from trainables import TrialConfig

    base = {"backbone": "resnet18", "freeze_depth": 2, "aug_strength": 0.3, "lr": 1e-3, "weight_decay": 1e-4}
    return TrialConfig(**{**base, "batch_size": 32, "label_smoothing": 0.1, "dropout": 0.2, **values}).to_dict()


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


CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


@pytest.fixture()
def browser():
    """Headless Chromium from the system's packages, driven by Selenium, with the page's console log kept."""
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        message = "needs Debian's chromium and chromium-driver (.ci/run installs them)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1280,2000",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def console_errors(driver) -> list[str]:
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Markers from what a test needs: Ray, a browser or a multi-node cluster make it slow (``-m "not slow"``);
    the longest files first."""
    for item in items:
        needs = set(getattr(item, "fixturenames", ()))
        if "browser" in needs:
            item.add_marker(pytest.mark.browser)
        if "cluster" in needs:
            item.add_marker(pytest.mark.cluster)
        if needs & {"ray_cluster", "browser", "cluster"}:
            item.add_marker(pytest.mark.slow)
    # `make test` runs each file on one of two xdist workers, in this order (--no-loadscope-reorder): a file marked
    # LONG starts first, or the other worker would finish early and leave it running alone
    items.sort(key=lambda item: not getattr(item.module, "LONG", False))
