"""One task's search from start to finish: validate, decode, resolve weights, search, retrain, write tables."""

from __future__ import annotations

import json
import logging
import platform
import time
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

import pandas as pd
import ray

from datasets import UsageError, report_line
from results import (
    CONFIG_COLUMNS,
    best_markdown,
    best_trial,
    epochs_frame,
    status_counts,
    summary_frame,
    summary_markdown,
    top_configs,
    trials_frame,
    write_csv,
    write_json,
    write_parquet,
    write_text,
)
from search.backbones import validate_backbones
from search.cluster import plan_resources
from search.data import prepare, resolve_task
from search.options import ResolvedOptions, SearchOptions
from search.retrain import run_retrain, save_model
from search.space import baseline_points
from search.tuner import run_trials
from search.weights import resolve_weights
from trainables import TrialSetup

log = logging.getLogger(__name__)
PACKAGES = ("ray", "optuna", "timm", "torch", "torchvision", "pandas", "pyarrow", "numpy")


def versions() -> dict[str, str]:
    return {"python": platform.python_version(), **{p: version(p) for p in PACKAGES}}


class SearchFailed(RuntimeError):
    """The search ran but gave nothing to choose from; the command line exits 1 with this message."""


class Prepared:
    """Everything checked and loaded before Ray starts: bad input fails here, with nothing started."""

    def __init__(self, options: SearchOptions):
        out = Path(options.out).expanduser().resolve() / resolve_task(options.task).name
        self.data = prepare(
            options.task,
            options.data,
            options.demo,
            options.requested_image_size(),
            fetch=options.download,
            split_file=out / "split.json",
        )
        report = self.data.cache.report()
        log.info("%s: %s", self.data.task.name, report_line(report))
        for warning in report.get("warnings", []):
            log.warning("%s: %s", self.data.task.name, warning)
        self.options: ResolvedOptions = options.for_task(self.data.task)
        validate_backbones(list(self.options.backbones))
        self.warm_points = warm_start_points(options.warm_start, self.options.backbones, self.options.trials)
        self.weights = resolve_weights(list(self.options.backbones), self.options.pretrained, self.options.weights)


def run_task(prepared: Prepared) -> dict:
    """Search, retrain and write every file of the contract under OUT/TASK; returns best.json's content."""
    opts, data = prepared.options, prepared.data
    out = opts.task_dir
    out.mkdir(parents=True, exist_ok=True)
    report = data.cache.report()
    write_json(out / "data_report.json", report)
    resources = plan_resources(opts.cpus_per_trial, opts.gpus_per_trial, opts.concurrency)
    refs = {b: ray.put(p.state_dict) for b, p in prepared.weights.items() if p.state_dict is not None}
    setup = TrialSetup(data.cache, opts.max_epochs, opts.seed, opts.cpus_per_trial, refs)
    storage = opts.storage or str(out / "tune")
    if "://" not in storage:
        storage = str(Path(storage).expanduser().resolve())
    finished_before = (out / "best.json").exists()

    started = time.perf_counter()
    points = [*prepared.warm_points, *baseline_points(opts.backbones, opts.trials)][: max(1, opts.trials // 2)]
    records = run_trials(
        setup, list(opts.backbones), opts.trials, resources, storage, opts.resume, finished_before, points
    )
    search_wall = time.perf_counter() - started
    pretrained = {b: p.state_dict is not None for b, p in prepared.weights.items()}
    trials, epochs = trials_frame(records, opts.max_epochs, pretrained), epochs_frame(records)
    write_parquet(out / "trials.parquet", trials)
    write_parquet(out / "epochs.parquet", epochs)

    try:
        best = best_trial(trials)
    except ValueError as e:
        errors = [err for err in trials["error"] if err]
        example = f"; e.g. {errors[0]}" if errors else ""
        raise SearchFailed(f"{e}{example}; every trial is in {out / 'trials.parquet'}") from None
    config = {k: _plain(best[k]) for k in CONFIG_COLUMNS}
    trial_hours = float(trials["wall_s"].sum()) / 3600
    record = {
        "task": data.task.name,
        "classes": list(data.cache.classes),
        "images": sum(data.cache.sizes.values()),
        "trial_id": best["trial_id"],
        "config": config,
        **{k: float(best[k]) for k in ("val_acc", "val_macro_f1", "val_loss")},
        "best_epoch": int(best["best_epoch"]),
        "trials": {"total": len(trials), **status_counts(trials)},
        "search_wall_s": search_wall,
        "cpu_hours": trial_hours * resources.cpus_per_trial,
        "gpu_hours": trial_hours * resources.gpus_per_trial,
        "pretrained": pretrained[config["backbone"]],
        "provenance": {
            "versions": versions(),
            "seed": opts.seed,
            "data_fingerprint": data.cache.fingerprint,
            "data_root": report["root"],
            "synthetic": data.synthetic,
            "image_size": opts.image_size,
            "max_epochs": opts.max_epochs,
            "backbones": list(opts.backbones),
            "pretrained_sources": {b: p.source for b, p in prepared.weights.items()},
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
        },
    }
    if opts.retrain:
        outcome = run_retrain(config, setup, resources)
        save_model(out / "model", outcome, config, list(data.cache.classes), opts.image_size)
        record.update(
            test_acc=outcome["test_acc"],
            test_macro_f1=outcome["test_macro_f1"],
            test_loss=outcome["test_loss"],
            test_confusion=outcome["confusion"],
            retrain_wall_s=outcome["wall_s"],
        )
        record["cpu_hours"] += outcome["wall_s"] * resources.retrain_cpus / 3600
        record["gpu_hours"] += outcome["wall_s"] * resources.retrain_gpus / 3600
    write_json(out / "best.json", record)
    write_text(out / "best.md", best_markdown(record))
    return record


def warm_start_points(source: str | None, backbones: tuple[str, ...], trials: int) -> list[dict]:
    """The best configurations of an earlier search (OUT/TASK) whose backbones this search has."""
    if source is None:
        return []
    path = Path(source).expanduser() / "trials.parquet"
    if not path.is_file():
        raise UsageError(f"--warm-start {source}: no trials.parquet there; give a finished search's OUT/TASK folder")
    return top_configs(pd.read_parquet(path), k=max(1, trials // 4), backbones=backbones)


def _plain(value: object) -> object:
    """numpy scalars from a pandas row as plain Python values, for JSON and for the trainable."""
    return value.item() if hasattr(value, "item") else value


def write_summary(out: str | Path) -> str:
    """Rewrite OUT/summary.md and summary.csv from every task's best.json; returns the markdown."""
    out = Path(out).expanduser().resolve()
    bests = [json.loads(p.read_text()) for p in sorted(out.glob("*/best.json"))]
    summary = summary_frame(bests)
    markdown = summary_markdown(summary)
    write_csv(out / "summary.csv", summary)
    write_text(out / "summary.md", markdown)
    return markdown
