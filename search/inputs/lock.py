"""One driver per task folder: OUT/TASK/.lock, held (``flock``) from the first check until the command ends. The
operating system releases it when its process dies, even by kill -9, so a lock left by a crash is taken over."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import time
from pathlib import Path
from typing import IO

from datasets import UsageError

__all__ = ["LOCK_FILE", "TaskLocks"]

LOCK_FILE = ".lock"
log = logging.getLogger(__name__)


class TaskLocks:
    """The task folders one command holds, as a context manager: each taken before its task's first check, all
    released when the block ends. Taking a folder twice is no conflict (one command, the same task twice)."""

    def __init__(self) -> None:
        self._held: dict[Path, tuple[IO[str], Path]] = {}  # the open file, and the nearest folder that existed before

    def __enter__(self) -> TaskLocks:
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def take(self, task_dir: Path) -> None:
        """Hold ``task_dir``'s lock, or raise ``UsageError`` naming the process that holds it."""
        task_dir = task_dir.resolve()
        if task_dir in self._held:
            return
        existed = next((d for d in [task_dir, *task_dir.parents] if d.exists()), task_dir)  # what was there before
        task_dir.mkdir(parents=True, exist_ok=True)
        while True:
            file = open(task_dir / LOCK_FILE, "a+")  # noqa: SIM115 - held open until release or the process ends
            try:
                fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _holder(file)
                file.close()
                raise UsageError(
                    f"{task_dir} is in use by the search of pid {holder.get('pid', '?')} on "
                    f"{holder.get('host', '?')} (started {_when(holder)}); wait for it to end, or stop it (Ctrl-C) and "
                    "then continue it with --resume"
                ) from None
            if _same_file(file, task_dir / LOCK_FILE):
                break
            file.close()  # its holder removed it as we opened it: lock the file that is there now
        if previous := _holder(file):
            log.info(
                "%s: took over the lock of pid %s on %s, which ended without releasing it",
                task_dir.name,
                previous.get("pid", "?"),
                previous.get("host", "?"),
            )
        file.seek(0)
        file.truncate()
        file.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}))
        file.flush()
        self._held[task_dir] = (file, existed)

    def release(self) -> None:
        """The lock files go (a lock file left behind means a driver died), and so do the folders the locks alone
        created (a command refused for bad input leaves nothing)."""
        while self._held:
            task_dir, (file, existed) = self._held.popitem()
            (task_dir / LOCK_FILE).unlink(missing_ok=True)
            fcntl.flock(file, fcntl.LOCK_UN)
            file.close()
            folder = task_dir
            while folder != existed and not any(folder.iterdir()):
                folder.rmdir()
                folder = folder.parent


def _same_file(file: IO[str], path: Path) -> bool:
    try:
        return os.fstat(file.fileno()).st_ino == path.stat().st_ino
    except FileNotFoundError:
        return False


def _holder(file: IO[str]) -> dict:
    file.seek(0)
    try:
        holder = json.loads(file.read() or "{}")
    except json.JSONDecodeError:  # a lock file cut short says nothing about who held it
        return {"pid": "?", "host": "?"}
    return holder if isinstance(holder, dict) else {}


def _when(holder: dict) -> str:
    since = holder.get("since")
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(since)) if isinstance(since, int | float) else "?"
