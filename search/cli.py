"""The command line: ``search TASK [TASK...] [options]`` (or ``python -m search``), ``tasks``, ``report``,
``predict``. Ray, torch and timm are imported only by the commands that need them, so ``-h`` answers at once."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import shlex
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from datasets import UsageError, get_task, list_tasks
from search.disk import disk_full, full_disk_line
from search.errors import SearchFailed, SearchInterrupted
from search.options import SearchOptions

__all__ = ["COMMANDS", "EXAMPLES", "INTERRUPTED", "datasets_clash", "log_to", "main", "search_parser"]

COMMANDS = ("tasks", "report", "predict")
INTERRUPTED = 130  # the shell's code for a command ended by Ctrl-C


def _duration(value: str) -> float:
    from search.budget import parse_duration

    try:
        return parse_duration(value)
    except UsageError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _csv(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip())


EXAMPLES = """\
examples:
  search egg --demo                                  generated eggs, no data or internet needed
  search egg --data ~/data/eggs --trials 20          DIR/{train,valid,test}/CLASS/* or DIR/CLASS/*
  search ~/photos/my-classes --weights ~/weights     any folder of class folders is a task
  search sports --gpus-per-trial 0.25 --time-budget 2h
  search egg --demo --resume                         continue an interrupted search

other commands (each has its own -h):
  search tasks                     registered tasks, their classes, and whether their data was found
  search report [--out DIR]        rewrite and print the cross-task summary
  search predict TASK IMAGE...     classify images with TASK's retrained model

`python -m search` works the same as `search`.
"""


def search_parser() -> argparse.ArgumentParser:
    from search.options import DEMO, MODES, REAL

    p = argparse.ArgumentParser(
        prog="search",
        usage="search TASK [TASK ...] [options]\n       search {tasks,report,predict} ...",
        description="Hyperparameter search for transfer-learning image classifiers: Ray Tune runs the trials, "
        "Optuna's TPE proposes them, ASHA stops the weak, and the best configuration is retrained and tested.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    p.add_argument(
        "--config",
        metavar="FILE",
        help="a TOML file of options (the command line overrides it) and the space's ranges in [space]; "
        "OUT/TASK/config.toml repeats a search (default: none)",
    )
    p.add_argument(
        "tasks", nargs="+", metavar="TASK", help=f"{' | '.join(list_tasks())} | all | a path to an image folder"
    )
    data = p.add_argument_group("data")
    data.add_argument(
        "--data",
        metavar="DIR",
        help="dataset root (default: looked for in $SEARCH_DATA/TASK, ./data/TASK, ~/.cache/search/data/TASK)",
    )
    data.add_argument("--demo", action="store_true", help="use the generated stand-in dataset, marked synthetic")
    data.add_argument("--download", action="store_true", help="fetch a missing Kaggle dataset with kagglehub")
    data.add_argument(
        "--image-size",
        metavar="PX",
        type=int,
        help="training resolution in pixels (default: the task's; 64 with --demo)",
    )

    space = p.add_argument_group("search")
    space.add_argument(
        "--trials",
        metavar="N",
        type=int,
        help=f"number of trials (default {REAL['trials']}; {DEMO['trials']} with --demo)",
    )
    space.add_argument(
        "--max-epochs",
        metavar="N",
        type=int,
        help=f"epochs of a trial never stopped early (default {REAL['max_epochs']}; {DEMO['max_epochs']} with --demo)",
    )
    space.add_argument(
        "--backbones", metavar="A,B,...", type=_csv, help="timm model names, comma-separated (default: the task's)"
    )
    space.add_argument(
        "--pretrained",
        choices=MODES,
        help="ImageNet weights: required (fail without them), auto (use them when found) or off "
        f"(default {REAL['pretrained']}; {DEMO['pretrained']} with --demo)",
    )
    space.add_argument(
        "--weights", metavar="DIR", help="folder of MODEL.safetensors weights, for machines without internet"
    )
    space.add_argument(
        "--prescreen",
        type=int,
        metavar="K",
        help="search only the K best-ranked backbones (fitted probe's val_acc, then LogME) (default: all)",
    )
    space.add_argument(
        "--time-budget",
        metavar="DURATION",
        dest="time_budget_s",
        type=_duration,
        help="wall time for the search and the retrain together, e.g. 20m or 1h30m (default: no limit)",
    )
    space.add_argument(
        "--warm-start", metavar="DIR", help="an earlier search's OUT/TASK folder: its best configurations run first"
    )
    space.add_argument(
        "--seed", metavar="N", type=int, default=0, help="seeds Optuna's sampler and every trial's training (default 0)"
    )

    resources = p.add_argument_group("resources")
    resources.add_argument(
        "--gpus-per-trial",
        metavar="F",
        type=float,
        help="0, a fraction (0.25: four trials share a GPU) or a whole number (default: 1 on a GPU machine, else 0)",
    )
    resources.add_argument("--cpus-per-trial", metavar="N", type=int, default=1, help="CPU cores per trial (default 1)")
    resources.add_argument(
        "--concurrency", metavar="N", type=int, help="most trials at once (default: what the resources allow)"
    )
    resources.add_argument(
        "--compile", action="store_true", help="torch.compile each trial's model (pays off on GPUs for long trials)"
    )

    cluster = p.add_argument_group("cluster")
    cluster.add_argument(
        "--address", metavar="ADDR", help="an existing Ray cluster, HOST:PORT or auto (default: start a local one)"
    )
    cluster.add_argument(
        "--storage", metavar="URI", help="where Ray Tune keeps experiment state, a path or URI (default OUT/TASK/tune)"
    )
    cluster.add_argument(
        "--dashboard-port",
        metavar="PORT",
        type=int,
        default=8265,
        help="the local Ray dashboard's port on 127.0.0.1 (default 8265)",
    )
    cluster.add_argument(
        "--max-failures",
        metavar="N",
        type=int,
        default=2,
        help="restarts of a failed trial from its checkpoint (default 2)",
    )

    output = p.add_argument_group("output")
    output.add_argument(
        "--out", metavar="DIR", default="runs", help="results root; a task writes OUT/TASK (default ./runs)"
    )
    output.add_argument("--resume", action="store_true", help="continue this task's interrupted search in OUT")
    output.add_argument("--overwrite", action="store_true", help="replace a search already in OUT instead of refusing")
    output.add_argument("--no-retrain", dest="retrain", action="store_false", help="skip retraining the best config")
    output.add_argument(
        "--retrain-again", action="store_true", help="retrain the best configuration even if it was retrained"
    )
    output.add_argument(
        "--retrain-seeds",
        metavar="K",
        type=int,
        default=1,
        help="retrain with K seeds; the test metric is their mean (default 1)",
    )
    output.add_argument("-v", "--verbose", action="store_true", help="Ray Tune's full progress tables and logs")
    return p


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("search")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"


def _tasks_command(argv: Sequence[str]) -> int:
    argparse.ArgumentParser(
        prog="search tasks", description="The registered tasks: classes, layout, and whether their data was found."
    ).parse_args(argv)
    from search.data import data_locations

    for name in list_tasks():
        task = get_task(name)
        found = next((str(p) for p in data_locations(task) if p.is_dir()), None)
        classes = ", ".join(task.classes) if task.classes else f"{task.num_classes} classes from the folders"
        print(f"{name}: {task.description}")
        print(f"  classes: {classes}")
        print(f"  layout: {task.layout}; image size {task.image_size}; backbones {', '.join(task.backbones)}")
        print(f"  data: {found or 'not found'} (looked in {', '.join(map(str, data_locations(task)))})")
    return 0


def _report_command(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(
        prog="search report", description="Rewrite OUT/summary.md and OUT/summary.csv from the searches in OUT."
    )
    p.add_argument("--out", default="runs", help="results root the searches wrote (default ./runs)")
    args = p.parse_args(argv)
    if not any(Path(args.out).glob("*/best.json")):
        raise UsageError(f"no finished search in {args.out}; run `python -m search TASK --out {args.out}` first")
    from search.report import write_summary

    print(write_summary(args.out))
    return 0


def _predict_command(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(
        prog="search predict",
        description="Classify images with TASK's retrained model (OUT/TASK/model): a line per image, its top classes.",
    )
    p.add_argument("task", metavar="TASK", help="the task (or image folder) whose retrained model to use")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files to classify")
    p.add_argument("--out", default="runs", help="results root the search wrote (default ./runs)")
    p.add_argument("--top", type=int, default=3, help="how many classes to show per image (default 3)")
    args = p.parse_args(argv)
    from search.data import resolve_task
    from search.predict import SavedModel, predict_lines

    name = resolve_task(args.task).name
    saved = SavedModel.load(Path(args.out) / name / "model", f"python -m search {args.task} --out {args.out}")
    lines, failed = predict_lines(saved, args.images, args.top)
    print("\n".join(lines))
    return 2 if failed else 0


def _search_command(argv: Sequence[str]) -> int:
    parser = search_parser()
    given = argparse.ArgumentParser(add_help=False)
    given.add_argument("--config")
    if (path := given.parse_known_args(argv)[0].config) is not None:
        from search.config import config_defaults

        parser.set_defaults(**config_defaults(path, parser))  # what the command line gives overrides the file
    args = parser.parse_args(argv)
    names = list_tasks() if args.tasks == ["all"] else args.tasks
    options = [_options(name, args) for name in names]
    from search.lock import unlock_all
    from search.prepare import Prepared

    try:
        prepared = [Prepared(o) for o in options]  # every task's input checked before Ray starts
        with log_to(Path(args.out) / "search.log"):
            return _run_searches(parser, args, prepared)
    finally:
        unlock_all()


def _run_searches(parser: argparse.ArgumentParser, args: argparse.Namespace, prepared: list) -> int:
    from results import best_markdown
    from search.cluster import ray_session
    from search.driver import run_task
    from search.report import write_summary

    for item in prepared:
        if item.done:
            print(best_markdown(item.done), flush=True)
    todo = [p for p in prepared if not p.done]
    try:
        if todo:
            with ray_session(args.address, args.dashboard_port) as dashboard:
                if dashboard:
                    logging.getLogger("search").info("Ray dashboard: %s", dashboard)
                for item in todo:
                    print(best_markdown(run_task(item)), flush=True)
    except (KeyboardInterrupt, SearchInterrupted) as e:
        started = [p.options.task for p in prepared if p.done or p.files.exists()]
        rest = [p.options.task for p in prepared if p.options.task not in started]
        commands = [_command(parser, args, started, resume=True)] if started else []
        commands += [_command(parser, args, rest, resume=False)] if rest else []
        reason = str(e) if isinstance(e, SearchInterrupted) else "interrupted"
        print(f"{reason}\nto continue: {' && '.join(commands)}", file=sys.stderr)
        return INTERRUPTED
    summary = write_summary(args.out)
    if len(prepared) > 1:
        print(summary)
    return 0


@contextmanager
def log_to(path: Path) -> Iterator[None]:
    """The run's log beside its results: everything this package logs, the dashboard's URL and progress included."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    loggers = [logging.getLogger(name) for name in ("search", "datasets", "trainables")]
    for logger in loggers:
        logger.addHandler(handler)
        if logger.level == logging.NOTSET:  # a host (a notebook, pytest) may have kept the root at WARNING
            logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
        handler.close()


def _command(parser: argparse.ArgumentParser, args: argparse.Namespace, tasks: list[str], resume: bool) -> str:
    """The command line that repeats ``args`` for ``tasks``, continuing their searches when ``resume``."""
    words = ["python", "-m", "search", *tasks]
    for action in parser._actions:  # argparse lists a parser's options nowhere public
        value = getattr(args, action.dest, None)
        if not action.option_strings or action.dest in ("help", "resume", "overwrite") or value == action.default:
            continue
        words.append(action.option_strings[0])
        if action.nargs != 0:  # not a flag
            words.append(",".join(value) if isinstance(value, tuple) else str(value))
    return shlex.join(words + (["--resume"] if resume else []))


def _options(name: str, args: argparse.Namespace) -> SearchOptions:
    fields = {f.name for f in dataclasses.fields(SearchOptions)} - {"task"}
    return SearchOptions(task=name, **{k: v for k, v in vars(args).items() if k in fields})


def datasets_clash() -> str | None:
    """A warning when Hugging Face's ``datasets`` is installed here too: it and this project's ``datasets`` package
    share one import name, so whichever comes first on the path hides the other."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        other = version("datasets")  # this project's distribution is "search": a "datasets" one is another's
    except PackageNotFoundError:
        return None
    return (
        f"warning: the distribution datasets {other} (Hugging Face's) is installed in this environment; it and "
        "search's own package `datasets` have one import name and one hides the other: install search in a venv "
        "of its own (python3 -m venv .venv, as make demo does)"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; bad input exits 2 with one line, a failed search exits 1, Ctrl-C exits 130 with the
    command that continues."""
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if clash := datasets_clash():
        print(clash, file=sys.stderr)
    try:
        if argv and argv[0] == "tasks":
            return _tasks_command(argv[1:])
        if argv and argv[0] == "report":
            return _report_command(argv[1:])
        if argv and argv[0] == "predict":
            return _predict_command(argv[1:])
        return _search_command(argv)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Exception as e:
        if not disk_full(e):
            if isinstance(e, SearchFailed):
                print(f"error: the search failed: {e}", file=sys.stderr)
                return 1
            raise
        known, _ = search_parser().parse_known_args(["TASK", *(a for a in argv if a not in COMMANDS)])
        print(f"error: {full_disk_line(known.out, known.storage)}", file=sys.stderr)
        return 1
