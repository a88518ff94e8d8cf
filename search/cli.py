"""The command line: ``python -m search TASK [TASK...] [options]``, ``tasks``, ``report``."""

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
from results import best_markdown
from search.disk import disk_full, full_disk_line
from search.driver import SearchFailed, SearchInterrupted
from search.options import SearchOptions

__all__ = ["COMMANDS", "INTERRUPTED", "main", "search_parser"]

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


def search_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m search",
        description="Hyperparameter search for transfer-learning image classifiers (Ray Tune + Optuna + timm). "
        f"Other commands: {', '.join(COMMANDS)}.",
    )
    p.add_argument(
        "tasks", nargs="+", metavar="TASK", help=f"{' | '.join(list_tasks())} | all | a path to an image folder"
    )
    p.add_argument("--data", help="dataset root: DIR/{train,valid|val,test}/CLASS/* or DIR/CLASS/*")
    p.add_argument("--demo", action="store_true", help="use the generated stand-in dataset (marked synthetic)")
    p.add_argument("--out", default="runs", help="results root (default ./runs)")
    p.add_argument("--trials", type=int, help="number of search trials")
    p.add_argument("--max-epochs", type=int, help="epochs of a trial that is never stopped early")
    p.add_argument("--backbones", type=_csv, help="timm model names to search, comma-separated")
    p.add_argument("--image-size", type=int, help="training resolution in pixels")
    p.add_argument("--pretrained", choices=("required", "auto", "off"))
    p.add_argument("--weights", help="folder of MODEL.safetensors pretrained weights")
    p.add_argument("--gpus-per-trial", type=float)
    p.add_argument("--cpus-per-trial", type=int, default=1)
    p.add_argument("--concurrency", type=int, help="most trials at once (default: what the resources allow)")
    p.add_argument("--address", help="an existing Ray cluster (default: start a local one)")
    p.add_argument(
        "--dashboard-port", type=int, default=8265, help="the local Ray dashboard's port on 127.0.0.1 (default 8265)"
    )
    p.add_argument("-v", "--verbose", action="store_true", help="Ray Tune's full progress tables and logs")
    p.add_argument(
        "--compile", action="store_true", help="torch.compile each trial's model (pays off on GPUs for long trials)"
    )
    p.add_argument(
        "--time-budget",
        dest="time_budget_s",
        type=_duration,
        help="wall time for the search and the retrain together, e.g. 20m or 1h30m (default: no limit)",
    )
    p.add_argument(
        "--prescreen",
        type=int,
        metavar="K",
        help="search only the K best-ranked backbones (fitted probe's val_acc, then LogME) (default: all)",
    )
    p.add_argument("--storage", help="where Ray Tune keeps experiment state (default OUT/TASK/tune)")
    p.add_argument("--download", action="store_true", help="fetch a missing Kaggle dataset with kagglehub")
    p.add_argument("--warm-start", help="an earlier search's OUT/TASK folder: its best configurations run first")
    p.add_argument("--resume", action="store_true", help="continue this task's interrupted search in OUT")
    p.add_argument("--overwrite", action="store_true", help="replace a search already in OUT instead of refusing")
    p.add_argument(
        "--max-failures", type=int, default=2, help="restarts of a failed trial from its checkpoint (default 2)"
    )
    p.add_argument("--no-retrain", dest="retrain", action="store_false", help="skip retraining the best config")
    p.add_argument(
        "--retrain-again", action="store_true", help="retrain the best configuration even if it was retrained"
    )
    p.add_argument(
        "--retrain-seeds", type=int, default=1, help="retrain the best configuration with K seeds: test mean ± std"
    )
    p.add_argument("--seed", type=int, default=0)
    return p


def _tasks_command(argv: Sequence[str]) -> int:
    argparse.ArgumentParser(prog="python -m search tasks").parse_args(argv)
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
    p = argparse.ArgumentParser(prog="python -m search report")
    p.add_argument("--out", default="runs")
    args = p.parse_args(argv)
    if not any(Path(args.out).glob("*/best.json")):
        raise UsageError(f"no finished search in {args.out}; run `python -m search TASK --out {args.out}` first")
    from search.report import write_summary

    print(write_summary(args.out))
    return 0


def _predict_command(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m search predict", description="classify images with TASK's model")
    p.add_argument("task", metavar="TASK", help="the task (or image folder) whose retrained model to use")
    p.add_argument("images", nargs="+", metavar="IMAGE")
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
    args = parser.parse_args(argv)
    names = list_tasks() if args.tasks == ["all"] else args.tasks
    options = [_options(name, args) for name in names]
    from search.lock import unlock_all
    from search.prepare import Prepared

    try:
        prepared = [Prepared(o) for o in options]  # every task's input checked before Ray starts
        with _log_to(Path(args.out) / "search.log"):
            return _run_searches(parser, args, prepared)
    finally:
        unlock_all()


def _run_searches(parser: argparse.ArgumentParser, args: argparse.Namespace, prepared: list) -> int:
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
def _log_to(path: Path) -> Iterator[None]:
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


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; bad input exits 2 with one line, a failed search exits 1, Ctrl-C exits 130 with the
    command that continues."""
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
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
