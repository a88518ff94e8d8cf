"""The search's command-line options: ``search TASK [TASK ...] [options]``, each with its help and default."""

from __future__ import annotations

import argparse
import dataclasses

from datasets import UsageError, list_tasks
from search.command_line.options import DEMO, GROUPS, REAL, Option, SearchOptions, declared

__all__ = ["EXAMPLES", "Parser", "search_parser"]


class Parser(argparse.ArgumentParser):
    """argparse's parser, except that a bad option is one line naming it (``UsageError``, exit 2), not the usage
    block and a traceback-like error."""

    def error(self, message: str):
        raise UsageError(f"{message} (`{self.prog} -h` lists the options)")


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
  search export TASK --onnx        write TASK's model as ONNX, checked against torch with ONNX Runtime

`python -m search` works the same as `search`.
"""


def search_parser() -> argparse.ArgumentParser:
    """The search's options, made from their one declaration (``SearchOptions``), in groups by decision."""
    p = Parser(
        prog="search",
        usage="search TASK [TASK ...] [options]\n       search {tasks,report,predict,export} ...",
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
    groups = {name: p.add_argument_group(name) for name in GROUPS}
    fields = {f.name: f for f in dataclasses.fields(SearchOptions)}
    for name, how in declared().items():
        if how.on_command_line:
            groups[how.group].add_argument(*_flags(name, how), **_argument(fields[name].default, name, how))
    return p


def _flags(name: str, how: Option) -> list[str]:
    return [how.alias, how.spelling(name)] if how.alias else [how.spelling(name)]


def _argument(default: object, name: str, how: Option) -> dict:
    """``add_argument``'s keywords for one declared option; the help ends with its default."""
    help = how.help
    if how.preset:
        help += f" (default {REAL[name]}; {DEMO[name]} with --demo)"
    elif how.shown is not None:
        help += f" (default: {how.shown})"
    elif how.parse is not None and default is not None:
        help += f" (default {default})"
    if how.parse is None:
        return {"dest": name, "action": "store_false" if how.negated else "store_true", "help": help}
    return {
        "dest": name,
        "metavar": how.metavar,
        "type": how.parse,
        "choices": how.choices,
        "default": default,
        "help": help,
    }


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("search")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"
