"""The Python API: ``run("egg", demo=True, trials=12)`` does what ``search egg --demo --trials 12`` does, and returns
the results as objects."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from datasets import UsageError
from search.command_line.config_file import config_defaults, parse_space
from search.command_line.options import SearchOptions, declared

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


def run(task: str, **options) -> SearchResult:
    """Search ``task`` (a registered task's name or an image folder) with the command line's options, spelled as
    keywords (``max_epochs=4``, ``backbones=["resnet18"]``, ``out="runs"``, ``config="search.toml"``, ``space={"lr":
    {"low": 1e-4, "high": 1e-3}}``), and write the same files under OUT/TASK.

    A Ray the caller already started (``ray.init(...)`` in a notebook) is used and left running; otherwise a local one
    runs for this call. Bad options or data raise ``UsageError`` before anything starts; a search that gave nothing to
    choose from raises ``SearchFailed``; Ctrl-C raises ``SearchInterrupted`` (``resume=True`` continues it).
    """
    from search.runs import prepared_tasks, run_prepared  # Ray, torch and timm: only once a search runs

    with prepared_tasks([_options(task, options)]) as [prepared]:
        ran = [record for _, record in run_prepared([prepared])]
    record = ran[0] if ran else prepared.done
    folder = prepared.options.task_dir
    return SearchResult(
        folder, record, pd.read_parquet(folder / "trials.parquet"), pd.read_parquet(folder / "epochs.parquet")
    )


def _options(task: str, options: dict) -> SearchOptions:
    """The keywords as the command line's options: a ``config`` file's first, the keywords over them."""
    names = list(declared())
    for key in options:
        if key not in [*names, "config"]:
            close = difflib.get_close_matches(key, [*names, "config"], n=3)
            hint = f"did you mean {', '.join(close)}?" if close else f"the options are {', '.join(names)}, config"
            raise UsageError(f"run(): unknown option {key!r}; {hint}")
    merged = {}
    if (path := options.pop("config", None)) is not None:
        merged = config_defaults(path)
    if "space" in options and options["space"] is not None:
        options["space"] = parse_space(options["space"], "run(space=...)")
    if isinstance(options.get("backbones"), str):
        options["backbones"] = options["backbones"].split(",")
    if options.get("backbones") is not None:
        options["backbones"] = tuple(options["backbones"])
    return SearchOptions(task=task, **{**merged, **options})
