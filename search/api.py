"""The Python API: ``run("egg", demo=True, trials=12)`` does what ``search egg --demo --trials 12`` does, and returns
the results as objects."""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from datasets import UsageError
from search.cli import log_to
from search.cluster import DASHBOARD_PORT, ray_session
from search.config import config_defaults, parse_space
from search.lock import unlock_all
from search.options import SearchOptions
from search.parser import search_parser

__all__ = ["SearchResult", "run"]


@dataclass(frozen=True)
class SearchResult:
    """One task's finished search, as the files under ``folder`` (OUT/TASK) hold it."""

    folder: Path
    best: dict  # best.json: the best configuration, its validation and test metrics, provenance
    trials: pd.DataFrame  # trials.parquet: one row per trial
    epochs: pd.DataFrame  # epochs.parquet: one row per trial and epoch

    @property
    def config(self) -> dict:
        """The best configuration (backbone, freeze depth, augmentation, optimiser and loss knobs)."""
        return self.best["config"]

    @property
    def model_dir(self) -> Path:
        """The retrained model (absent with ``retrain=False``), as ``search predict`` reads it."""
        return self.folder / "model"


def run(task: str, *, dashboard_port: int = DASHBOARD_PORT, **options) -> SearchResult:
    """Search ``task`` (a registered task's name or an image folder) with the command line's options, spelled as
    keywords (``max_epochs=4``, ``backbones=["resnet18"]``, ``out="runs"``, ``config="search.toml"``, ``space={"lr":
    {"low": 1e-4, "high": 1e-3}}``), and write the same files under OUT/TASK.

    A Ray the caller already started (``ray.init(...)`` in a notebook) is used and left running; otherwise a local one
    runs for this call. Bad options or data raise ``UsageError`` before anything starts; a search that gave nothing to
    choose from raises ``SearchFailed``; Ctrl-C raises ``SearchInterrupted`` (``resume=True`` continues it).
    """
    from search.driver import run_task  # Ray, torch and timm: only once a search runs
    from search.prepare import Prepared

    try:
        prepared = Prepared(_options(task, options))
        folder = prepared.options.task_dir
        record = prepared.done
        if not record:
            with (
                log_to(Path(prepared.options.out) / "search.log"),
                ray_session(prepared.options.address, dashboard_port),
            ):
                record = run_task(prepared)
        return SearchResult(
            folder, record, pd.read_parquet(folder / "trials.parquet"), pd.read_parquet(folder / "epochs.parquet")
        )
    finally:
        unlock_all()


def _options(task: str, options: dict) -> SearchOptions:
    """The keywords as the command line's options: a ``config`` file's first, the keywords over them."""
    names = [f.name for f in dataclasses.fields(SearchOptions) if f.name != "task"]
    for key in options:
        if key not in [*names, "config"]:
            close = difflib.get_close_matches(key, [*names, "config"], n=3)
            hint = f"did you mean {', '.join(close)}?" if close else f"the options are {', '.join(names)}, config"
            raise UsageError(f"run(): unknown option {key!r}; {hint}")
    merged = {}
    if (path := options.pop("config", None)) is not None:
        merged = {k: v for k, v in config_defaults(path, search_parser()).items() if k in names}
    if "space" in options and options["space"] is not None:
        options["space"] = parse_space(options["space"], "run(space=...)")
    if isinstance(options.get("backbones"), str):
        options["backbones"] = options["backbones"].split(",")
    if options.get("backbones") is not None:
        options["backbones"] = tuple(options["backbones"])
    return SearchOptions(task=task, **{**merged, **options})
