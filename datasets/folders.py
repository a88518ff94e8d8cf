"""Finding an image folder's layout and listing its files per split and class."""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from datasets.shared import UsageError

__all__ = ["IMAGE_EXTENSIONS", "ImageFolder", "SPLITS", "SPLIT_ALIASES", "scan_folder", "split_map"]

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff"})
SPLIT_ALIASES = {"train": "train", "valid": "val", "val": "val", "validation": "val", "test": "test"}
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class ImageFolder:
    """A scanned dataset: the files of each split as (path, class index), and what was passed over."""

    root: Path
    layout: str  # "train/val/test", "train/test" or "class-folders"
    classes: tuple[str, ...]
    files: dict[str, list[tuple[str, int]]]
    skipped: list[dict[str, str]] = field(default_factory=list)
    made_splits: tuple[str, ...] = ()  # the splits the project carved (stored with the results, see split_map)

    def counts(self) -> dict[str, dict[str, int]]:
        """Images per split and class."""
        return {
            split: {c: sum(1 for _, y in items if y == i) for i, c in enumerate(self.classes)}
            for split, items in self.files.items()
        }


def _visible_dirs(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith((".", "__")))


def _list_class(folder: Path, skipped: list[dict[str, str]]) -> list[str]:
    files = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            if Path(name).suffix.lower() in IMAGE_EXTENSIONS and not name.startswith("."):
                files.append(path)
            else:
                skipped.append({"path": path, "reason": "not an image file (by extension)"})
    return files


def _class_files(split_dir: Path, skipped: list[dict[str, str]]) -> dict[str, list[str]]:
    classes = _visible_dirs(split_dir)
    for stray in sorted(p for p in split_dir.iterdir() if p.is_file()):
        skipped.append({"path": str(stray), "reason": "not inside a class folder"})
    found = {c.name: _list_class(c, skipped) for c in classes}
    for name, files in found.items():
        if not files:
            raise UsageError(f"class folder {split_dir / name} has no images; remove it or add images")
    return found


def _split_indices(labels: np.ndarray, fractions: tuple[float, ...], seed: int) -> list[np.ndarray]:
    """Stratified, seeded split of indices into len(fractions) parts."""
    rng = np.random.default_rng(seed)
    parts: list[list[int]] = [[] for _ in fractions]
    for y in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == y))
        n = len(idx)
        sizes = [max(1, round(f * n)) for f in fractions[1:]]
        if n - sum(sizes) < 1:
            raise UsageError(
                f"class index {y} has only {n} images, too few to split into {len(fractions)} parts; "
                "add images or give the splits as folders"
            )
        bounds = np.cumsum([n - sum(sizes), *sizes])
        for k, chunk in enumerate(np.split(idx, bounds[:-1])):
            parts[k].extend(chunk.tolist())
    return [np.sort(np.array(p, dtype=np.int64)) for p in parts]


def _find_root(root: Path) -> Path:
    """Kaggle archives often wrap the data in one extra folder: step into it."""
    dirs = _visible_dirs(root)
    if len(dirs) == 1 and not any(f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS for f in root.iterdir()):
        inner = _visible_dirs(dirs[0])
        if inner and dirs[0].name.lower() not in SPLIT_ALIASES:
            return dirs[0]
    return root


def _from_csv(root: Path, skipped: list[dict[str, str]]) -> dict[str, dict[str, list[str]]] | None:
    """Kaggle's sports set ships an index (filepaths, labels, data set); use it when present."""
    for index in sorted(root.glob("*.csv")):
        with open(index, newline="", encoding="utf-8", errors="replace") as f:
            reader = csv.DictReader(f)
            columns = {c.strip().lower(): c for c in reader.fieldnames or []}
            if not {"filepaths", "labels", "data set"} <= set(columns):
                continue
            per_split: dict[str, dict[str, list[str]]] = {}
            for row in reader:
                split = SPLIT_ALIASES.get(row[columns["data set"]].strip().lower())
                path = root / row[columns["filepaths"]].strip()
                if split is None:
                    skipped.append({"path": str(path), "reason": f"unknown split in {index.name}"})
                elif not path.is_file():
                    skipped.append({"path": str(path), "reason": f"listed in {index.name} but missing"})
                else:
                    per_split.setdefault(split, {}).setdefault(row[columns["labels"]].strip(), []).append(str(path))
            return per_split or None
    return None


def scan_folder(
    root: str | Path,
    seed: int = 0,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    keep: dict[str, str] | None = None,
) -> ImageFolder:
    """Detect the layout of ``root`` and list its images. Splits the project makes are stratified and seeded, or
    taken from ``keep`` (relative path -> split, as ``split_map`` gives) so that a rerun sees the same split."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise UsageError(f"data folder {root} does not exist or is not a folder")
    root = _find_root(root)
    skipped: list[dict[str, str]] = []
    split_dirs = {SPLIT_ALIASES[d.name.lower()]: d for d in _visible_dirs(root) if d.name.lower() in SPLIT_ALIASES}
    indexed = _from_csv(root, skipped)

    if indexed is not None and "train" in indexed:
        per_split, layout = indexed, "CSV index"
        split_dirs = {s: root / f"{s} (as the CSV index lists it)" for s in per_split}
    elif "train" in split_dirs:
        per_split = {s: _class_files(d, skipped) for s, d in split_dirs.items()}
        layout = "train/val/test" if {"val", "test"} <= set(per_split) else "/".join(sorted(per_split))
    else:
        per_split, layout = {"all": _class_files(root, skipped)}, "class-folders"
    names = _class_names(per_split, split_dirs, root)
    files = {s: [(path, names.index(c)) for c in names for path in found[c]] for s, found in per_split.items()}
    carve = [s for s in ("val", "test") if s not in files]
    if carve:
        _carve(files, carve, root, keep, seed, {"val": val_fraction, "test": test_fraction})
    return ImageFolder(
        root=root,
        layout=layout,
        classes=tuple(names),
        files={s: files[s] for s in SPLITS},
        skipped=skipped,
        made_splits=tuple(carve),
    )


def _class_names(per_split: dict[str, dict[str, list[str]]], split_dirs: dict[str, Path], root: Path) -> list[str]:
    """The classes, sorted; every split must have the same ones, and there must be two at least."""
    names = sorted(per_split.get("train", per_split.get("all", {})))
    for split, found in per_split.items():
        if sorted(found) != names:
            diff = sorted(set(found) ^ set(names))
            raise UsageError(
                f"class folders of {split_dirs[split]} differ from train's: {', '.join(diff)}; "
                "every split needs the same classes"
            )
    if len(names) < 2:
        raise UsageError(
            f"{root} has {len(names)} class folder(s); a classifier needs at least two "
            "(layout: DIR/CLASS/* or DIR/{train,valid,test}/CLASS/*)"
        )
    return names


def _carve(
    files: dict[str, list[tuple[str, int]]],
    carve: list[str],
    root: Path,
    keep: dict[str, str] | None,
    seed: int,
    fractions: dict[str, float],
) -> None:
    """Make the ``carve`` splits (val, test) from train (or all): as ``keep`` lists them, else stratified."""
    items = files.pop("all" if "all" in files else "train")
    if keep:
        for split in ("train", *carve):  # files new since the stored split join train: no test image leaks
            files[split] = [it for it in items if keep.get(os.path.relpath(it[0], root), "train") == split]
        return
    labels = np.array([y for _, y in items])
    parts = _split_indices(labels, (1 - sum(fractions[s] for s in carve), *(fractions[s] for s in carve)), seed)
    for split, idx in zip(("train", *carve), parts, strict=True):
        files[split] = [items[i] for i in idx]


def split_map(folder: ImageFolder) -> dict[str, str]:
    """Each file's split by its path relative to the root, to store and pass back as ``keep``."""
    return {os.path.relpath(p, folder.root): split for split, items in folder.files.items() for p, _ in items}
