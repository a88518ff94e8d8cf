"""Watching real processes from a test: waiting for a condition while a process may die, what Ray Tune logged
of a trial, and how much CPU a process has used."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

LIMIT_S = 240  # no single stage of a test may hang the suite longer than this


def wait_for(condition, what: str, timeout: float = LIMIT_S, process: subprocess.Popen | None = None, poll=0.25):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if (value := condition()) is not None:
            return value
        if process is not None and process.poll() is not None:
            pytest.fail(f"the search exited ({process.returncode}) before {what}")
        time.sleep(poll)  # each look reads files or /proc: a tighter loop takes CPU from the search it watches
    pytest.fail(f"timed out waiting for {what}")


def logged_results(trial_dir: Path) -> list[dict]:
    """The results Ray Tune logged for a trial, one per reported epoch (a line still being written is left out)."""
    path = trial_dir / "result.json"
    text = path.read_text() if path.is_file() else ""
    return [json.loads(line) for line in text.splitlines(keepends=True) if line.endswith("\n") and line.strip()]


def snapshot_statuses(experiment: Path) -> dict[str, str]:
    """Trial id -> status in the newest experiment snapshot Ray Tune saved (what --resume will see)."""
    for path in sorted(experiment.glob("experiment_state-*.json"), reverse=True)[:1]:
        try:
            trials = [json.loads(data) for data, _ in json.loads(path.read_text())["trial_data"]]
        except (json.JSONDecodeError, OSError):
            return {}  # being rewritten
        return {t["trial_id"]: t["status"] for t in trials}
    return {}


def cpu_seconds(pid: int) -> float:
    """The CPU time a process has used (user and system), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
