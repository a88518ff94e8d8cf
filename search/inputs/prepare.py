"""Everything checked and loaded before Ray starts: the task folder's lock, the data decoded, the options resolved,
the backbones validated, the weights found, an earlier search's state checked; bad input fails here."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pandas as pd

from datasets import UsageError, reading, report_line
from results import top_configs
from search.command_line.options import ResolvedOptions, SearchOptions
from search.inputs.backbones import validate_backbones
from search.inputs.data import prepare, resolve_task
from search.inputs.lock import TaskLocks
from search.inputs.resume import check_existing, finished_record
from search.inputs.weights import resolve_weights, weights_folder
from search.tuning.space import search_space
from search.tuning.tracking import check_mlflow
from search.tuning.tuner import SearchFiles

__all__ = ["Prepared", "warm_start_points", "warm_start_table"]

log = logging.getLogger(__name__)


class Prepared:
    """Everything checked and loaded before Ray starts: bad input fails here, with nothing started."""

    def __init__(self, options: SearchOptions, locks: TaskLocks):
        started = time.perf_counter()
        out = Path(options.out).expanduser().resolve() / resolve_task(options.task).name
        locks.take(out)  # before any check: a running search is named at once, whatever the flags
        # what the user named is refused before any image is decoded: a misspelt backbone, a --weights that is not a
        # folder, a --warm-start without its table
        if options.backbones:
            validate_backbones(list(options.backbones))
        weights_folder(options.pretrained, options.weights)
        warm_start_table(options.warm_start)
        self.data = prepare(
            options.task,
            options.data,
            options.demo,
            options.requested_image_size(),
            fetch=options.download,
            split_file=out / "split.json",
        )
        report = self.data.cache.report()
        self.data_root = str(self.data.root)  # what --resume TASK-NAME finds again (search.inputs.data.recorded_task)
        log.info("%s: %s", self.data.task.name, report_line(report))
        for warning in report.get("warnings", []):
            log.warning("%s: %s", self.data.task.name, warning)
        self.options: ResolvedOptions = options.for_task(self.data.task)
        if not options.backbones:
            validate_backbones(list(self.options.backbones))
        check_mlflow(self.options.mlflow)
        self.warm_points = warm_start_points(options.warm_start, self.options.backbones, self.options.trials)
        self.weights = resolve_weights(list(self.options.backbones), self.options.pretrained, self.options.weights)
        self.files = SearchFiles.under(self.options.task_dir, self.options.storage, self.data.task.name)
        self.signature = {
            "task": self.data.task.name,
            "data_fingerprint": self.data.cache.fingerprint,
            "image_size": self.options.image_size,
            "backbones": list(self.options.backbones),
            "trials": self.options.trials,
            "max_epochs": self.options.max_epochs,
            "seed": self.options.seed,
            "pretrained": {b: p.state_dict is not None for b, p in self.weights.items()},
            # what trials do with the space changed with LP-FT (fitted heads, two learning rates): older searches'
            # checkpoints do not fit it
            "space": {
                **{k: repr(v) for k, v in search_space(self.options.backbones, self.options.space).items()},
                "training": "lp-ft",
            },
            "prescreen": self.options.prescreen,
            "time_budget_s": self.options.time_budget_s,
        }
        check_existing(self.options, self.files, self.signature)
        self.done = finished_record(self.options)
        self.seconds = time.perf_counter() - started  # decoding and weights: part of a --time-budget
        if self.done:
            log.info("%s: this search already finished (--retrain-again repeats the retrain)", self.data.task.name)

    def definition(self, screening: dict[str, dict], speedup: float) -> dict:
        """What defines the search (checked by --resume), its image folder, and what it measured before the first
        trial (the backbones' screening, the retrain's thread speed-up), which --resume continues with."""
        return {**self.signature, "data_root": self.data_root, "screening": screening, "speedup": speedup}


def warm_start_table(source: str | None) -> Path | None:
    """``--warm-start``'s trials.parquet, or a one-line refusal when the folder has none."""
    if source is None:
        return None
    path = Path(source).expanduser() / "trials.parquet"
    if not path.is_file():
        raise UsageError(f"--warm-start {source}: no trials.parquet there; give a finished search's OUT/TASK folder")
    return path


def warm_start_points(source: str | None, backbones: tuple[str, ...], trials: int) -> list[dict]:
    """The best configurations of an earlier search (OUT/TASK) whose backbones this search has."""
    path = warm_start_table(source)
    if path is None:
        return []
    with reading(path, "point --warm-start at another finished search, or leave it out"):
        return top_configs(pd.read_parquet(path), k=max(1, trials // 4), backbones=backbones)
