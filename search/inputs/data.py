"""From a task name or a folder to a decoded cache: finding the data, the demo stand-in, the data report."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from datasets import (
    SPLITS,
    DamagedFile,
    DataCache,
    Task,
    UsageError,
    build_cache,
    default_cache_root,
    folder_task,
    get_task,
    list_tasks,
    make_demo_dataset,
    scan_folder,
    split_map,
)
from results import read_json, write_json

__all__ = [
    "DATA_ENV",
    "SPLIT_SEED",
    "TaskData",
    "data_locations",
    "download",
    "find_data",
    "how_to_get",
    "prepare",
    "recorded_task",
    "resolve_task",
    "task_folder",
]

DATA_ENV = "SEARCH_DATA"  # a root holding one folder per task
SPLIT_SEED = 0  # fixed, so that searches with different --seed compare on the same split


@dataclass(frozen=True)
class TaskData:
    """A task with its decoded data, ready for trials."""

    task: Task
    cache: DataCache
    synthetic: bool
    root: Path | None = None  # the image folder, absolute


def resolve_task(name: str) -> Task | Path:
    """A registered task, or the path of a user's image folder."""
    path = Path(name).expanduser()
    if name not in list_tasks() and path.is_dir():
        return path
    return get_task(name)


def recorded_task(name: str, out: str | Path) -> str:
    """``name``, or, where it is neither a registered task nor a folder but the name of a search in OUT (as
    ``summary.md`` and OUT show it), the image folder that search recorded in its ``search.json``."""
    if name in list_tasks() or Path(name).expanduser().is_dir() or Path(name).name != name:
        return name
    from search.tuning.ledger import SEARCH_FILE

    path = Path(out).expanduser() / name / SEARCH_FILE
    saved = read_json(path, "start the search again with the image folder's path").get("search")
    root = saved.get("data_root") if isinstance(saved, dict) else None
    return root if isinstance(root, str) and Path(root).is_dir() else name


def task_folder(name: str, out: str | Path) -> Path:
    """OUT's folder for ``name``: a task, an image folder, or the name a search's folder in OUT has."""
    plain = Path(out).expanduser() / name
    if Path(name).name == name and plain.is_dir():
        return plain
    return Path(out).expanduser() / resolve_task(name).name


def data_locations(task: Task) -> list[Path]:
    """Where a task's data is looked for when --data is not given, in order."""
    places = []
    if os.environ.get(DATA_ENV):
        places.append(Path(os.environ[DATA_ENV]).expanduser() / task.name)
    places += [Path("data") / task.name, default_cache_root() / "data" / task.name]
    return places


def how_to_get(task: Task) -> str:
    if task.kaggle:
        return (
            f"download it with `kaggle datasets download -d {task.kaggle} -p data/{task.name} --unzip` "
            f"(or kagglehub.dataset_download('{task.kaggle}')) and pass --data data/{task.name}"
        )
    classes = ",".join(task.classes or ())
    return f"put its images in class folders data/{task.name}/{{{classes}}}/ and pass --data data/{task.name}"


def download(task: Task) -> Path:
    """Fetch the task's Kaggle dataset with ``kagglehub`` (Kaggle credentials as kagglehub reads them)."""
    if not task.kaggle:
        raise UsageError(f"task {task.name!r} has no Kaggle dataset to download; {how_to_get(task)}")
    try:
        import kagglehub
    except ImportError:
        raise UsageError(
            f"--download needs Kaggle's client: pip install kagglehub (then set up credentials), or {how_to_get(task)}"
        ) from None
    try:
        return Path(kagglehub.dataset_download(task.kaggle))
    except Exception as e:  # noqa: BLE001 - network, credentials, quota: all mean "not downloaded"
        raise UsageError(
            f"could not download {task.kaggle} with kagglehub ({type(e).__name__}: {e}); {how_to_get(task)}"
        ) from None


def find_data(task: Task, data: str | None, fetch: bool = False) -> Path:
    if data is not None:
        path = Path(data).expanduser()
        if not path.is_dir():
            raise UsageError(f"--data {path} does not exist or is not a folder; {how_to_get(task)}")
        return path
    places = data_locations(task)
    for place in places:
        if place.is_dir():
            return place
    if fetch:
        return download(task)
    offer = " or pass --download to fetch it with kagglehub," if task.kaggle else ""
    raise UsageError(
        f"no data for task {task.name!r}; looked in {', '.join(map(str, places))}. "
        f"{how_to_get(task)},{offer} or run with --demo for generated stand-in data"
    )


def prepare(
    name: str,
    data: str | None,
    demo: bool,
    image_size: int | None,
    cache_root: Path | None = None,
    fetch: bool = False,
    split_file: Path | None = None,
) -> TaskData:
    """Locate (or generate), scan and decode a task's images once. Splits the project makes are written to
    ``split_file`` and read back from it on a rerun."""
    resolved = resolve_task(name)
    cache_root = cache_root or default_cache_root()
    if isinstance(resolved, Path):
        if demo:
            raise UsageError(f"--demo needs a registered task ({', '.join(list_tasks())}), not the folder {name}")
        root = resolved
    elif demo:
        root = make_demo_dataset(resolved.name, cache_root / "demo")
    else:
        root = find_data(resolved, data, fetch)
    keep = _kept_split(split_file) if split_file is not None else None
    folder = scan_folder(root, seed=SPLIT_SEED, keep=keep)
    if split_file is not None and folder.made_splits:
        write_json(split_file, split_map(folder))
    task = resolved if isinstance(resolved, Task) else folder_task(resolved.name, folder.classes, "class-folders")
    if len(folder.classes) != task.num_classes:
        raise UsageError(
            f"{root} has {len(folder.classes)} classes ({', '.join(folder.classes[:5])}...) but task "
            f"{task.name!r} has {task.num_classes}; point --data at the {task.name} dataset"
        )
    cache = build_cache(folder, image_size or task.image_size, cache_root)
    return TaskData(task=task, cache=cache, synthetic=demo, root=Path(root).resolve())


def _kept_split(path: Path) -> dict[str, str] | None:
    """The split an earlier run made (relative path -> split), or None for none."""
    fix = "delete it to split the folder again (seeded: unchanged files fall as before)"
    keep = read_json(path, fix)
    if any(not isinstance(v, str) or v not in SPLITS for v in keep.values()):
        raise DamagedFile(path, f"a split that is not one of {', '.join(SPLITS)}", fix)
    return keep or None
