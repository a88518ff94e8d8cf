"""A finished task's reading material: the top-k and backbone tables, the plots and report.html in OUT/TASK."""

from __future__ import annotations

import logging
from pathlib import Path

import optuna
import pandas as pd

from datasets import DamagedFile
from results import (
    accuracy_latency,
    backbone_frame,
    confusion,
    family_frame,
    importance,
    learning_curves,
    markdown_table,
    progress_frame,
    read_json,
    report_html,
    search_progress,
    summary_frame,
    summary_markdown,
    top_confusions,
    top_k_frame,
    variants_frame,
    write_csv,
    write_parquet,
    write_text,
)
from search.cluster.packing import memory_check

__all__ = ["MIN_TRIALS_FOR_IMPORTANCE", "param_importances", "write_summary", "write_task_report"]

log = logging.getLogger(__name__)


MIN_TRIALS_FOR_IMPORTANCE = 3


def param_importances(study_url: str) -> dict[str, float]:
    """Optuna's PED-ANOVA importances over the study's completed trials; empty when they cannot be computed
    (fewer than three completed trials, or nothing varied)."""
    try:
        study = optuna.load_study(study_name=None, storage=study_url)
        completed = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if len(completed) < MIN_TRIALS_FOR_IMPORTANCE:
            log.info("no hyperparameter importance: %d completed trials", len(completed))
            return {}
        return optuna.importance.get_param_importances(study, evaluator=optuna.importance.PedAnovaImportanceEvaluator())
    except (ValueError, RuntimeError) as e:
        log.info("no hyperparameter importance: %s", e)
        return {}


def write_task_report(
    out: Path, best: dict, trials: pd.DataFrame, epochs: pd.DataFrame, costs: dict, study_url: str, data: dict
) -> dict[str, Path]:
    """Write top_k, backbones (parquet and markdown), the PNG plots and report.html; returns the plots by title."""
    top = top_k_frame(trials)
    backbones = backbone_frame(trials, costs)
    tables = {"Top configurations": top, "Backbones: accuracy, size and latency (Pareto front marked)": backbones}
    for name, (title, frame) in zip(("top_k", "backbones"), tables.items(), strict=True):
        write_parquet(out / f"{name}.parquet", frame)
        write_text(out / f"{name}.md", markdown_table(frame, title))
    tables["Best per family"] = family_frame(backbones)
    plots = {
        "Learning curves of the top trials": learning_curves(epochs, top, out / "learning_curves.png"),
        "Best so far against trials and compute": search_progress(
            progress_frame(trials, epochs), out / "search_progress.png"
        ),
        "Accuracy against latency by backbone": accuracy_latency(backbones, out / "accuracy_latency.png"),
    }
    if best.get("variants"):
        tables["Model variants: tested once (saved: what model/ holds)"] = variants_frame(best)
    memory = memory_check(trials, epochs, best["provenance"]["image_size"])
    if len(memory):
        tables["GPU memory per trial: measured peak against the estimate (MiB of tensors)"] = memory
    if importances := param_importances(study_url):
        plots["Hyperparameter importance"] = importance(importances, out / "importance.png")
    if "test_confusion" in best:
        confusions = top_confusions(best["test_confusion"], best["classes"])
        tables["Most frequent test confusions"] = confusions
        plots["Test confusion matrix"] = confusion(
            best["test_confusion"], best["classes"], confusions, out / "confusion.png"
        )
    write_text(out / "report.html", report_html(best, tables, plots, data))
    return plots


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
