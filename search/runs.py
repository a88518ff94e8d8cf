"""What the command line and ``run()`` share: the tasks prepared under their folders' locks, the run's log beside the
results, and one Ray session for the searches still to run."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from search.command_line.options import SearchOptions
from search.failures import check_folders
from search.inputs.lock import TaskLocks

if TYPE_CHECKING:
    from search.inputs.prepare import Prepared

__all__ = ["log_to", "prepared_tasks", "run_prepared"]


@contextmanager
def prepared_tasks(options: Sequence[SearchOptions]) -> Iterator[list[Prepared]]:
    """Every task's input checked and its folder locked before Ray starts (bad input fails here, nothing started);
    the run's log in OUT/search.log while the block runs; the locks released when it ends. A folder this user cannot
    write is refused first, before torch and timm are even imported."""
    for o in options:
        check_folders(o.out, o.storage)
    from search.inputs.prepare import Prepared

    with TaskLocks() as locks:
        prepared = [Prepared(o, locks) for o in options]
        with log_to(Path(options[0].out) / "search.log"):
            yield prepared


def run_prepared(
    prepared: Sequence[Prepared], on_start: Callable[[str | None], None] = lambda url: None
) -> Iterator[tuple[Prepared, dict]]:
    """Search each task not already finished, in turn, in one Ray session (joined or started as the first task's
    options say); ``on_start`` gets the dashboard's URL once Ray runs. Yields each task and its best.json."""
    from search.cluster.session import ray_session
    from search.driver import run_task  # Ray, torch and timm: only once a search runs

    todo = [p for p in prepared if not p.done]
    if not todo:
        return
    with ray_session(todo[0].options.address, todo[0].options.dashboard_port) as dashboard:
        on_start(dashboard)
        for item in todo:
            yield item, run_task(item)


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
