"""How a search can end other than with a result: the command line's exit 1 and exit 130."""

__all__ = ["SearchFailed", "SearchInterrupted"]


class SearchFailed(RuntimeError):
    """The search ran but gave nothing to choose from; the command line exits 1 with this message."""


class SearchInterrupted(RuntimeError):
    """Ctrl-C ended the search early; its state and the tables of what finished are kept for ``--resume``."""
