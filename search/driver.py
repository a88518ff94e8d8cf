"""One task's search from start to finish: validate, decode, resolve weights, search, retrain, write tables."""

from __future__ import annotations

import logging
import os
import platform
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import version

import pandas as pd
import ray
import torch
from ray import tune

from datasets import atomic_write, cache_pieces
from results import (
    best_markdown,
    best_trial,
    copy_tree,
    epochs_frame,
    priced_variants,
    status_counts,
    trials_frame,
    write_json,
    write_parquet,
    write_text,
)
from search.budget import BUDGET_FILE, TimeBudget
from search.cluster import Resources, check_shared_storage, node_resources, plan_resources
from search.config import CONFIG_FILE, config_text
from search.costs import backbone_costs
from search.errors import SearchFailed, SearchInterrupted
from search.model_dir import save_ensemble, save_model
from search.options import ResolvedOptions
from search.packing import MemoryWatch, packing_warnings
from search.prepare import Prepared
from search.report import write_task_report
from search.resume import SEARCH_FILE, discard_search, search_record
from search.retrain import retrain_scale, retrain_summary, submit_retrains
from search.screen import kept_backbones, screen_backbones
from search.space import baseline_points, space_range, trial_sources, within
from search.tracking import log_retrained, mlflow_callbacks
from search.tuner import Outcome, run_trials
from search.variants import (
    candidates,
    choose_variants,
    extra_retrains,
    retrained_soup,
    trial_config,
    variant_rows,
)
from trainables import TrialSetup

__all__ = [
    "PACKAGES",
    "Plan",
    "best_record",
    "plan_search",
    "retrain_best",
    "run_task",
    "start_folder",
    "versions",
    "watch_memory",
    "write_results",
    "write_trial_tables",
]

log = logging.getLogger(__name__)
PACKAGES = ("ray", "optuna", "timm", "torch", "torchvision", "pandas", "pyarrow", "numpy")


def versions() -> dict[str, str]:
    return {"python": platform.python_version(), **{p: version(p) for p in PACKAGES}}


def watch_memory(opts: ResolvedOptions, resources: Resources) -> list[tune.Callback]:
    """Say now which backbones will not fit their share of the GPU (when this machine has the GPUs trials use);
    the search then estimates the backbones the memory table lacks from their first trial (MemoryWatch)."""
    if resources.gpus_per_trial <= 0:
        return []
    batch = max(space_range("batch_size", opts.space).choices)
    gpu_mib = None
    if resources.gpus_per_trial < 1 and torch.cuda.is_available():
        gpu_mib = torch.cuda.get_device_properties(0).total_memory / 2**20
        for line in packing_warnings(opts.backbones, opts.image_size, batch, resources.gpus_per_trial, gpu_mib):
            log.warning("%s", line)
    return [MemoryWatch(opts.image_size, batch, resources.gpus_per_trial, gpu_mib)]


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
        callbacks=[*mlflow_callbacks(opts.mlflow, opts.task_name), *watch_memory(opts, plan.resources)],
        ranges=opts.space,
    )
    search_wall = plan.elapsed_before + prepared.seconds + time.perf_counter() - begun
    write_json(opts.task_dir / SEARCH_FILE, {**prepared.signature, "elapsed_s": search_wall})
    trials = write_trial_tables(prepared, plan, outcome)
    record = best_record(prepared, plan, trials, search_wall, report)
    if opts.retrain:
        retrain_best(
            prepared,
            plan,
            record,
            trials,
            {r["trial_id"]: r["checkpoint"] for r in outcome.records if r.get("checkpoint")},
        )
    write_results(prepared, plan, record, trials, epochs_frame(outcome.records), report)
    if opts.retrain:
        log_retrained(opts.mlflow, opts.task_name, record)
    return record


def start_folder(prepared: Prepared) -> dict:
    """OUT/TASK made (emptied of an earlier search with --overwrite), the options it runs with (config.toml) and its
    data report written; returns the report."""
    out = prepared.options.task_dir
    out.mkdir(parents=True, exist_ok=True)
    if prepared.options.overwrite:
        discard_search(out, prepared.files)
    atomic_write(out / CONFIG_FILE, lambda p: p.write_text(config_text(prepared.options), encoding="utf-8"))
    report = prepared.data.cache.report()
    write_json(out / "data_report.json", report)
    return report


def plan_search(prepared: Prepared, begun: float) -> Plan:
    """Resources, the trials' setup, the backbones' screening and the points that run first; the time budget."""
    opts, data = prepared.options, prepared.data
    elapsed_before = search_record(opts.task_dir).get("elapsed_s", 0.0) if opts.resume else 0.0
    nodes = node_resources()
    resources = plan_resources(
        nodes,
        opts.cpus_per_trial,
        opts.gpus_per_trial,
        opts.concurrency,
        cluster=_on_cluster(opts, nodes),
        autoscaling=opts.autoscaling,
    )
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
        # on a cluster (nodes may join later) each other node copies the decoded images once, piece by piece
        data_pieces=cache_pieces(data.cache) if resources.cluster else None,
    )
    scores = screen_backbones(setup, list(opts.backbones), resources)
    backbones = kept_backbones(scores, opts.prescreen)
    warm = [("warm-start", p) for p in prepared.warm_points if p["backbone"] in backbones]
    pretrained = {b: p.state_dict is not None for b, p in prepared.weights.items()}
    recipes = baseline_points(backbones, opts.trials, {b for b, on in pretrained.items() if on})
    points = [*warm, *(("recipe", p) for p in recipes)]
    points = [(source, p) for source, p in points if within(p, opts.space)][: max(1, opts.trials // 2)]
    write_json(opts.task_dir / SEARCH_FILE, {**prepared.signature, "elapsed_s": elapsed_before})
    stopper = None
    if opts.time_budget_s:
        stopper = TimeBudget(
            opts.time_budget_s - elapsed_before - prepared.seconds - (time.perf_counter() - begun),
            opts.max_epochs,
            retrain_scale(data.cache.sizes, opts, resources, extra_retrains(opts.soup, opts.ensemble)),
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
    # Ctrl-C between two trials: Ray Tune returns the finished ones alone, before the next one exists
    cut_short = len(outcome.records) < opts.trials and not budget_ended
    if outcome.interrupted or cut_short:
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
    config = trial_config(best)
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


def retrain_best(prepared: Prepared, plan: Plan, record: dict, trials: pd.DataFrame, checkpoints: dict) -> None:
    """Train the best configuration on train+val (once per seed), and the soup's and ensemble's members once each;
    save the variant asked for (ensemble, else soup, else the first seed's single model), test them all, and add
    the test figures, each variant's, and the retrains' cost to ``record``."""
    opts, data, resources, config = prepared.options, prepared.data, plan.resources, record["config"]
    classes = list(data.cache.classes)
    chosen = {}
    if opts.soup or opts.ensemble:
        pool = candidates(trials, checkpoints, opts.soup, opts.ensemble)
        chosen = choose_variants(plan.setup, resources, pool, opts.soup, opts.ensemble) if pool else {}
        for name in ("soup", "ensemble"):
            if name in chosen:
                log.info(
                    "%s: %s of trials %s, val_acc %.3f",
                    data.task.name,
                    name,
                    _members(chosen[name]),
                    chosen[name]["val_acc"],
                )
    rows = trials.set_index("trial_id")
    members = [*chosen.get("soup", {}).get("members", []), *chosen.get("ensemble", {}).get("members", {})]
    configs = {record["trial_id"]: config} | {t: trial_config(rows.loc[t]) for t in members if t != record["trial_id"]}
    log.info(
        "%s: retraining trial %s's configuration (%s) on train+val for %d epochs, %d seed(s)%s",
        data.task.name,
        record["trial_id"],
        config["backbone"],
        opts.max_epochs,
        opts.retrain_seeds,
        f", and {len(configs) - 1} more for the soup and ensemble" if len(configs) > 1 else "",
    )
    seeds = {t: [opts.seed] for t in configs} | {record["trial_id"]: [opts.seed + i for i in range(opts.retrain_seeds)]}
    refs = {t: submit_retrains(c, plan.setup, resources, seeds[t]) for t, c in configs.items()}
    outcomes = {t: ray.get(r) for t, r in refs.items()}
    runs = {t: o[0] for t, o in outcomes.items()}
    soup = None
    if "soup" in chosen:
        soup_state, soup = retrained_soup(chosen, runs, plan.setup, resources, config["backbone"])
    labels = data.cache.load("test")[1]
    backbones = {t: c["backbone"] for t, c in configs.items()}
    record["variants"] = variant_rows(chosen, runs, soup, labels, len(classes), record["trial_id"], backbones)
    saved = "ensemble" if "ensemble" in chosen else "soup" if soup is not None else "single"
    model_dir = opts.task_dir / "model"
    if saved == "ensemble":
        save_ensemble(model_dir, chosen["ensemble"]["members"], runs, configs, classes, opts.image_size, opts.tta)
    elif saved == "soup":
        soup_run = runs[record["trial_id"]] | {"state_dict": soup_state}
        save_model(model_dir, soup_run, config, classes, opts.image_size, tta=opts.tta, soup=chosen["soup"]["members"])
    else:
        save_model(model_dir, runs[record["trial_id"]], config, classes, opts.image_size, tta=opts.tta)
    record.update(retrain_summary(outcomes[record["trial_id"]]))
    record.update(model_variant=saved, tta=opts.tta, variants_asked={"soup": opts.soup, "ensemble": opts.ensemble})
    wall = sum(r["wall_s"] for o in outcomes.values() for r in o)
    record["retrain_wall_s"] = wall
    record["cpu_hours"] += wall * resources.retrain_cpus / 3600
    record["gpu_hours"] += wall * resources.retrain_gpus / 3600


def _members(chosen: dict) -> str:
    members = chosen["members"]
    return ", ".join(f"{t} x{members[t]}" if isinstance(members, dict) and members[t] > 1 else t for t in members)


def write_results(
    prepared: Prepared, plan: Plan, record: dict, trials: pd.DataFrame, epochs: pd.DataFrame, report: dict
) -> None:
    """The report, best.json and best.md (last: their presence means the task finished); a copy in --storage."""
    opts, out = prepared.options, prepared.options.task_dir
    costs = backbone_costs(list(opts.backbones), len(prepared.data.cache.classes), opts.image_size)
    costs = {b: {**costs.get(b, {}), **plan.scores.get(b, {})} for b in opts.backbones}
    if "variants" in record:
        record["variants"] = priced_variants(record["variants"], costs)
    write_task_report(out, record, trials, epochs, costs, prepared.files.study_url(), report)
    write_json(out / "best.json", record)
    write_text(out / "best.md", best_markdown(record))
    if opts.storage and "://" in opts.storage:  # the tables beside the experiment, for whoever reads the bucket
        copied = copy_tree(out, f"{opts.storage.rstrip('/')}/{opts.task_name}/results", skip=("tune",))
        log.info(
            "%s: copied %d result files to %s/%s/results", opts.task_name, len(copied), opts.storage, opts.task_name
        )
