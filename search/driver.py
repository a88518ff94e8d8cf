"""One task's search from start to finish: validate, decode, resolve weights, search, retrain, write tables."""

from __future__ import annotations

import logging
import os
import platform
import statistics
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

import pandas as pd
import ray
import torch

from datasets import DamagedFile, UsageError, cache_files, reading, report_line
from results import (
    CONFIG_COLUMNS,
    best_markdown,
    best_trial,
    copy_tree,
    epochs_frame,
    read_json,
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
from search.budget import BUDGET_FILE, TimeBudget
from search.cluster import Resources, check_shared_storage, node_resources, plan_resources
from search.costs import backbone_costs
from search.data import prepare, resolve_task
from search.lock import lock_task
from search.options import ResolvedOptions, SearchOptions
from search.packing import packing_warnings
from search.report import write_task_report
from search.resume import SEARCH_FILE, check_existing, discard_search, finished_record, search_record
from search.retrain import run_retrains, save_model
from search.screen import kept_backbones, screen_backbones
from search.space import baseline_points, search_space, trial_sources
from search.tuner import Outcome, SearchFiles, run_trials
from search.weights import resolve_weights
from trainables import TrialSetup, knob_range

log = logging.getLogger(__name__)
PACKAGES = ("ray", "optuna", "timm", "torch", "torchvision", "pandas", "pyarrow", "numpy")


def versions() -> dict[str, str]:
    return {"python": platform.python_version(), **{p: version(p) for p in PACKAGES}}


class SearchFailed(RuntimeError):
    """The search ran but gave nothing to choose from; the command line exits 1 with this message."""


class SearchInterrupted(RuntimeError):
    """Ctrl-C ended the search early; its state and the tables of what finished are kept for ``--resume``."""


class Prepared:
    """Everything checked and loaded before Ray starts: bad input fails here, with nothing started."""

    def __init__(self, options: SearchOptions):
        started = time.perf_counter()
        out = Path(options.out).expanduser().resolve() / resolve_task(options.task).name
        lock_task(out)  # before any check: a running search is named at once, whatever the flags
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
            "space": {**{k: repr(v) for k, v in search_space(self.options.backbones).items()}, "training": "lp-ft"},
            "prescreen": self.options.prescreen,
            "time_budget_s": self.options.time_budget_s,
        }
        check_existing(self.options, self.files, self.signature)
        self.done = finished_record(self.options)
        self.seconds = time.perf_counter() - started  # decoding and weights: part of a --time-budget
        if self.done:
            log.info("%s: this search already finished (--retrain-again repeats the retrain)", self.data.task.name)


def warn_packing(opts: ResolvedOptions, resources: Resources) -> None:
    """Say which backbones will not fit their share of the GPU, when this machine has the GPUs trials use."""
    if 0 < resources.gpus_per_trial < 1 and torch.cuda.is_available():
        gpu_mib = torch.cuda.get_device_properties(0).total_memory / 2**20
        batch = max(knob_range("batch_size").choices)
        for line in packing_warnings(opts.backbones, opts.image_size, batch, resources.gpus_per_trial, gpu_mib):
            log.warning("%s", line)


def _on_cluster(opts: ResolvedOptions, nodes: list[dict[str, float]]) -> bool:
    """Joined a cluster (nodes may join later) rather than started Ray on this machine alone."""
    return bool(opts.address or os.environ.get("RAY_ADDRESS")) or len(nodes) > 1


@dataclass
class Plan:
    """What the search runs with, decided before the first trial."""

    setup: TrialSetup
    resources: Resources
    backbones: list[str]
    points: list[tuple[str, dict]]
    scores: dict[str, dict]
    pretrained: dict[str, bool]
    elapsed_before: float  # seconds earlier runs of this search spent (--resume)
    stopper: TimeBudget | None


def run_task(prepared: Prepared) -> dict:
    """Search (or continue the search), retrain and write every file of the contract under OUT/TASK; returns
    best.json's content. Ctrl-C raises SearchInterrupted after the tables of what finished are written."""
    begun = time.perf_counter()
    opts, files = prepared.options, prepared.files
    report = start_folder(prepared)
    plan = plan_search(prepared, begun)
    outcome = run_trials(
        plan.setup,
        plan.backbones,
        trials=opts.trials,
        resources=plan.resources,
        files=files,
        resume=opts.resume,
        points=plan.points,
        max_failures=opts.max_failures,
        verbose=opts.verbose,
        stopper=plan.stopper,
    )
    search_wall = plan.elapsed_before + prepared.seconds + time.perf_counter() - begun
    write_json(opts.task_dir / SEARCH_FILE, {**prepared.signature, "elapsed_s": search_wall})
    trials = write_trial_tables(prepared, plan, outcome)
    record = best_record(prepared, plan, trials, search_wall, report)
    if opts.retrain:
        retrain_best(prepared, plan, record)
    write_results(prepared, plan, record, trials, epochs_frame(outcome.records), report)
    return record


def start_folder(prepared: Prepared) -> dict:
    """OUT/TASK made (emptied of an earlier search with --overwrite) and its data report written; returns it."""
    out = prepared.options.task_dir
    out.mkdir(parents=True, exist_ok=True)
    if prepared.options.overwrite:
        discard_search(out, prepared.files)
    report = prepared.data.cache.report()
    write_json(out / "data_report.json", report)
    return report


def plan_search(prepared: Prepared, begun: float) -> Plan:
    """Resources, the trials' setup, the backbones' screening and the points that run first; the time budget."""
    opts, data = prepared.options, prepared.data
    elapsed_before = search_record(opts.task_dir).get("elapsed_s", 0.0) if opts.resume else 0.0
    nodes = node_resources()
    resources = plan_resources(nodes, opts.cpus_per_trial, opts.gpus_per_trial, opts.concurrency)
    warn_packing(opts, resources)
    check_shared_storage(prepared.files.experiment)
    refs = {b: ray.put(p.state_dict) for b, p in prepared.weights.items() if p.state_dict is not None}
    setup = TrialSetup(
        data.cache,
        opts.max_epochs,
        opts.seed,
        opts.cpus_per_trial,
        refs,
        compile=opts.compile,
        data_node=ray.get_runtime_context().get_node_id(),
        # on a cluster (nodes may join later) the decoded images travel once per node through the object store
        data_copy=[ray.put(cache_files(data.cache))] if _on_cluster(opts, nodes) else None,
    )
    scores = screen_backbones(setup, list(opts.backbones), resources)
    backbones = kept_backbones(scores, opts.prescreen)
    warm = [("warm-start", p) for p in prepared.warm_points if p["backbone"] in backbones]
    pretrained = {b: p.state_dict is not None for b, p in prepared.weights.items()}
    recipes = baseline_points(backbones, opts.trials, {b for b, on in pretrained.items() if on})
    points = [*warm, *(("recipe", p) for p in recipes)][: max(1, opts.trials // 2)]
    write_json(opts.task_dir / SEARCH_FILE, {**prepared.signature, "elapsed_s": elapsed_before})
    stopper = None
    if opts.time_budget_s:
        stopper = TimeBudget(
            opts.time_budget_s - elapsed_before - prepared.seconds - (time.perf_counter() - begun),
            opts.max_epochs,
            retrain_scale(data.cache.sizes, opts, resources),
            opts.task_dir / SEARCH_FILE,
            opts.time_budget_s,
        )
    return Plan(setup, resources, backbones, points, scores, pretrained, elapsed_before, stopper)


def write_trial_tables(prepared: Prepared, plan: Plan, outcome: Outcome) -> pd.DataFrame:
    """trials.parquet and epochs.parquet; after Ctrl-C, SearchInterrupted once they are written."""
    opts, out = prepared.options, prepared.options.task_dir
    budget_ended = (out / BUDGET_FILE).is_file()
    sources = trial_sources(prepared.files.study_url())
    finished = [
        {**r, "source": sources.get(r["trial_id"], "sampler")}
        for r in outcome.records
        if r["finished"] and not (budget_ended and not r["history"] and not r["error"])  # never started
    ]
    trials = trials_frame(finished, opts.max_epochs, plan.pretrained)
    write_parquet(out / "trials.parquet", trials)
    write_parquet(out / "epochs.parquet", epochs_frame(outcome.records))
    if outcome.interrupted:
        raise SearchInterrupted(
            f"{prepared.data.task.name}: stopped with {len(finished)} of {opts.trials} trials finished "
            f"(their tables are in {out}; every trial's latest checkpoint is kept)"
        )
    return trials


def best_record(prepared: Prepared, plan: Plan, trials: pd.DataFrame, search_wall: float, report: dict) -> dict:
    """best.json's content before the retrain: the best trial, the search's counts and costs, the provenance."""
    opts, data, out = prepared.options, prepared.data, prepared.options.task_dir
    try:
        best = best_trial(trials)
    except ValueError as e:
        errors = [err for err in trials["error"] if err]
        example = f"; e.g. {errors[0]}" if errors else ""
        raise SearchFailed(f"{e}{example}; every trial is in {out / 'trials.parquet'}") from None
    config = {k: _plain(best[k]) for k in CONFIG_COLUMNS} | {"batch_size": int(best["trained_batch_size"])}
    trial_hours = float(trials["wall_s"].sum()) / 3600
    return {
        "task": data.task.name,
        "classes": list(data.cache.classes),
        "images": sum(data.cache.sizes.values()),
        "trial_id": best["trial_id"],
        "config": config,
        **{k: float(best[k]) for k in ("val_acc", "val_macro_f1", "val_loss")},
        "best_epoch": int(best["best_epoch"]),
        "trials": {"total": len(trials), **status_counts(trials)},
        "search_wall_s": search_wall,
        "limit": f"time budget {opts.time_budget_s:.0f} s" if (out / BUDGET_FILE).is_file() else "trials",
        "backbone_scores": {b: {k: v for k, v in r.items() if k != "backbone"} for b, r in plan.scores.items()},
        "cpu_hours": trial_hours * plan.resources.cpus_per_trial,
        "gpu_hours": trial_hours * plan.resources.gpus_per_trial,
        "pretrained": plan.pretrained[config["backbone"]],
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
            "study": prepared.files.study_url(),
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
        },
    }


def retrain_best(prepared: Prepared, plan: Plan, record: dict) -> None:
    """Train the best configuration on train+val (once per seed), save the first seed's model, test them all, and
    add the test figures and the retrain's cost to ``record``."""
    opts, data, resources, config = prepared.options, prepared.data, plan.resources, record["config"]
    log.info(
        "%s: retraining trial %s's configuration (%s) on train+val for %d epochs, %d seed(s)",
        data.task.name,
        record["trial_id"],
        config["backbone"],
        opts.max_epochs,
        opts.retrain_seeds,
    )
    runs = run_retrains(config, plan.setup, resources, [opts.seed + i for i in range(opts.retrain_seeds)])
    save_model(opts.task_dir / "model", runs[0], config, list(data.cache.classes), opts.image_size)
    record.update(retrain_summary(runs))
    wall = sum(r["wall_s"] for r in runs)
    record["cpu_hours"] += wall * resources.retrain_cpus / 3600
    record["gpu_hours"] += wall * resources.retrain_gpus / 3600


def write_results(
    prepared: Prepared, plan: Plan, record: dict, trials: pd.DataFrame, epochs: pd.DataFrame, report: dict
) -> None:
    """The report, best.json and best.md (last: their presence means the task finished); a copy in --storage."""
    opts, out = prepared.options, prepared.options.task_dir
    costs = backbone_costs(list(opts.backbones), len(prepared.data.cache.classes), opts.image_size)
    costs = {b: {**costs.get(b, {}), **plan.scores.get(b, {})} for b in opts.backbones}
    write_task_report(out, record, trials, epochs, costs, prepared.files.study_url(), report)
    write_json(out / "best.json", record)
    write_text(out / "best.md", best_markdown(record))
    if opts.storage and "://" in opts.storage:  # the tables beside the experiment, for whoever reads the bucket
        copied = copy_tree(out, f"{opts.storage.rstrip('/')}/{opts.task_name}/results", skip=("tune",))
        log.info(
            "%s: copied %d result files to %s/%s/results", opts.task_name, len(copied), opts.storage, opts.task_name
        )


def retrain_scale(sizes: dict[str, int], opts: ResolvedOptions, resources: Resources) -> float:
    """The retrain's cost against one trial's epochs of the same configuration: more images and each seed, on a
    whole node's CPUs (measured here: 2 threads alone ran 2.5-3x faster than 1 beside another trial; counted as
    linear). A GPU trial's share is not counted as slower than the whole GPU."""
    if not opts.retrain:
        return 0.0
    speedup = 1.0 if resources.gpus_per_trial else max(1.0, resources.retrain_cpus / resources.cpus_per_trial)
    return (sizes["train"] + sizes["val"]) / sizes["train"] * opts.retrain_seeds / speedup


def retrain_summary(runs: list[dict]) -> dict:
    """best.json's test fields: the mean over the seeds' retrains (and their spread when there are several); the
    confusion matrix and ``model_test_acc`` are the saved model's (the first seed's)."""
    accuracy = [r["test_acc"] for r in runs]
    f1 = [r["test_macro_f1"] for r in runs]
    return {
        "test_acc": statistics.mean(accuracy),
        "test_macro_f1": statistics.mean(f1),
        "test_loss": statistics.mean(r["test_loss"] for r in runs),
        "test_acc_std": statistics.stdev(accuracy) if len(runs) > 1 else 0.0,
        "test_macro_f1_std": statistics.stdev(f1) if len(runs) > 1 else 0.0,
        "retrain_seeds": len(runs),
        "test_acc_per_seed": accuracy,
        "model_test_acc": runs[0]["test_acc"],
        "test_confusion": runs[0]["confusion"],
        "retrain_wall_s": sum(r["wall_s"] for r in runs),
    }


def warm_start_points(source: str | None, backbones: tuple[str, ...], trials: int) -> list[dict]:
    """The best configurations of an earlier search (OUT/TASK) whose backbones this search has."""
    if source is None:
        return []
    path = Path(source).expanduser() / "trials.parquet"
    if not path.is_file():
        raise UsageError(f"--warm-start {source}: no trials.parquet there; give a finished search's OUT/TASK folder")
    with reading(path, "point --warm-start at another finished search, or leave it out"):
        return top_configs(pd.read_parquet(path), k=max(1, trials // 4), backbones=backbones)


def _plain(value: object) -> object:
    """numpy scalars from a pandas row as plain Python values, for JSON and for the trainable."""
    return value.item() if hasattr(value, "item") else value


def write_summary(out: str | Path) -> str:
    """Rewrite OUT/summary.md and summary.csv from every task's best.json; returns the markdown."""
    out = Path(out).expanduser().resolve()
    bests = []
    for path in sorted(out.glob("*/best.json")):
        try:
            bests.append(
                read_json(path, f"rewrite it with `python -m search {path.parent.name} --resume --retrain-again`")
            )
        except DamagedFile as e:  # the other tasks' rows still count
            log.error("%s", e)
    summary = summary_frame(bests)
    markdown = summary_markdown(summary)
    write_csv(out / "summary.csv", summary)
    write_text(out / "summary.md", markdown)
    return markdown
