"""The report's pictures as PNG files (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from results.io import atomic_write  # noqa: E402

__all__ = ["MAX_MATRIX_CLASSES", "accuracy_latency", "confusion", "importance", "learning_curves", "search_progress"]

MAX_MATRIX_CLASSES = 20  # above this the confusion matrix is unreadable: the top confusions are drawn instead


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=110))
    plt.close(fig)
    return path


def learning_curves(epochs: pd.DataFrame, top: pd.DataFrame, path: Path) -> Path:
    """Validation accuracy and training loss per epoch of the top trials."""
    fig, (acc, loss) = plt.subplots(1, 2, figsize=(10, 4))
    for _, row in top.iterrows():
        mine = epochs[epochs["trial_id"] == row["trial_id"]]
        label = f"#{row['rank']} {row['backbone']} d{row['freeze_depth']}"
        acc.plot(mine["epoch"], mine["val_acc"], marker="o", label=label)
        loss.plot(mine["epoch"], mine["train_loss"], marker="o", label=label)
    acc.set(title="validation accuracy of the top trials", xlabel="epoch", ylabel="accuracy")
    loss.set(title="training loss", xlabel="epoch", ylabel="loss")
    acc.legend(fontsize=8)
    return _save(fig, path)


def search_progress(progress: pd.DataFrame, path: Path) -> Path:
    """Best validation accuracy so far against trials and against compute (trial-epochs)."""
    fig, (by_trial, by_compute) = plt.subplots(1, 2, figsize=(10, 4))
    by_trial.scatter(progress["order"], progress["val_acc"], s=14, alpha=0.5, label="trial")
    by_trial.step(progress["order"], progress["best_val_acc"], where="post", label="best so far")
    by_trial.set(title="best so far against trials", xlabel="trials started", ylabel="validation accuracy")
    by_trial.legend(fontsize=8)
    by_compute.step(progress["trial_epochs"], progress["best_val_acc"], where="post")
    by_compute.set(title="best so far against compute", xlabel="trial-epochs spent", ylabel="validation accuracy")
    return _save(fig, path)


def importance(importances: dict[str, float], path: Path) -> Path:
    """Optuna's hyperparameter importances as horizontal bars."""
    names = list(importances)[::-1]
    fig, ax = plt.subplots(figsize=(6, 0.4 * len(names) + 1.2))
    ax.barh(names, [importances[n] for n in names])
    ax.set(title="hyperparameter importance (Optuna's PED-ANOVA, completed trials)", xlabel="importance")
    return _save(fig, path)


def accuracy_latency(backbones: pd.DataFrame, path: Path) -> Path:
    """Each backbone's best validation accuracy against its inference latency; the Pareto front joined."""
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.scatter(backbones["latency_ms"], backbones["best_val_acc"], s=20 + 10 * backbones["params_m"].fillna(0))
    for _, row in backbones.iterrows():
        ax.annotate(f"{row['backbone']} ({row['params_m']:.1f}M)", (row["latency_ms"], row["best_val_acc"]))
    front = backbones[backbones["pareto"]].sort_values("latency_ms")
    ax.plot(front["latency_ms"], front["best_val_acc"], "--", color="tab:red", label="Pareto front")
    ax.set(title="accuracy against latency", xlabel="inference latency, ms per image", ylabel="best val accuracy")
    ax.legend(fontsize=8)
    return _save(fig, path)


def confusion(matrix: list[list[int]], classes: list[str], top: pd.DataFrame, path: Path) -> Path:
    """The test confusion matrix, or for many classes the most frequent confusions."""
    if len(classes) <= MAX_MATRIX_CLASSES:
        data = np.asarray(matrix)
        fig, ax = plt.subplots(figsize=(1.2 + 0.5 * len(classes), 1 + 0.5 * len(classes)))
        ax.imshow(data, cmap="Blues")
        for (t, p), n in np.ndenumerate(data):
            ax.text(p, t, str(n), ha="center", va="center", color="white" if n > data.max() / 2 else "black")
        ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
        ax.set_yticks(range(len(classes)), classes)
        ax.set(title="test confusion matrix", xlabel="predicted", ylabel="true")
    else:
        labels = [f"{t} -> {p}" for t, p in zip(top["true"], top["predicted"], strict=True)][::-1]
        fig, ax = plt.subplots(figsize=(7, 0.35 * len(labels) + 1.2))
        ax.barh(labels, top["count"].tolist()[::-1])
        ax.set(title="most frequent test confusions (true -> predicted)", xlabel="images")
    return _save(fig, path)
