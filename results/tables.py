"""Pure functions from a search's trial records to the contract's tables.

A trial record is a plain dict: ``trial_id``, ``config`` (the search-space values), ``history`` (one dict per
reported epoch), ``error`` (None or the reason), ``node``, ``failures`` (how often it was restarted) and ``source``
(where its configuration came from).
"""

from __future__ import annotations

import math

import pandas as pd

from trainables.trial_config import KNOBS

__all__ = [
    "CONFIG_COLUMNS",
    "EPOCH_COLUMNS",
    "STATUSES",
    "SUMMARY_COLUMNS",
    "TRIAL_COLUMNS",
    "VALIDATION_COLUMNS",
    "VARIANT_COLUMNS",
    "best_markdown",
    "best_rows",
    "best_trial",
    "epochs_frame",
    "finished_trials",
    "interval",
    "markdown_table",
    "marks",
    "number",
    "ranked_trials",
    "status_counts",
    "stopped_early",
    "summary_frame",
    "summary_markdown",
    "top_configs",
    "trial_status",
    "trials_frame",
    "priced_variants",
    "variants_frame",
    "wilson",
]

CONFIG_COLUMNS = list(KNOBS)  # TrialConfig's fields, in its order
EPOCH_COLUMNS = [
    "trial_id",
    "epoch",
    "train_loss",
    "val_loss",
    "val_acc",
    "val_macro_f1",
    "img_per_s",
    "wall_s",
    "batch_size",
    "peak_memory_mb",
    "device",
    "timestamp",
]
# a trial's best epoch on validation: accuracy with its 95% Wilson interval and the photos it was measured on
VALIDATION_COLUMNS = ["val_acc", "val_acc_low", "val_acc_high", "val_n", "val_macro_f1", "val_loss"]
TRIAL_COLUMNS = [
    "trial_id",
    "status",
    "source",
    *CONFIG_COLUMNS,
    *VALIDATION_COLUMNS,
    "best_epoch",
    "epochs_run",
    "wall_s",
    "node",
    "pretrained",
    "warm_head",
    "trained_batch_size",
    "failures",
    "error",
]
STATUSES = ("TERMINATED", "STOPPED", "ERROR")


def wilson(accuracy: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """The 95% Wilson score interval of an accuracy measured on ``n`` photos ((nan, nan) for none): unlike the
    normal approximation it stays inside 0..1 and is honest near 1, where these accuracies live."""
    if not n or not _finite(accuracy):
        return math.nan, math.nan
    centre = (accuracy + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(accuracy * (1 - accuracy) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def interval(accuracy: float, n: int | None) -> str:
    """``0.954 (95% CI 0.909-0.978, 153 photos)``, as ``best.md`` and the report print an accuracy."""
    if not n or not _finite(accuracy):
        return number(accuracy)
    low, high = wilson(accuracy, int(n))
    return f"{accuracy:.3f} (95% CI {low:.3f}–{high:.3f}, {int(n)} photos)"


def epochs_frame(records: list[dict]) -> pd.DataFrame:
    """One row per trial and epoch; an epoch reported twice (a trial restored mid-epoch) is kept once."""
    rows = [
        {"trial_id": r["trial_id"], **{c: h.get(c) for c in EPOCH_COLUMNS[1:]}} for r in records for h in r["history"]
    ]
    frame = pd.DataFrame(rows, columns=EPOCH_COLUMNS)
    frame = frame.drop_duplicates(["trial_id", "epoch"], keep="last")
    return frame.astype({"epoch": "int64"}).sort_values(["trial_id", "epoch"]).reset_index(drop=True)


def _finite(x: object) -> bool:
    return isinstance(x, int | float) and math.isfinite(x)


def trial_status(record: dict, max_epochs: int) -> str:
    if record.get("error"):
        return "ERROR"
    return (
        "STOPPED"
        if stopped_early(max((h["epoch"] for h in record["history"]), default=0), max_epochs)
        else "TERMINATED"
    )


def stopped_early(epochs: int, max_epochs: int) -> bool:
    """A trial that ended without error before its last epoch: ASHA or the time budget stopped it."""
    return epochs < max_epochs


def trials_frame(records: list[dict], max_epochs: int, pretrained: dict[str, bool] | None = None) -> pd.DataFrame:
    """One row per trial: status, config, its best epoch's validation metrics, cost, where it ran and whether its
    backbone started from pretrained weights (``pretrained``: backbone -> bool)."""
    rows = []
    for r in records:
        good = [h for h in r["history"] if _finite(h.get("val_acc")) and _finite(h.get("val_loss"))]
        best = max(good, key=lambda h: (h["val_acc"], -h["val_loss"]), default={})
        n = best.get("val_n")
        n = int(n) if n is not None and math.isfinite(float(n)) else 0  # numpy's integers from Ray's frames too
        low, high = wilson(best.get("val_acc", math.nan), n)
        trained = r["history"][-1].get("batch_size") if r["history"] else None
        rows.append(
            {
                "trial_id": r["trial_id"],
                "status": trial_status(r, max_epochs),
                "source": r.get("source", "sampler"),  # recipe, warm-start (--warm-start) or sampler (TPE)
                **{c: r["config"].get(c) for c in CONFIG_COLUMNS},
                "val_acc": best.get("val_acc", math.nan),
                "val_acc_low": low,
                "val_acc_high": high,
                "val_n": n,
                "val_macro_f1": best.get("val_macro_f1", math.nan),
                "val_loss": best.get("val_loss", math.nan),
                "best_epoch": best.get("epoch", 0),
                "epochs_run": max((h["epoch"] for h in r["history"]), default=0),
                "wall_s": max((h.get("wall_s", 0.0) for h in r["history"]), default=0.0),
                "node": r.get("node") or "",
                "pretrained": bool((pretrained or {}).get(r["config"].get("backbone"), False)),
                # the new head started from the probe fitted on the frozen features (LP-FT)
                "warm_head": bool(r["history"][-1].get("warm_head", False)) if r["history"] else False,
                # smaller than batch_size when the configured batch did not fit in memory
                "trained_batch_size": int(trained if _finite(trained) else r["config"].get("batch_size") or 0),
                "failures": int(r.get("failures", 0)),
                "error": r.get("error") or "",
            }
        )
    frame = pd.DataFrame(rows, columns=TRIAL_COLUMNS)
    return frame.sort_values("trial_id").reset_index(drop=True)


def finished_trials(trials: pd.DataFrame) -> pd.DataFrame:
    """The trials that can be compared: not errored, with finite validation accuracy and loss."""
    return trials[trials["val_acc"].map(_finite) & trials["val_loss"].map(_finite) & (trials["status"] != "ERROR")]


def ranked_trials(trials: pd.DataFrame) -> pd.DataFrame:
    """The finished trials, best first: the highest validation accuracy; ties go to lower loss, then fewer epochs,
    then the trial id (the one ranking every table and choice uses)."""
    keys = ["val_acc", "val_loss", "epochs_run", "trial_id"]
    return finished_trials(trials).sort_values(keys, ascending=[False, True, True, True], kind="stable")


def best_trial(trials: pd.DataFrame) -> pd.Series:
    """The first of ``ranked_trials``."""
    ranked = ranked_trials(trials)
    if ranked.empty:
        raise ValueError("no trial finished an epoch with finite validation metrics; see trials.parquet's error")
    return ranked.iloc[0]


def top_configs(trials: pd.DataFrame, k: int, backbones: tuple[str, ...] | list[str]) -> list[dict]:
    """The ``k`` best finished configurations whose backbone is in ``backbones``, as search-space dicts."""
    ranked = ranked_trials(trials)
    ranked = ranked[ranked["backbone"].isin(backbones)].head(k)
    return [
        {c: (row[c].item() if hasattr(row[c], "item") else row[c]) for c in CONFIG_COLUMNS if c in row}
        | ({} if "dropout" in row else {"dropout": 0.0})
        for _, row in ranked.iterrows()
    ]


def status_counts(trials: pd.DataFrame) -> dict[str, int]:
    counts = trials["status"].value_counts()
    return {s.lower(): int(counts.get(s, 0)) for s in STATUSES}


def number(value: object) -> str:
    """A value as the tables and the report show it: floats to four significant digits, NaN as n/a."""
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else "n/a"
    return str(value)


def marks(best: dict) -> list[str]:
    """What a reader must know before trusting a result: synthetic data, no pretrained weights."""
    flags = (("synthetic", best["provenance"]["synthetic"]), ("not pretrained", not best["pretrained"]))
    return [m for m, on in flags if on]


def best_rows(best: dict) -> list[tuple[str, object]]:
    """The best-config table's rows: the configuration, its metrics, the trials and where the data came from."""
    trials = best["trials"]
    return [
        *((k, best["config"][k]) for k in CONFIG_COLUMNS),
        ("val_acc", interval(best["val_acc"], best.get("val_n"))),
        ("val_macro_f1", best["val_macro_f1"]),
        ("val_loss", best["val_loss"]),
        ("test_acc", _test_acc(best)),
        ("test_macro_f1", best.get("test_macro_f1", "not retrained")),
        (
            "trials",
            f"{trials['total']} ({trials['terminated']} finished, {trials['stopped']} stopped early, "
            f"{trials['error']} errored)",
        ),
        ("pretrained", best["pretrained"]),
        ("data", "synthetic" if best["provenance"]["synthetic"] else best["provenance"]["data_root"]),
        ("search wall time", f"{best['search_wall_s']:.0f} s"),
        ("search ended by", best.get("limit", "trials")),
    ]


def best_markdown(best: dict) -> str:
    """The best-config table of one task, as printed at the end of a run and written to best.md."""
    title = f"## Best configuration: {best['task']}" + (f" ({', '.join(marks(best))})" if marks(best) else "")
    rows = best_rows(best)
    lines = [title, "", "| setting | value |", "|---|---|", *(f"| {k} | {number(v)} |" for k, v in rows)]
    text = "\n".join(lines) + "\n"
    asked = best.get("variants_asked", {})
    if best.get("variants") and (asked.get("soup") or asked.get("ensemble") or asked.get("auto") or best.get("tta")):
        text += "\n" + markdown_table(variants_frame(best), "Model variants (tested once; saved: in model/)")
        saved = best.get("saved_test_acc")
        if saved is not None:
            text += f"\nSaved model: {best['model_variant']}{' with TTA' if best.get('tta') else ''}, test_acc "
            text += f"{interval(saved, best.get('test_n'))}."
        if best.get("variant_reason"):
            text += f" Chosen: {best['variant_reason']}."
        text += "\n"
    return text


VARIANT_COLUMNS = ["variant", "tta", "members", "val_acc", "test_acc", "test_macro_f1", "latency_ms", "params_m"]


def priced_variants(variants: list[dict], costs: dict[str, dict]) -> list[dict]:
    """The variants with their cost: a soup is one model of its backbone; an ensemble's parameters and latency are
    its members' sums (each backbone's batch-1 latency); test-time augmentation doubles the latency (NaN for a
    backbone not measured)."""
    out = []
    for row in variants:
        backbones = [m["backbone"] for m in row["members"]]
        backbones = backbones[:1] if row["variant"] == "soup" else backbones
        cost = [costs.get(b, {}) for b in backbones]
        latency = sum(c.get("latency_ms", math.nan) for c in cost) * (2 if row["tta"] else 1)
        out.append({**row, "latency_ms": latency, "params_m": sum(c.get("params_m", math.nan) for c in cost)})
    return out


def variants_frame(best: dict) -> pd.DataFrame:
    """One row per model variant the retrain tested (single, soup, ensemble; each without and with test-time
    augmentation); ``saved`` marks the one the model folder holds."""
    rows = []
    for row in best.get("variants", []):
        members = ", ".join(
            f"{m['trial_id']} ({m['backbone']})" + (f" x{m['weight']}" if m["weight"] > 1 else "")
            for m in row["members"]
        )
        saved = row["variant"] == best.get("model_variant") and row["tta"] == best.get("tta", False)
        rows.append({**{c: row.get(c) for c in VARIANT_COLUMNS}, "members": members, "saved": "yes" if saved else ""})
    return pd.DataFrame(rows, columns=[*VARIANT_COLUMNS, "saved"])


def _test_acc(best: dict) -> str | float:
    if "test_acc" not in best:
        return "not retrained"
    seeds = best.get("retrain_seeds", 1)
    return (
        interval(best["test_acc"], best.get("test_n"))
        if seeds == 1
        else f"{best['test_acc']:.4g} ± {best['test_acc_std']:.2g} ({seeds} seeds)"
    )


SUMMARY_COLUMNS = [
    "task",
    "classes",
    "images",
    "backbone",
    "freeze_depth",
    "aug_strength",
    "lr",
    "val_acc",
    "test_acc",
    "test_macro_f1",
    "test_acc_std",
    "retrain_seeds",
    "trials_finished",
    "trials_stopped",
    "trials_errored",
    "search_wall_s",
    "cpu_hours",
    "gpu_hours",
    "pretrained",
    "synthetic",
]


def summary_frame(bests: list[dict]) -> pd.DataFrame:
    """One row per task from each task's best.json."""
    rows = [
        {
            "task": b["task"],
            "classes": len(b["classes"]),
            "images": b["images"],
            **{k: b["config"][k] for k in ("backbone", "freeze_depth", "aug_strength", "lr")},
            "val_acc": b["val_acc"],
            "test_acc": b.get("test_acc"),
            "test_macro_f1": b.get("test_macro_f1"),
            "test_acc_std": b.get("test_acc_std"),
            "retrain_seeds": b.get("retrain_seeds", 1 if "test_acc" in b else 0),
            "trials_finished": b["trials"]["terminated"],
            "trials_stopped": b["trials"]["stopped"],
            "trials_errored": b["trials"]["error"],
            "search_wall_s": b["search_wall_s"],
            "cpu_hours": b["cpu_hours"],
            "gpu_hours": b["gpu_hours"],
            "pretrained": b["pretrained"],
            "synthetic": b["provenance"]["synthetic"],
        }
        for b in bests
    ]
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS).sort_values("task").reset_index(drop=True)


def markdown_table(frame: pd.DataFrame, title: str) -> str:
    """``frame`` as a markdown table under a ``##`` title; floats to four significant digits, NaN as n/a."""
    header = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "---|" * len(frame.columns)
    body = ["| " + " | ".join(number(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([f"## {title}", "", header, rule, *body]) + "\n"


def summary_markdown(summary: pd.DataFrame) -> str:
    return markdown_table(summary, "Best configuration per task")
