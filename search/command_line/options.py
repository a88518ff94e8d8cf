"""The options of one search, each declared once (default, group, help, flag), with the defaults a task or
``--demo`` implies."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from datasets import Task, UsageError

if TYPE_CHECKING:  # the space's declaration loads torch; `search -h` reads these options without it
    from trainables.trial_config import Range

__all__ = [
    "DEMO",
    "GROUPS",
    "MODES",
    "RAY_DASHBOARD_PORT",
    "REAL",
    "Option",
    "ResolvedOptions",
    "SearchOptions",
    "declared",
]

DEMO = {"trials": 12, "max_epochs": 8, "image_size": 64, "pretrained": "auto"}
REAL = {"trials": 30, "max_epochs": 10, "pretrained": "required"}
MODES = ("required", "auto", "off")  # --pretrained
RAY_DASHBOARD_PORT = 8265  # Ray's own default: there the dashboard finds a free port itself
GROUPS = ("data", "search", "resources", "final model", "faults", "output")  # the -h sections, one per decision


@dataclass(frozen=True)
class Option:
    """How one field of ``SearchOptions`` is spelled and explained: the command line's flag and help, whether a
    config file may set it; the parser, the TOML keys and ``run()``'s keywords are all made from these."""

    group: str
    help: str
    flag: str = ""  # default: --NAME with dashes
    alias: str | None = None  # a short spelling (-v)
    metavar: str | None = None
    parse: Callable[[str], object] | None = None  # a value's text to the value; None: a flag (true when given)
    choices: tuple[str, ...] | None = None
    shown: str | None = None  # the help's "(default: ...)" where the default is not the field's value
    preset: bool = False  # the default is REAL's, or DEMO's with --demo
    negated: bool = False  # the flag sets the field to false (--no-retrain)
    in_file: bool = True  # a config file may set it (not --resume or --overwrite: each command says those itself)
    on_command_line: bool = True

    def spelling(self, name: str) -> str:
        """The long flag: ``--max-epochs`` for ``max_epochs`` unless declared otherwise."""
        return self.flag or "--" + name.replace("_", "-")


def option(default: object, group: str, help: str, **how) -> dataclasses.Field:
    """A field of ``SearchOptions`` with its default and its ``Option``."""
    return dataclasses.field(default=default, metadata={"option": Option(group, help, **how)})


def _csv(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip())


def _duration(value: str) -> float:
    from search.tuning.budget import parse_duration  # argparse's ArgumentTypeError: its one-line message

    try:
        return parse_duration(value)
    except UsageError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _port(value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {value!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0..65535 (0: no dashboard), got {port}")
    return port


@dataclass(frozen=True)
class SearchOptions:
    """Every option of a search, declared once: its default (``None``: the task's or the demo's) and its ``Option``.
    The command line's groups and help, the config file's keys and ``run()``'s keywords come from these fields."""

    task: str
    data: str | None = option(
        None,
        "data",
        "dataset root",
        metavar="DIR",
        parse=str,
        shown="looked for in $SEARCH_DATA/TASK, ./data/TASK, ~/.cache/search/data/TASK",
    )
    demo: bool = option(False, "data", "use the generated stand-in dataset, marked synthetic")
    download: bool = option(False, "data", "fetch a missing Kaggle dataset with kagglehub")
    image_size: int | None = option(
        None,
        "data",
        "training resolution in pixels",
        metavar="PX",
        parse=int,
        shown=f"the task's; {DEMO['image_size']} with --demo",
    )
    trials: int | None = option(
        None,
        "search",
        "number of trials",
        metavar="N",
        parse=int,
        preset=True,
    )
    max_epochs: int | None = option(
        None,
        "search",
        "epochs of a trial never stopped early",
        metavar="N",
        parse=int,
        preset=True,
    )
    backbones: tuple[str, ...] | None = option(
        None, "search", "timm model names, comma-separated", metavar="A,B,...", parse=_csv, shown="the task's"
    )
    pretrained: str | None = option(
        None,
        "search",
        "ImageNet weights: required (fail without them), auto (use them when found) or off",
        parse=str,
        choices=MODES,
        preset=True,
    )
    weights: str | None = option(
        None, "search", "folder of MODEL.safetensors weights, for machines without internet", metavar="DIR", parse=str
    )
    prescreen: int | None = option(
        None,
        "search",
        "search only the K best-ranked backbones (fitted probe's val_acc, then LogME)",
        metavar="K",
        parse=int,
        shown="all",
    )
    time_budget_s: float | None = option(
        None,
        "search",
        "wall time for the search and the retrain together, e.g. 20m or 1h30m",
        flag="--time-budget",
        metavar="DURATION",
        parse=_duration,
        shown="no limit",
    )
    warm_start: str | None = option(
        None,
        "search",
        "an earlier search's OUT/TASK folder: its best configurations run first",
        metavar="DIR",
        parse=str,
    )
    seed: int = option(0, "search", "seeds Optuna's sampler and every trial's training", metavar="N", parse=int)
    gpus_per_trial: float | None = option(
        None,
        "resources",
        "0, a fraction (0.25: four trials share a GPU) or a whole number",
        metavar="F",
        parse=float,
        shown="1 on a GPU machine, else 0",
    )
    cpus_per_trial: int = option(1, "resources", "CPU cores per trial", metavar="N", parse=int)
    concurrency: int | None = option(
        None, "resources", "most trials at once", metavar="N", parse=int, shown="what the resources allow"
    )
    compile: bool = option(False, "resources", "torch.compile each trial's model (pays off on GPUs for long trials)")
    address: str | None = option(
        None,
        "resources",
        "an existing Ray cluster, HOST:PORT or auto",
        metavar="ADDR",
        parse=str,
        shown="start a local one",
    )
    autoscaling: bool = option(
        False,
        "resources",
        "the cluster's autoscaler adds nodes (Ray's cluster launcher, KubeRay): a trial that no live node fits waits "
        "for one instead of being refused, and one trial more than the live nodes fit waits, so that it asks for a "
        "node",
    )
    retrain: bool = option(True, "final model", "skip retraining the best config", flag="--no-retrain", negated=True)
    retrain_again: bool = option(False, "final model", "retrain the best configuration even if it was retrained")
    retrain_seeds: int = option(
        1, "final model", "retrain with K seeds; the test metric is their mean", metavar="K", parse=int
    )
    soup: bool = option(
        False,
        "final model",
        "also retrain the greedy soup (averaged weights) of the best backbone's top trials; save it as the model",
    )
    ensemble: int = option(
        0,
        "final model",
        "also retrain an ensemble of up to K trials of any backbone, chosen on validation, and save it as the model",
        metavar="K",
        parse=int,
        shown="none",
    )
    tta: bool = option(False, "final model", "test, predict and export with the horizontally flipped view averaged in")
    resume: bool = option(False, "faults", "continue this task's interrupted search in OUT", in_file=False)
    max_failures: int = option(2, "faults", "restarts of a failed trial from its checkpoint", metavar="N", parse=int)
    out: str = option(
        "runs", "output", "results root; a task writes OUT/TASK", metavar="DIR", parse=str, shown="./runs"
    )
    overwrite: bool = option(False, "output", "replace a search already in OUT instead of refusing", in_file=False)
    storage: str | None = option(
        None,
        "output",
        "where Ray Tune keeps experiment state, a path or URI",
        metavar="URI",
        parse=str,
        shown="OUT/TASK/tune",
    )
    dashboard_port: int = option(
        RAY_DASHBOARD_PORT,
        "output",
        "the local Ray dashboard's port on 127.0.0.1; 0: no dashboard",
        metavar="PORT",
        parse=_port,
    )
    mlflow: str | None = option(
        None,
        "output",
        "also log every trial's parameters and metrics, and the retrained model's, to this MLflow tracking URI "
        "(sqlite:///mlflow.db, http://host:5000; needs the mlflow extra)",
        metavar="URI",
        parse=str,
        shown="off",
    )
    verbose: bool = option(False, "output", "Ray Tune's full progress tables and logs", alias="-v")
    # a config file's or run()'s ranges in place of the declared ones; the command line has no flag for it
    space: Mapping[str, Range] | None = option(
        None, "search", "the space's ranges", on_command_line=False, in_file=False
    )

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


def declared() -> dict[str, Option]:
    """Each option's field name and its ``Option``, in declaration order."""
    return {f.name: f.metadata["option"] for f in dataclasses.fields(SearchOptions) if "option" in f.metadata}
