"""The command line: ``search TASK [TASK...] [options]`` (or ``python -m search``), ``tasks``, ``report``,
``predict``. Ray, torch and timm are imported only by the commands that need them, so ``-h`` answers at once."""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import shlex
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from datasets import UsageError, get_task, list_tasks
from search.command_line.options import SearchOptions, declared
from search.command_line.parser import Parser, search_parser
from search.failures import SearchFailed, SearchInterrupted, disk_full, full_disk_line

__all__ = ["COMMANDS", "INTERRUPTED", "StopSignals", "datasets_clash", "main"]

INTERRUPTED = 130  # the shell's code for a command ended by Ctrl-C
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


def _tasks_command(argv: Sequence[str]) -> int:
    Parser(
        prog="search tasks", description="The registered tasks: classes, layout, and whether their data was found."
    ).parse_args(argv)
    from search.inputs.data import data_locations

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
    p = Parser(prog="search report", description="Rewrite OUT/summary.md and OUT/summary.csv from the searches in OUT.")
    p.add_argument("--out", default="runs", help="results root the searches wrote (default ./runs)")
    args = p.parse_args(argv)
    if not any(Path(args.out).glob("*/best.json")):
        raise UsageError(f"no finished search in {args.out}; run `python -m search TASK --out {args.out}` first")
    from search.outputs import write_summary

    print(write_summary(args.out))
    return 0


def _predict_command(argv: Sequence[str]) -> int:
    p = Parser(
        prog="search predict",
        description="Classify images with TASK's retrained model (OUT/TASK/model): a line per image, its top classes.",
    )
    p.add_argument("task", metavar="TASK", help="the task (or image folder) whose retrained model to use")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files to classify")
    p.add_argument("--out", default="runs", help="results root the search wrote (default ./runs)")
    p.add_argument("--top", type=int, default=3, help="how many classes to show per image (default 3)")
    args = p.parse_args(argv)
    from search.final.predict import SavedModel, predict_lines
    from search.inputs.data import task_folder

    folder = task_folder(args.task, args.out)
    saved = SavedModel.load(folder / "model", f"python -m search {args.task} --out {args.out}")
    lines, failed = predict_lines(saved, args.images, args.top)
    print("\n".join(lines))
    return 2 if failed else 0


def _export_command(argv: Sequence[str]) -> int:
    p = Parser(
        prog="search export",
        description="Write TASK's retrained model as OUT/TASK/model/model.onnx and check it against the torch model "
        "with ONNX Runtime on real images (the largest logit difference is printed).",
    )
    p.add_argument("task", metavar="TASK", help="the task (or image folder) whose retrained model to export")
    p.add_argument("--onnx", action="store_true", required=True, help="ONNX, dynamic batch (the one format so far)")
    p.add_argument("--opset", type=int, default=18, help="the ONNX opset (default 18)")
    p.add_argument("--images", nargs="+", metavar="IMAGE", help="images to check on (default: 8 of the test split)")
    p.add_argument("--out", default="runs", help="results root the search wrote (default ./runs)")
    args = p.parse_args(argv)
    if missing := [m for m in ("onnx", "onnxscript", "onnxruntime") if importlib.util.find_spec(m) is None]:
        raise UsageError(f"search export --onnx needs {', '.join(missing)}: pip install 'search[export]'")
    from search.final.export import ONNX_FILE, TOLERANCE, check_onnx, export_onnx, sample_inputs
    from search.final.predict import SavedModel
    from search.inputs.data import task_folder

    folder = task_folder(args.task, args.out)
    saved = SavedModel.load(folder / "model", f"python -m search {args.task} --out {args.out}")
    inputs = sample_inputs(saved, folder, args.images or [])
    export_onnx(saved, folder / "model" / ONNX_FILE, args.opset)
    worst = check_onnx(saved, folder / "model" / ONNX_FILE, inputs)
    print(f"{folder / 'model' / ONNX_FILE}: max logit difference {worst:.2e} against torch on {len(inputs)} images")
    if worst > TOLERANCE:
        raise SearchFailed(f"the ONNX model's logits differ from torch's by {worst:.2e} (over {TOLERANCE:g})")
    return 0


COMMANDS = {"tasks": _tasks_command, "report": _report_command, "predict": _predict_command, "export": _export_command}


def _search_command(argv: Sequence[str]) -> int:
    parser = search_parser()
    given = Parser(add_help=False)
    given.add_argument("--config")
    if (path := given.parse_known_args(argv)[0].config) is not None:
        from search.command_line.config_file import config_defaults

        parser.set_defaults(**config_defaults(path))  # what the command line gives overrides the file
    args = parser.parse_args(argv)
    names = list_tasks() if args.tasks == ["all"] else args.tasks
    options = [_options(name, args) for name in names]
    from search.cluster.session import check_address
    from search.runs import prepared_tasks

    check_address(args.address or os.environ.get("RAY_ADDRESS"))
    with StopSignals() as stops:
        try:
            with prepared_tasks(options) as prepared:
                return _run_searches(parser, args, prepared, stops)
        except KeyboardInterrupt:
            print(f"{stops.reason()} before the search started; nothing ran", file=sys.stderr)
            return stops.exit_code()


class StopSignals:
    """SIGTERM and SIGHUP (a scheduler preempting the job, a closed terminal) stop a search as Ctrl-C does: Ray
    Tune's own Ctrl-C handler while trials run (it ends the run and saves its state), KeyboardInterrupt otherwise.
    Ray installs its handlers as it starts, so ``arm`` runs again after it."""

    def __init__(self) -> None:
        self.received: list[int] = []
        self.saved: dict = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():  # signals reach only the main thread
            self.saved = {s: signal.getsignal(s) for s in STOP_SIGNALS}
        self.arm()
        return self

    def __exit__(self, *exc) -> None:
        for number, handler in self.saved.items():
            signal.signal(number, handler)

    def arm(self) -> None:
        for number in self.saved:
            signal.signal(number, self._stop)

    def _stop(self, number: int, frame) -> None:
        self.received.append(number)
        interrupt = signal.getsignal(signal.SIGINT)
        if callable(interrupt) and interrupt is not signal.default_int_handler:
            interrupt(signal.SIGINT, frame)
        else:
            raise KeyboardInterrupt

    def reason(self) -> str:
        return f"terminated ({signal.Signals(self.received[0]).name})" if self.received else "interrupted"

    def exit_code(self) -> int:
        """The shell's code for the signal that stopped the command: 128 + its number, 130 for Ctrl-C."""
        return 128 + self.received[0] if self.received else INTERRUPTED


def _run_searches(parser: argparse.ArgumentParser, args: argparse.Namespace, prepared: list, stops: StopSignals) -> int:
    from results import best_markdown
    from search.outputs import write_summary
    from search.runs import run_prepared

    def started(dashboard: str | None) -> None:
        stops.arm()  # over the handlers Ray installed as it started
        if dashboard:
            logging.getLogger("search").info("Ray dashboard: %s", dashboard)

    for item in prepared:
        if item.done:
            print(best_markdown(item.done), flush=True)
    try:
        for _, record in run_prepared(prepared, started):
            print(best_markdown(record), flush=True)
    except (KeyboardInterrupt, SearchInterrupted) as e:
        started = [p.options.task for p in prepared if p.done or p.files.exists()]
        rest = [p.options.task for p in prepared if p.options.task not in started]
        commands = [_command(parser, args, started, resume=True)] if started else []
        commands += [_command(parser, args, rest, resume=False)] if rest else []
        reason = str(e) if isinstance(e, SearchInterrupted) and not stops.received else stops.reason()
        print(f"{reason}\nto continue: {' && '.join(commands)}", file=sys.stderr)
        return stops.exit_code()
    summary = write_summary(args.out)
    if len(prepared) > 1:
        print(summary)
    return 0


def _command(parser: argparse.ArgumentParser, args: argparse.Namespace, tasks: list[str], resume: bool) -> str:
    """The command line that repeats ``args`` for ``tasks``, continuing their searches when ``resume``: the options
    given, not those at their defaults (a config file's values are its defaults)."""
    words = ["python", "-m", "search", *tasks]
    if args.config is not None:
        words += ["--config", args.config]
    for name, how in declared().items():
        if not how.on_command_line or name in ("resume", "overwrite"):
            continue
        value = getattr(args, name)
        if value == parser.get_default(name):
            continue
        words.append(how.spelling(name))
        if how.parse is not None:  # not a flag
            words.append(",".join(value) if isinstance(value, tuple) else str(value))
    return shlex.join(words + (["--resume"] if resume else []))


def _options(name: str, args: argparse.Namespace) -> SearchOptions:
    from search.inputs.data import recorded_task

    given = {k: v for k, v in vars(args).items() if k in declared()}
    return SearchOptions(task=recorded_task(name, args.out), **given)


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
    logging.getLogger("matplotlib").setLevel(logging.WARNING)  # its first run's "generated new fontManager"
    if clash := datasets_clash():
        print(clash, file=sys.stderr)
    try:
        command = COMMANDS.get(argv[0]) if argv else None
        return command(argv[1:]) if command else _search_command(argv)
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
