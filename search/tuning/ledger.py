"""The search's state in one record: what defines the search (checked by --resume), the seconds it has run, and
every trial it has seen, which ASHA, the time budget, the progress line and the memory watch all read: each reported
epoch once, whether the trial is done and who stopped it, the rungs ASHA judged it at. It is saved to one file,
``search.json``, after every change, and --resume continues from that file.

Ray Tune restores a search by unpickling the scheduler, stopper and callbacks it pickled when the search started.
A ledger pickles as its file's path, and unpickles as this process's ledger of that file (``TrialLedger.of``), so
each restored object reads the one the driver opened, not a copy as it was at the start."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
from ray import tune

from datasets import DamagedFile, short
from results import read_json, write_json
from trainables.combine import checkpoint_probs

__all__ = ["SEARCH_FILE", "SEARCH_FIX", "Entry", "TrialLedger"]

SEARCH_FILE = "search.json"
SEARCH_FIX = "put back the file the search wrote, or start the search anew with --overwrite"
# what an epoch's result keeps: what the schedulers and the plan read, nothing more
KEPT = ("epoch", "val_acc", "val_loss", "wall_s", "train_s", "train_size", "peak_memory_mb", "batch_size")


@dataclass
class Entry:
    """One trial: its backbone, whether it trains a probe on cached features, its epochs in order, whether it ended
    (and who stopped it)."""

    backbone: str
    on_features: bool
    device: str = ""
    epochs: list[dict] = field(default_factory=list)
    done: bool = False
    stopped_by: str = ""  # "asha" or "budget" when one of them ended the trial before max_epochs
    rungs: list[float] = field(default_factory=list)  # the ASHA milestones it was judged at
    until: float | None = None  # this process's clock: when the epoch under way should end (not saved)

    @property
    def epoch(self) -> int:
        return self.epochs[-1]["epoch"] if self.epochs else 0

    def best(self) -> tuple[float, float]:
        """(val_acc, -val_loss) of its best epoch, as the tables rank it; (-inf, -inf) before one."""
        return max(((e["val_acc"], -e["val_loss"]) for e in self.epochs), default=(-math.inf, -math.inf))

    def value_at(self, epoch: int) -> float | None:
        """val_acc of the first epoch it reported at or past ``epoch``."""
        return next((e["val_acc"] for e in self.epochs if e["epoch"] >= epoch), None)

    def epoch_s(self, index: int = -1) -> float:
        """The wall time of its ``index``-th recorded epoch (from the trial's start for the first)."""
        if not self.epochs:
            return 0.0
        index %= len(self.epochs)
        before = self.epochs[index - 1]["wall_s"] if index else 0.0
        return self.epochs[index]["wall_s"] - before

    def saved(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "until"}


class TrialLedger(tune.Callback):
    """The search's definition, the seconds it has run, and every trial's entry by trial id; ``record`` takes each
    epoch once, whoever passes it on first (Ray Tune hands a result to the stopper, then the scheduler, the searcher
    and the callbacks)."""

    _open: ClassVar[dict[Path, TrialLedger]] = {}

    def __init__(
        self,
        path: Path,
        search: dict | None = None,
        entries: dict[str, Entry] | None = None,
        ended_by: str = "",
        spent_s: float = 0.0,
    ):
        self.path = Path(path)
        self.search = search or {}  # what defines the search, its image folder and what it measured before a trial
        self.entries = entries or {}
        self.ended_by = ended_by  # what ended the whole search (the time budget's reason), kept across --resume
        self.spent_s, self.opened = spent_s, time.monotonic()
        # this process's: each trial's newest checkpoint, and the validation probabilities read from it
        self._checkpoints: dict[str, tune.Checkpoint] = {}
        self._probs: dict[str, tuple[str, np.ndarray | None]] = {}

    @classmethod
    def open(cls, path: Path, *, fresh: bool) -> TrialLedger:
        """This process's ledger of ``path``: empty for a new search, else read from the file (a damaged one raises
        DamagedFile), its clock going on from the seconds the earlier runs spent; restored schedulers and callbacks
        find it with ``of``."""
        path = Path(path).resolve()
        ledger = cls(path) if fresh else cls._read(path)
        cls._open[path] = ledger
        return ledger

    @classmethod
    def of(cls, path: Path) -> TrialLedger:
        """The ledger this process opened for ``path`` (what an unpickled ledger becomes), else the file's."""
        path = Path(path).resolve()
        return cls._open.get(path) or cls.open(path, fresh=False)

    @classmethod
    def _read(cls, path: Path) -> TrialLedger:
        if not path.is_file():  # a search stopped before its plan was made
            return cls(path)
        saved = read_json(path, SEARCH_FIX)
        try:
            entries = {str(t): Entry(**e) for t, e in saved["trials"].items()}
            for entry in entries.values():
                if any(not isinstance(e["epoch"], int) or not isinstance(e["val_acc"], float) for e in entry.epochs):
                    raise ValueError("an epoch without its number or val_acc")
            return cls(path, dict(saved["search"]), entries, str(saved["ended_by"]), float(saved["elapsed_s"]))
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise DamagedFile(path, short(e), SEARCH_FIX) from None

    def start(self, search: dict, spent_s: float) -> None:
        """This run's plan is made: the search's definition, and the seconds it has run before now (the earlier
        runs and this one's start), from which ``elapsed`` goes on."""
        self.search, self.spent_s, self.opened = search, spent_s, time.monotonic()
        self.save()

    def __reduce__(self):
        return TrialLedger.of, (self.path,)

    def elapsed(self) -> float:
        """Seconds the search has run, all its runs together."""
        return self.spent_s + time.monotonic() - self.opened

    def record(self, trial_id: str, result: dict) -> bool:
        """Take a trial's epoch result; False when it is no epoch with a finite val_acc, or one already taken (an
        epoch a restored trial ran again keeps its first result)."""
        epoch, value = result.get("epoch"), result.get("val_acc")
        if not epoch or not isinstance(value, float | int) or not math.isfinite(value):
            return False
        entry = self.entries.get(trial_id)
        if entry is None:
            # the stopper and the callbacks get the result as the trial reported it, the scheduler flattened
            backbone = result.get("config", {}).get("backbone") or result.get("config/backbone", "")
            entry = self.entries[trial_id] = Entry(str(backbone), bool(result.get("on_features")))
        if int(epoch) <= entry.epoch:
            return False
        kept = {k: result[k] for k in KEPT if isinstance(result.get(k), int | float)}
        entry.epochs.append(kept | {"epoch": int(epoch), "val_acc": float(value)})
        entry.epochs[-1].setdefault("val_loss", math.inf)
        entry.device = str(result.get("device", entry.device))
        entry.until = None
        self.save()
        return True

    def end(self, trial_id: str, stopped_by: str = "") -> None:
        """The trial ended (``stopped_by`` a scheduler that stopped it): none of its epochs is under way."""
        entry = self.entries.get(trial_id)
        if entry is None:
            return
        changed = not entry.done or bool(stopped_by and stopped_by != entry.stopped_by)
        entry.done, entry.until, entry.stopped_by = True, None, stopped_by or entry.stopped_by
        if changed:
            self.save()

    def end_search(self, why: str) -> None:
        if not self.ended_by:
            self.ended_by = why
            self.save()

    def best(self) -> tuple[str, Entry] | None:
        """The trial with the best epoch so far (accuracy, then loss), and its entry."""
        scored = [(e.best(), t) for t, e in self.entries.items() if e.epochs]
        if not scored:
            return None
        trial_id = max(scored, key=lambda s: s[0])[1]
        return trial_id, self.entries[trial_id]

    def probs(self, trial_id: str) -> np.ndarray | None:
        """The validation probabilities saved with the trial's newest checkpoint in this run (read once each)."""
        checkpoint = self._checkpoints.get(trial_id)
        if checkpoint is None:
            return None
        if self._probs.get(trial_id, ("",))[0] != checkpoint.path:
            self._probs[trial_id] = (checkpoint.path, checkpoint_probs(checkpoint))
        return self._probs[trial_id][1]

    def save(self) -> None:
        """The file, whole: also the seconds run so far, so that a search killed mid-way resumes with them spent."""
        trials = {t: e.saved() for t, e in self.entries.items()}
        record = {"search": self.search, "elapsed_s": self.elapsed(), "trials": trials, "ended_by": self.ended_by}
        write_json(self.path, record)

    # as a Ray Tune callback (after the stopper, scheduler and searcher have seen the result)
    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info) -> None:
        self.record(trial.trial_id, result)

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        self.end(trial.trial_id)

    def on_trial_error(self, iteration: int, trials: list, trial, **info) -> None:
        self.end(trial.trial_id)

    def on_checkpoint(self, iteration: int, trials: list, trial, checkpoint: tune.Checkpoint, **info) -> None:
        self._checkpoints[trial.trial_id] = checkpoint
