"""Tasks, image folders, the decode-once cache and the generated stand-in data."""

from datasets.cache import (
    DataCache,
    Piece,
    build_cache,
    cache_pieces,
    default_cache_root,
    local_copy,
    read_piece,
    report_line,
)
from datasets.decode import decode, decoded_size
from datasets.folders import SPLITS, ImageFolder, scan_folder, split_map
from datasets.shared import DamagedFile, UsageError, atomic_folder, atomic_write, reading, short
from datasets.synthetic import make_demo_dataset, render_egg
from datasets.tasks import DEFAULT_BACKBONES, Task, folder_task, get_task, list_tasks

__all__ = [
    "SPLITS",
    "DEFAULT_BACKBONES",
    "DamagedFile",
    "DataCache",
    "ImageFolder",
    "Task",
    "atomic_folder",
    "atomic_write",
    "UsageError",
    "build_cache",
    "cache_pieces",
    "decode",
    "decoded_size",
    "default_cache_root",
    "folder_task",
    "get_task",
    "list_tasks",
    "local_copy",
    "make_demo_dataset",
    "Piece",
    "read_piece",
    "reading",
    "render_egg",
    "report_line",
    "scan_folder",
    "short",
    "split_map",
]
