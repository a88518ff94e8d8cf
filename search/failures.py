"""How a search can end other than with a result (the command line's exit 1 and exit 130), and a write that failed
for lack of space: found anywhere in a chain of exceptions, and said in one line that names the place with the least
space left and the option that moves it."""

from __future__ import annotations

import errno
import shutil
import tempfile
from pathlib import Path

__all__ = ["SearchFailed", "SearchInterrupted", "check_folders", "check_writable", "disk_full", "full_disk_line"]


class SearchFailed(RuntimeError):
    """The search ran but gave nothing to choose from; the command line exits 1 with this message."""


class SearchInterrupted(RuntimeError):
    """Ctrl-C ended the search early; its state and the tables of what finished are kept for ``--resume``."""


FULL = (errno.ENOSPC, errno.EDQUOT)
# a folder the search cannot write in: a read-only file system, another user's folder, a file in the path
UNWRITABLE = (errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.EEXIST)
FULL_TEXTS = ("No space left on device", "database or disk is full", "Disk quota exceeded")


def check_writable(folder: Path, option: str) -> None:
    """Write a file in ``folder`` (or its nearest existing parent: a refused search leaves no folder behind), or
    raise a one-line ``UsageError`` naming the option, the folder, why and the fix: before anything starts."""
    from datasets import UsageError

    try:
        existing = next(d for d in [folder, *folder.parents] if d.exists())  # stat itself may be denied
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as e:
        if e.errno not in UNWRITABLE:
            raise
        raise UsageError(
            f"cannot write in {option} {folder}: {e.strerror}; pass {option} a folder this user may write "
            f"(e.g. {option} ~/runs) or make that one writable"
        ) from None


def check_folders(out: str, storage: str | None) -> None:
    """``--out`` and a local ``--storage`` writable, or the one line ``check_writable`` raises."""
    check_writable(Path(out).expanduser(), "--out")
    if storage and "://" not in storage:
        check_writable(Path(storage).expanduser(), "--storage")


def disk_full(error: BaseException) -> bool:
    """Whether a write failed for lack of space, anywhere in the chain of exceptions (Ray, SQLite and pyarrow each
    wrap the operating system's error, some only in their message)."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in FULL:
            return True
        if any(text in str(error) for text in FULL_TEXTS):
            return True
        error = error.__cause__ or error.__context__
    return False


def full_disk_line(out: str, storage: str | None) -> str:
    """Which of the places the search writes to (``--out``, the cache, the temporary folder, a local ``--storage``)
    has the least space left, named with the option that moves it."""
    from datasets import default_cache_root

    places = {"--out": out, "the cache (SEARCH_CACHE)": default_cache_root(), "TMPDIR": tempfile.gettempdir()}
    if storage and "://" not in storage:
        places["--storage"] = storage
    free = {}
    for option, place in places.items():
        path = Path(place).expanduser().absolute()
        while not path.exists():
            path = path.parent
        free[option] = (shutil.disk_usage(path).free, path)
    option, (left, path) = min(free.items(), key=lambda item: item[1][0])
    return (
        f"the disk is full: {path} ({option}) has {left / 2**20:.1f} MB free; what was written before stays whole. "
        f"Free space there or move {option} elsewhere, then continue with --resume"
    )
