"""Pure functions from search results to tables, and writing them atomically."""

from results.io import atomic_write, write_csv, write_json, write_parquet, write_text
from results.tables import (
    CONFIG_COLUMNS,
    EPOCH_COLUMNS,
    SUMMARY_COLUMNS,
    TRIAL_COLUMNS,
    best_markdown,
    best_trial,
    epochs_frame,
    status_counts,
    summary_frame,
    summary_markdown,
    top_configs,
    trials_frame,
)

__all__ = [
    "CONFIG_COLUMNS",
    "EPOCH_COLUMNS",
    "SUMMARY_COLUMNS",
    "TRIAL_COLUMNS",
    "atomic_write",
    "best_markdown",
    "best_trial",
    "epochs_frame",
    "status_counts",
    "summary_frame",
    "summary_markdown",
    "top_configs",
    "trials_frame",
    "write_csv",
    "write_json",
    "write_parquet",
    "write_text",
]
