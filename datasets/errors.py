"""The one exception type for bad input, which the command line prints as one line and exits 2; and its kind for
a damaged file the project wrote itself."""

from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["DamagedFile", "UsageError", "reading", "short"]


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
