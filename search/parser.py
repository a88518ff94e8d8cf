"""The search's command-line options: ``search TASK [TASK ...] [options]``, each with its help and default."""

from __future__ import annotations

import argparse

from datasets import UsageError, list_tasks

__all__ = ["EXAMPLES", "Parser", "search_parser"]


class Parser(argparse.ArgumentParser):
    """argparse's parser, except that a bad option is one line naming it (``UsageError``, exit 2), not the usage
    block and a traceback-like error."""

    def error(self, message: str):
        raise UsageError(f"{message} (`{self.prog} -h` lists the options)")


def _duration(value: str) -> float:
    from search.budget import parse_duration

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
  search export TASK --onnx        write TASK's model as ONNX, checked against torch with ONNX Runtime

`python -m search` works the same as `search`.
"""


def search_parser() -> argparse.ArgumentParser:
    """The search's options in groups (data, search, resources, cluster, output, each filled below), each with its
    default."""
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
    _data_options(p.add_argument_group("data"))
    _search_options(p.add_argument_group("search"))
    _resource_options(p.add_argument_group("resources"))
    _cluster_options(p.add_argument_group("cluster"))
    _output_options(p.add_argument_group("output"))
    return p


def _data_options(data) -> None:
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


def _search_options(space) -> None:
    from search.options import DEMO, MODES, REAL

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


def _resource_options(resources) -> None:
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


def _cluster_options(cluster) -> None:
    cluster.add_argument(
        "--address", metavar="ADDR", help="an existing Ray cluster, HOST:PORT or auto (default: start a local one)"
    )
    cluster.add_argument(
        "--autoscaling",
        action="store_true",
        help="the cluster's autoscaler adds nodes (Ray's cluster launcher, KubeRay): a trial that no live node fits "
        "waits for one instead of being refused, and one trial more than the live nodes fit waits, so that it "
        "asks for a node",
    )
    cluster.add_argument(
        "--storage", metavar="URI", help="where Ray Tune keeps experiment state, a path or URI (default OUT/TASK/tune)"
    )
    cluster.add_argument(
        "--dashboard-port",
        metavar="PORT",
        type=_port,
        default=8265,
        help="the local Ray dashboard's port on 127.0.0.1 (default 8265; 0: no dashboard)",
    )
    cluster.add_argument(
        "--max-failures",
        metavar="N",
        type=int,
        default=2,
        help="restarts of a failed trial from its checkpoint (default 2)",
    )


def _output_options(output) -> None:
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
    output.add_argument(
        "--soup",
        action="store_true",
        help="also retrain the greedy soup (averaged weights) of the best backbone's top trials; save it as the model",
    )
    output.add_argument(
        "--ensemble",
        metavar="K",
        type=int,
        default=0,
        help="also retrain an ensemble of up to K trials of any backbone, chosen on validation, and save it as the "
        "model (default: none)",
    )
    output.add_argument(
        "--tta", action="store_true", help="test, predict and export with the horizontally flipped view averaged in"
    )
    output.add_argument(
        "--mlflow",
        metavar="URI",
        help="also log every trial's parameters and metrics, and the retrained model's, to this MLflow tracking URI "
        "(sqlite:///mlflow.db, http://host:5000; needs the mlflow extra; default off)",
    )
    output.add_argument("-v", "--verbose", action="store_true", help="Ray Tune's full progress tables and logs")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("search")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"
