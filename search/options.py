"""The options of one search, with the defaults a task or ``--demo`` implies."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from datasets import Task, UsageError

if TYPE_CHECKING:  # the space's declaration loads torch; `search -h` reads these options without it
    from trainables.config import Range

__all__ = ["DEMO", "MODES", "REAL", "ResolvedOptions", "SearchOptions"]

DEMO = {"trials": 12, "max_epochs": 8, "image_size": 64, "pretrained": "auto"}
REAL = {"trials": 30, "max_epochs": 10, "pretrained": "required"}
MODES = ("required", "auto", "off")  # --pretrained


@dataclass(frozen=True)
class SearchOptions:
    """What the command line says; ``None`` means: the task's or the demo's default."""

    task: str
    data: str | None = None
    demo: bool = False
    out: str = "runs"
    trials: int | None = None
    max_epochs: int | None = None
    backbones: tuple[str, ...] | None = None
    image_size: int | None = None
    pretrained: str | None = None
    weights: str | None = None
    gpus_per_trial: float | None = None
    cpus_per_trial: int = 1
    concurrency: int | None = None
    address: str | None = None
    autoscaling: bool = False  # the cluster's autoscaler adds nodes: a trial no live node fits waits for one
    storage: str | None = None
    mlflow: str | None = None
    resume: bool = False
    overwrite: bool = False
    max_failures: int = 2
    download: bool = False
    warm_start: str | None = None
    retrain: bool = True
    retrain_again: bool = False
    retrain_seeds: int = 1
    soup: bool = False  # retrain the greedy soup of the best backbone's top trials, and save it
    ensemble: int = 0  # an ensemble of up to this many members, chosen on validation; 0: none
    tta: bool = False  # test, predict and export with the horizontal-flip view averaged in
    verbose: bool = False
    compile: bool = False
    prescreen: int | None = None
    time_budget_s: float | None = None
    seed: int = 0
    space: Mapping[str, Range] | None = None  # a config file's ranges, in place of the declared ones

    def __post_init__(self) -> None:
        for name in (
            "trials",
            "max_epochs",
            "image_size",
            "cpus_per_trial",
            "concurrency",
            "retrain_seeds",
            "prescreen",
        ):
            value = getattr(self, name)
            if value is not None and value < 1:
                flag = "--" + name.replace("_", "-")
                raise UsageError(f"{flag} must be a positive whole number, got {value}")
        if self.ensemble == 1 or self.ensemble < 0:
            raise UsageError(
                f"--ensemble K needs K of 2 or more members, got {self.ensemble}; leave it out for one model"
            )
        if (self.soup or self.ensemble) and not self.retrain:
            raise UsageError("--soup and --ensemble choose models to retrain; drop --no-retrain, or drop them")
        if self.max_failures < 0:
            raise UsageError(f"--max-failures must be 0 or more (restarts of a failed trial), got {self.max_failures}")
        if self.resume and self.overwrite:
            raise UsageError("--resume continues the search in OUT and --overwrite replaces it; pass one of them")
        if self.image_size is not None and self.image_size < 16:
            raise UsageError(f"--image-size must be at least 16 px, got {self.image_size}")
        if self.gpus_per_trial is not None and not (
            self.gpus_per_trial >= 0 and (self.gpus_per_trial <= 1 or self.gpus_per_trial.is_integer())
        ):
            raise UsageError(
                f"--gpus-per-trial must be 0 (CPUs only), a fraction up to 1 (0.25 lets four trials share a GPU) "
                f"or a whole number, got {self.gpus_per_trial:g}"
            )
        if not 0 <= self.seed < 2**32:  # what NumPy's and Optuna's generators take
            raise UsageError(f"--seed must be 0 to {2**32 - 1}, got {self.seed}")
        if self.pretrained is not None and self.pretrained not in MODES:
            raise UsageError(f"--pretrained must be one of {', '.join(MODES)}, got {self.pretrained!r}")

    def requested_image_size(self) -> int | None:
        """The image size asked for, before the task's default applies."""
        return self.image_size or (DEMO["image_size"] if self.demo else None)

    def for_task(self, task: Task) -> ResolvedOptions:
        """Fill the defaults from the task (or the demo preset)."""
        preset = DEMO if self.demo else REAL
        return ResolvedOptions(
            **{
                f.name: getattr(self, f.name)
                for f in dataclasses.fields(self)
                if f.name not in ("trials", "max_epochs", "backbones", "image_size", "pretrained")
            },
            trials=self.trials or preset["trials"],
            max_epochs=self.max_epochs or preset["max_epochs"],
            backbones=self.backbones or (task.demo_backbones if self.demo else task.backbones),
            image_size=self.requested_image_size() or task.image_size,
            pretrained=self.pretrained or preset["pretrained"],
            task_name=task.name,
        )


@dataclass(frozen=True)
class ResolvedOptions(SearchOptions):
    """Options with every default filled in."""

    trials: int = 0
    max_epochs: int = 0
    backbones: tuple[str, ...] = ()
    image_size: int = 0
    pretrained: str = "auto"
    task_name: str = ""

    @property
    def task_dir(self) -> Path:
        return Path(self.out).expanduser().resolve() / self.task_name
