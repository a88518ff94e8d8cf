"""Driver side: the command line, the search space, Tuner wiring, resources, weights, retraining."""

from search.cli import main
from search.options import SearchOptions
from search.space import make_searcher, search_space

__all__ = ["SearchOptions", "main", "make_searcher", "search_space"]
