"""What every package shares, so it lives in the lowest one: the one exception type for bad input (the command line
prints it as one line and exits 2) and its kind for a damaged file the project wrote itself; and writing files and
folders whole or not at all (a temporary name beside the target, then ``os.replace``), so that a crash or a full disk
never leaves half a file."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["DamagedFile", "UsageError", "atomic_folder", "atomic_write", "reading", "short"]


class UsageError(ValueError):
    """Bad arguments or bad data; the message names the bad value and the fix."""


class DamagedFile(UsageError):
    """A file the project wrote and reads back is cut short, garbled or not what it wrote (a crash, a full disk, an
    edit); the message names it and the fix."""

    def __init__(self, path: object, reason: str, fix: str):
        super().__init__(f"{path} is damaged ({reason}); {fix}")


def short(error: BaseException) -> str:
    """An exception as ``Type: first line``, for one-line messages."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


@contextmanager
def reading(path: object, fix: str) -> Iterator[None]:
    """Any error while reading back ``path`` (each reader raises its own type) becomes ``DamagedFile``."""
    try:
        yield
    except UsageError:
        raise
    except Exception as e:
        raise DamagedFile(path, short(e), fix) from None


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` and move the result onto ``path``; a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # the same suffix: writers such as numpy.save add theirs to a name without it
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o644)  # mkstemp makes files private; results are meant to be read
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


@contextmanager
def atomic_folder(target: Path) -> Iterator[Path]:
    """A new folder to fill, put in place of ``target`` (replacing an old one) only when the block ends without an
    error; otherwise removed."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = target.with_name(f".{target.name}-old-{os.getpid()}")
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)
