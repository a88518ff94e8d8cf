"""Pure functions from a task's tables to the frames people compare: the top configurations, the backbones against
their cost, and the search's progress."""

from __future__ import annotations

import math
import re

import pandas as pd

from results.tables import CONFIG_COLUMNS, VALIDATION_COLUMNS, ranked_trials

__all__ = [
    "BACKBONE_COLUMNS",
    "PROGRESS_COLUMNS",
    "TOP_COLUMNS",
    "backbone_frame",
    "family",
    "family_frame",
    "pareto_front",
    "progress_frame",
    "top_confusions",
    "top_k_frame",
]

TOP_COLUMNS = [
    "rank",
    "trial_id",
    *CONFIG_COLUMNS,
    *VALIDATION_COLUMNS,
    "epochs_run",
    "wall_s",
]
BACKBONE_COLUMNS = [
    "backbone",
    "family",
    "logme",
    "probe_val_acc",
    "trials",
    "best_val_acc",
    "best_trial",
    "params_m",
    "latency_ms",
    "pareto",
]
PROGRESS_COLUMNS = ["order", "trial_id", "val_acc", "best_val_acc", "trial_epochs", "trial_s"]


def top_k_frame(trials: pd.DataFrame, k: int = 5) -> pd.DataFrame:
    """The ``k`` best configurations with their validation metrics and cost."""
    ranked = ranked_trials(trials).head(k)
    ranked = ranked.assign(rank=range(1, len(ranked) + 1))
    return ranked[TOP_COLUMNS].reset_index(drop=True)


def pareto_front(accuracy: list[float], cost: list[float]) -> list[bool]:
    """For each point, whether no other point is at least as accurate and as cheap, and better in one of them."""
    points = list(zip(accuracy, cost, strict=True))
    return [
        math.isfinite(a)
        and not any((a2 >= a and c2 <= c) and (a2 > a or c2 < c) for a2, c2 in points if math.isfinite(a2))
        for a, c in points
    ]


def family(backbone: str) -> str:
    """The architecture family users choose between: ``resnet18`` -> resnet, ``mobilenetv3_small_100`` ->
    mobilenet, ``tf_efficientnet_lite0`` -> efficientnet."""
    name = re.sub(r"^(tf|tv|timm)_", "", backbone)
    return re.match(r"[a-z]+?(?=v?\d|_|$)", name).group(0) if re.match(r"[a-z]", name) else name


def backbone_frame(trials: pd.DataFrame, costs: dict[str, dict[str, float]]) -> pd.DataFrame:
    """One row per backbone: its transferability score (LogME, measured before the search) and fitted probe's
    validation accuracy, its best validation accuracy in the search, its size and inference latency, and whether it
    is on the accuracy-latency Pareto front. ``costs``: backbone -> ``{"params_m", "latency_ms", "logme",
    "probe_val_acc"}`` (missing ones are NaN)."""
    ranked = ranked_trials(trials)
    rows = []
    for backbone in sorted(set(trials["backbone"]) | set(costs)):
        mine = ranked[ranked["backbone"] == backbone]
        rows.append(
            {
                "backbone": backbone,
                "family": family(backbone),
                "logme": costs.get(backbone, {}).get("logme", math.nan),
                "probe_val_acc": costs.get(backbone, {}).get("probe_val_acc", math.nan),
                "trials": int((trials["backbone"] == backbone).sum()),
                "best_val_acc": float(mine["val_acc"].iloc[0]) if len(mine) else math.nan,
                "best_trial": mine["trial_id"].iloc[0] if len(mine) else "",
                "params_m": costs.get(backbone, {}).get("params_m", math.nan),
                "latency_ms": costs.get(backbone, {}).get("latency_ms", math.nan),
            }
        )
    frame = pd.DataFrame(rows, columns=BACKBONE_COLUMNS[:-1])
    frame["pareto"] = pareto_front(frame["best_val_acc"].tolist(), frame["latency_ms"].tolist())
    return frame.sort_values("best_val_acc", ascending=False, na_position="last").reset_index(drop=True)


def family_frame(backbones: pd.DataFrame) -> pd.DataFrame:
    """The best validation accuracy per family (ResNet, EfficientNet, MobileNet, ...) and which backbone gave it."""
    best = backbones.dropna(subset=["best_val_acc"]).sort_values("best_val_acc", ascending=False)
    return best.drop_duplicates("family")[["family", "backbone", "best_val_acc"]].reset_index(drop=True)


def progress_frame(trials: pd.DataFrame, epochs: pd.DataFrame) -> pd.DataFrame:
    """The search's best validation accuracy after each trial, in the order trials started, with the compute spent
    so far (trial-epochs and trial-seconds)."""
    started = epochs.groupby("trial_id")["timestamp"].min() if len(epochs) else pd.Series(dtype=float)
    ordered = trials.assign(start=trials["trial_id"].map(started)).sort_values(["start", "trial_id"])
    accuracy = ordered["val_acc"].where(ordered["status"] != "ERROR")
    return pd.DataFrame(
        {
            "order": range(1, len(ordered) + 1),
            "trial_id": ordered["trial_id"].to_numpy(),
            "val_acc": accuracy.to_numpy(),
            "best_val_acc": accuracy.cummax().ffill().to_numpy(),  # an errored trial keeps the best so far
            "trial_epochs": ordered["epochs_run"].cumsum().to_numpy(),
            "trial_s": ordered["wall_s"].cumsum().to_numpy(),
        },
        columns=PROGRESS_COLUMNS,
    )


def top_confusions(confusion: list[list[int]], classes: list[str], k: int = 10) -> pd.DataFrame:
    """The ``k`` most frequent mistakes: true class, predicted class, count."""
    pairs = [
        (classes[t], classes[p], n) for t, row in enumerate(confusion) for p, n in enumerate(row) if t != p and n > 0
    ]
    pairs.sort(key=lambda x: -x[2])
    return pd.DataFrame(pairs[:k], columns=["true", "predicted", "count"])
