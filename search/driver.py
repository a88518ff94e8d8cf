"""One task's search from start to finish: validate, decode, resolve weights, search, retrain, write tables."""

from __future__ import annotations

import dataclasses
import logging
import math
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
from search.cluster.packing import MemoryWatch, packing_warnings
from search.cluster.session import Resources, check_shared_storage, node_resources, plan_resources
from search.command_line.config_file import CONFIG_FILE, config_text
from search.command_line.options import ResolvedOptions
from search.failures import SearchFailed, SearchInterrupted
from search.final.choose import (
    AUTO_MEMBERS,
    Blend,
    Choice,
    candidates,
    choose_variants,
    ensemble_choice,
    flip_pays,
    retrained_soup,
    trial_config,
    variant_rows,
)
from search.final.model_dir import save_ensemble, save_model
from search.final.retrain import retrain_summary, submit_retrains
from search.inputs.prepare import Prepared
from search.inputs.resume import discard_search
from search.outputs import write_task_report
from search.tuning.budget import TABLES_S, Costs, TimeBudget, member_cost
from search.tuning.costs import backbone_costs
from search.tuning.ledger import TrialLedger
from search.tuning.prescreen import kept_backbones, measure_speedup, screen_backbones
from search.tuning.space import baseline_points, space_range, trial_sources, within
from search.tuning.tracking import log_retrained, mlflow_callbacks
from search.tuning.tuner import Outcome, run_trials
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


def watch_memory(opts: ResolvedOptions, resources: Resources, ledger: TrialLedger) -> list[tune.Callback]:
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
    return [MemoryWatch(ledger, opts.image_size, batch, resources.gpus_per_trial, gpu_mib)]


def _on_cluster(opts: ResolvedOptions, nodes: list[dict[str, float]]) -> bool:
    """Joined a cluster (nodes may join later) rather than started Ray on this machine alone."""
    return bool(opts.address or os.environ.get("RAY_ADDRESS")) or len(nodes) > 1


@dataclass(frozen=True)
class Plan:
    """What the search runs with, decided before the first trial."""

    setup: TrialSetup
    resources: Resources
    backbones: list[str]
    points: list[tuple[str, dict]]
    scores: dict[str, dict]
    pretrained: dict[str, bool]
    ledger: TrialLedger
    stopper: TimeBudget | None
    screening_s: float = 0.0
    speedup: float = 1.0  # the retrain's threads over a trial's (measured with a time budget)

    def fitted_probes(self) -> dict[str, float]:
        """The screening's fitted probes of the pretrained backbones searched (a random one's features are no
        probe's), by name: results ASHA counts at every rung."""
        return {
            f"fitted probe {b}": self.scores[b]["probe_val_acc"]
            for b in self.backbones
            if self.pretrained.get(b) and "probe_val_acc" in self.scores.get(b, {})
        }


def run_task(prepared: Prepared) -> dict:
    """Search (or continue the search), retrain and write every file of the contract under OUT/TASK; returns
    best.json's content. Ctrl-C raises SearchInterrupted after the tables of what finished are written."""
    begun = time.perf_counter()
    opts, files = prepared.options, prepared.files
    report = start_folder(prepared)
    plan = plan_search(prepared, begun)
    searching = time.perf_counter()
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
        callbacks=[*mlflow_callbacks(opts.mlflow, opts.task_name), *watch_memory(opts, plan.resources, plan.ledger)],
        ranges=opts.space,
        known=plan.fitted_probes(),
        ledger=plan.ledger,
    )
    search_wall = plan.ledger.elapsed()
    plan.ledger.save()  # the seconds the search ran, for a --resume after Ctrl-C
    trials, epochs = write_trial_tables(prepared, plan, outcome)
    record = best_record(prepared, plan, trials, search_wall, report)
    stages = {
        "prepare": prepared.seconds + searching - begun - plan.screening_s,
        "screening": plan.screening_s,
        "search": time.perf_counter() - searching,
    }
    if opts.retrain:
        final = time.perf_counter()
        record = retrain_best(prepared, plan, record, trials, outcome.records)
        stages["final"] = time.perf_counter() - final
    tables = time.perf_counter()
    record = write_results(prepared, plan, {**record, "stages_s": _rounded(stages)}, trials, epochs, report)
    stages["tables"] = time.perf_counter() - tables
    if plan.stopper is not None:
        whole = plan.ledger.elapsed()
        plan.stopper.write(actual={**_rounded(stages), "whole_s": round(whole, 1)})
    if opts.retrain:
        log_retrained(opts.mlflow, opts.task_name, record)
    return record


def _rounded(seconds: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 1) for k, v in seconds.items()}


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
    ledger = TrialLedger.open(prepared.files.ledger, fresh=not opts.resume)
    earlier, elapsed_before = ledger.search, ledger.spent_s
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
    screening = time.perf_counter()
    scores = screen_backbones(setup, list(opts.backbones), resources, earlier.get("screening"))
    backbones = kept_backbones(scores, opts.prescreen)
    warm = [("warm-start", p) for p in prepared.warm_points if p["backbone"] in backbones]
    pretrained = {b: p.state_dict is not None for b, p in prepared.weights.items()}
    recipes = baseline_points(backbones, opts.trials, {b for b, on in pretrained.items() if on})
    points = [*warm, *(("recipe", p) for p in recipes)]
    points = [(source, p) for source, p in points if within(p, opts.space)][: max(1, opts.trials // 2)]
    speedup = 1.0
    if opts.time_budget_s and opts.retrain:
        speedup = earlier.get("speedup") or measure_speedup(setup, resources, backbones[0])
    ledger.start(prepared.definition(scores, speedup), elapsed_before + prepared.seconds + time.perf_counter() - begun)
    stopper = None
    if opts.time_budget_s:
        stopper = TimeBudget(
            opts.time_budget_s,
            plan_costs(scores, speedup, resources, data.cache.sizes, opts, setup.progressive),
            (opts.ensemble or AUTO_MEMBERS) if opts.retrain else 0,
            ledger,
            data.cache.load("val")[1],
        )
    screening = time.perf_counter() - screening
    return Plan(setup, resources, backbones, points, scores, pretrained, ledger, stopper, screening, speedup)


def plan_costs(
    scores: dict[str, dict],
    speedup: float,
    resources: Resources,
    sizes: dict[str, int],
    opts: ResolvedOptions,
    progressive: bool,
) -> Costs:
    """The time budget's measured constants: each backbone's forward pass per image at the retrain's threads (the
    screening's, sped up when it ran on fewer threads) and its head fit."""
    ok = {b: r for b, r in scores.items() if "forward_s" in r}
    forward = {b: r["forward_s"] / (speedup if r["threads"] < resources.retrain_cpus else 1.0) for b, r in ok.items()}
    heads = {b: r["head_s"] for b, r in ok.items()}
    return Costs(forward, heads, speedup, dict(sizes), opts.image_size, opts.max_epochs, progressive)


def write_trial_tables(prepared: Prepared, plan: Plan, outcome: Outcome) -> tuple[pd.DataFrame, pd.DataFrame]:
    """trials.parquet and epochs.parquet, returned; after Ctrl-C, SearchInterrupted once they are written."""
    opts, out = prepared.options, prepared.options.task_dir
    budget_ended = bool(plan.ledger.ended_by)
    sources = trial_sources(prepared.files.study_url())
    finished = [
        {**r, "source": sources.get(r["trial_id"], "sampler")}
        for r in outcome.records
        if r["finished"] and not (budget_ended and not r["history"] and not r["error"])  # never started
    ]
    trials, epochs = trials_frame(finished, opts.max_epochs, plan.pretrained), epochs_frame(outcome.records)
    write_parquet(out / "trials.parquet", trials)
    write_parquet(out / "epochs.parquet", epochs)
    # Ctrl-C between two trials: Ray Tune returns the finished ones alone, before the next one exists (with a time
    # budget only the budget ends a search)
    cut_short = not budget_ended and (bool(opts.time_budget_s) or len(outcome.records) < opts.trials)
    if outcome.interrupted or cut_short:
        raise SearchInterrupted(
            f"{prepared.data.task.name}: stopped with {len(finished)} of {opts.trials} trials finished "
            f"(their tables are in {out}; every trial's latest checkpoint is kept)"
        )
    return trials, epochs


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
        "val_n": int(best["val_n"]),
        "best_epoch": int(best["best_epoch"]),
        "trials": {"total": len(trials), **status_counts(trials)},
        "search_wall_s": search_wall,
        "limit": f"time budget {opts.time_budget_s:.0f} s: {plan.ledger.ended_by}"
        if plan.ledger.ended_by
        else "trials",
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


def retrain_best(prepared: Prepared, plan: Plan, record: dict, trials: pd.DataFrame, records: list[dict]) -> dict:
    """Train the best configuration on train+val (once per seed), and the soup's and ensemble's members once each;
    save the variant chosen (ensemble, else soup, else the first seed's single model), test them all; returns
    ``record`` with the test figures, each variant's, the choice and why, and the retrains' cost. With a time budget the
    driver chooses the ensemble and test-time augmentation itself: what fits the time left and raises validation
    accuracy."""
    opts, data, resources, config = prepared.options, prepared.data, plan.resources, record["config"]
    classes = list(data.cache.classes)
    checkpoints = {r["trial_id"]: r["checkpoint"] for r in records if r.get("checkpoint")}
    # a probe's retrain runs the epochs its trial kept (0: the head fitted on train+val alone)
    kept = {
        r["trial_id"]: int(r["history"][-1].get("kept_epoch", opts.max_epochs))
        for r in records
        if r["history"] and r["history"][-1].get("on_features")
    }
    choice = Choice(tta=opts.tta)
    if plan.stopper is not None:
        choice = _budgeted_choice(prepared, plan, trials, checkpoints, record["trial_id"])
    elif opts.soup or opts.ensemble:
        pool = candidates(trials, checkpoints, opts.soup, opts.ensemble)
        if pool:
            choice = choose_variants(plan.setup, resources, pool, opts.soup, opts.ensemble, opts.tta)
    for name, blend in (("soup", choice.soup), ("ensemble", choice.ensemble)):
        if blend is not None:
            log.info("%s: %s of trials %s, val_acc %.3f", data.task.name, name, blend, blend.val_acc)
    rows = trials.set_index("trial_id")
    others = [t for t in choice.members() if t != record["trial_id"]]
    configs = {record["trial_id"]: config} | {t: trial_config(rows.loc[t]) for t in others}
    log.info(
        "%s: retraining trial %s's configuration (%s) on train+val, %d seed(s)%s",
        data.task.name,
        record["trial_id"],
        config["backbone"],
        opts.retrain_seeds,
        f", and {len(configs) - 1} more for the soup and ensemble" if len(configs) > 1 else "",
    )
    seeds = {t: [opts.seed] for t in configs} | {record["trial_id"]: [opts.seed + i for i in range(opts.retrain_seeds)]}
    refs = {t: submit_retrains(c, plan.setup, resources, seeds[t], kept.get(t)) for t, c in configs.items()}
    outcomes = {t: ray.get(r) for t, r in refs.items()}
    runs = {t: o[0] for t, o in outcomes.items()}
    soup = None
    if choice.soup is not None:
        soup_state, soup = retrained_soup(choice.soup, runs, plan.setup, resources, config["backbone"])
    labels = data.cache.load("test")[1]
    backbones = {t: c["backbone"] for t, c in configs.items()}
    variants = variant_rows(choice, runs, soup, labels, len(classes), record["trial_id"], backbones)
    saved = "ensemble" if choice.ensemble is not None else "soup" if soup is not None else "single"
    model_dir, tta = opts.task_dir / "model", choice.tta
    if saved == "ensemble":
        save_ensemble(model_dir, dict(choice.ensemble.members), runs, configs, classes, opts.image_size, tta)
    elif saved == "soup":
        soup_run = runs[record["trial_id"]] | {"state_dict": soup_state}
        save_model(model_dir, soup_run, config, classes, opts.image_size, tta=tta, soup=list(choice.soup.members))
    else:
        save_model(model_dir, runs[record["trial_id"]], config, classes, opts.image_size, tta=tta)
    saved_row = next(r for r in variants if r["variant"] == saved and r["tta"] == tta)
    wall = sum(r["wall_s"] for o in outcomes.values() for r in o)
    return {
        **record,
        "variants": variants,
        **retrain_summary(outcomes[record["trial_id"]]),
        "model_variant": saved,
        "tta": tta,
        "saved_test_acc": saved_row["test_acc"],
        "variants_asked": {"soup": opts.soup, "ensemble": opts.ensemble, "auto": plan.stopper is not None},
        "variant_reason": choice.why,
        "retrain_wall_s": wall,
        "cpu_hours": record["cpu_hours"] + wall * resources.retrain_cpus / 3600,
        "gpu_hours": record["gpu_hours"] + wall * resources.retrain_gpus / 3600,
    }


def _budgeted_choice(prepared: Prepared, plan: Plan, trials: pd.DataFrame, checkpoints: dict, best_id: str) -> Choice:
    """With --time-budget: the ensemble (up to --ensemble, else ``AUTO_MEMBERS``) whose members' retrains fit the
    time left, kept when it beats the best trial on validation; test-time augmentation when the time left still holds
    its validation pass and it raises validation accuracy; and why, in one sentence."""
    opts, budget = prepared.options, plan.stopper
    size = opts.ensemble or AUTO_MEMBERS
    pool = candidates(trials, checkpoints, False, size, limit=None)  # ensemble_choice keeps the best distinct ones
    if len(pool) < 2:
        return Choice(why="one trial to choose from: the single model")
    chosen = choose_variants(plan.setup, plan.resources, pool, False, 0)
    labels = prepared.data.cache.load("val")[1]
    entries = plan.ledger.entries
    costs = {t: member_cost(budget.costs, entries[t]) if t in entries else math.inf for t, _, _ in pool}
    # choosing is done: what is left goes to the members' retrains and tests, and then the tables
    allowance = budget.remaining() - TABLES_S - costs.get(best_id, 0.0)
    extra = {t: (0.0 if t == best_id else c) for t, c in costs.items()}
    members, accuracy = ensemble_choice([t for t, _, _ in pool], chosen.probs, labels, size, extra, allowance)
    single = chosen.val_acc.get(best_id, -1.0)
    spent = sum(extra[t] for t in members)
    if len(members) > 1 and accuracy > single:
        chosen = dataclasses.replace(chosen, ensemble=Blend(members, accuracy))
        why = (
            f"ensemble of {len(members)}: val_acc {accuracy:.3f} against the single model's {single:.3f}, "
            f"its {len(members) - 1} extra retrain(s) planned at {spent:.0f} s of the {allowance:.0f} s left"
        )
    else:
        members = {best_id: 1}
        why = f"single model: no ensemble that fits the {allowance:.0f} s left beat its val_acc {single:.3f}"
    check = sum(budget.costs.forward_s.get(entries[t].backbone, 0.0) for t in members if t in entries)
    check *= len(labels)
    if budget.remaining() - TABLES_S - costs.get(best_id, 0.0) - spent < check:
        return dataclasses.replace(chosen, why=why + "; no time left to try test-time augmentation")
    probs = {t: chosen.probs[t] for t in members}
    pays, with_flip = flip_pays(plan.setup, plan.resources, members, pool, probs, labels)
    why += f"; test-time augmentation {'on' if pays else 'off'} (val_acc {with_flip:.3f} with it)"
    return dataclasses.replace(chosen, tta=pays, why=why)


def write_results(
    prepared: Prepared, plan: Plan, record: dict, trials: pd.DataFrame, epochs: pd.DataFrame, report: dict
) -> dict:
    """The report, best.json and best.md (last: their presence means the task finished); a copy in --storage.
    Returns best.json's content: ``record`` with each variant's cost."""
    opts, out = prepared.options, prepared.options.task_dir
    costs = backbone_costs(list(opts.backbones), len(prepared.data.cache.classes), opts.image_size)
    costs = {b: {**costs.get(b, {}), **plan.scores.get(b, {})} for b in opts.backbones}
    if "variants" in record:
        record = {**record, "variants": priced_variants(record["variants"], costs)}
    write_task_report(out, record, trials, epochs, costs, prepared.files.study_url(), report)
    write_json(out / "best.json", record)
    write_text(out / "best.md", best_markdown(record))
    if opts.storage and "://" in opts.storage:  # the tables beside the experiment, for whoever reads the bucket
        copied = copy_tree(out, f"{opts.storage.rstrip('/')}/{opts.task_name}/results", skip=("tune",))
        log.info(
            "%s: copied %d result files to %s/%s/results", opts.task_name, len(copied), opts.storage, opts.task_name
        )
    return record
