"""Driver side: the command line, the search space, Tuner wiring, resources, weights, retraining.

Names are imported on first use, so that ``search -h`` answers without loading Ray, torch and timm.
"""

from importlib import import_module

__all__ = ["SearchOptions", "SearchResult", "main", "make_searcher", "run", "search_space"]

_HOMES = {
    "SearchOptions": "search.command_line.options",
    "main": "search.command_line.main",
    "make_searcher": "search.tuning.space",
}
_HOMES |= {"search_space": "search.tuning.space", "run": "search.api", "SearchResult": "search.api"}


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module 'search' has no attribute {name!r}; it has {', '.join(__all__)}")
    return getattr(import_module(_HOMES[name]), name)
