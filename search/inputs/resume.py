"""What lets a search continue: its definition beside the results (checked by --resume), whether it already
finished, and removing it for --overwrite."""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow.fs

from datasets import UsageError, reading
from results import read_json
from search.command_line.options import ResolvedOptions
from search.final.model_dir import MANIFEST
from search.tuning.budget import BUDGET_FILE
from search.tuning.ledger import SEARCH_FIX, TrialLedger
from search.tuning.space import trial_sources
from search.tuning.tuner import SearchFiles

__all__ = ["SIGNATURE_FLAGS", "check_existing", "discard_search", "finished_record"]

SIGNATURE_FLAGS = {
    "task": "the task",
    "data_fingerprint": "the data (--data, its files or split)",
    "image_size": "--image-size",
    "backbones": "--backbones",
    "trials": "--trials",
    "max_epochs": "--max-epochs",
    "seed": "--seed",
    "pretrained": "--pretrained/--weights",
    "prescreen": "--prescreen",
    "time_budget_s": "--time-budget",
    "space": "the search space of this version of search",
}


def finished_record(opts: ResolvedOptions) -> dict | None:
    """With --resume, best.json of a search that finished and (when asked) retrained: nothing is left to run."""
    if not opts.resume or opts.retrain_again:
        return None
    best = read_json(opts.task_dir / "best.json", "--retrain-again writes it anew from the finished search")
    if not best:
        return None
    model = opts.task_dir / "model"
    asked = {"soup": False, "ensemble": 0, "auto": False} | best.get("variants_asked", {})
    auto = bool(opts.time_budget_s)  # the driver chose the variants and TTA itself
    retrained = (
        "test_acc" in best
        and best.get("retrain_seeds", 1) == opts.retrain_seeds
        and asked == {"soup": opts.soup, "ensemble": opts.ensemble, "auto": auto}
        and (auto or best.get("tta", False) == opts.tta)
        and ((model / "weights.safetensors").is_file() or (model / MANIFEST).is_file())
    )
    return best if retrained or not opts.retrain else None


def check_existing(opts: ResolvedOptions, files: SearchFiles, signature: dict) -> None:
    """``--resume`` needs the same search in OUT; without it, a search already there is not overwritten silently."""
    out = opts.task_dir
    if not opts.resume:
        if files.exists() and not opts.overwrite:
            raise UsageError(
                f"a search of {opts.task_name} is already in {out}; continue it with --resume, "
                "replace it with --overwrite, or pass another --out"
            )
        return
    if not files.exists():
        raise UsageError(
            f"--resume: no search of {opts.task_name} to continue in {out} (no {files.experiment}); "
            "run the same command without --resume to start one"
        )
    saved = TrialLedger.open(files.ledger, fresh=False).search  # read and checked now: a damaged file stops here
    if files.study.is_file():
        with reading(files.study, SEARCH_FIX):
            trial_sources(files.study_url())
    changed = [k for k in signature if saved.get(k) != signature[k]]
    if changed:
        what = "; ".join(
            f"{SIGNATURE_FLAGS[k]}: {_show(saved.get(k))} then, {_show(signature[k])} now" for k in changed
        )
        raise UsageError(
            f"--resume: the search in {out} was started differently ({what}); resume with the options it was "
            "started with, or start anew with --overwrite or another --out"
        )


def _show(value: object) -> str:
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


def discard_search(out: Path, files: SearchFiles) -> None:
    """--overwrite: remove an earlier search's state and results (the split and the data report stay)."""
    if "://" in files.experiment:
        fs, path = pyarrow.fs.FileSystem.from_uri(files.experiment)
        if fs.get_file_info(path).type != pyarrow.fs.FileType.NotFound:
            fs.delete_dir(path)
    else:
        shutil.rmtree(files.experiment, ignore_errors=True)
    shutil.rmtree(out / "model", ignore_errors=True)
    for name in (
        files.study,
        files.ledger,
        BUDGET_FILE,
        "trials.parquet",
        "epochs.parquet",
        "best.json",
        "best.md",
    ):
        (out / name).unlink(missing_ok=True)
