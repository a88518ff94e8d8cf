"""The decode-once cache: every image decoded, EXIF-corrected and resized once into memory-mapped uint8 arrays.

Trials read the arrays with ``np.load(mmap_mode="r")`` and never open an image file, so K trials on a node share
one copy of the data in the page cache.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import logging
import os
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from datasets.decode import decode, decoded_size
from datasets.folders import SPLITS, ImageFolder
from datasets.shared import UsageError, atomic_folder

__all__ = [
    "CACHE_VERSION",
    "DataCache",
    "IMBALANCE_RATIO",
    "MAX_UNREADABLE",
    "build_cache",
    "PIECE_BYTES",
    "Piece",
    "cache_pieces",
    "default_cache_root",
    "fingerprint",
    "local_copy",
    "read_piece",
    "report_line",
]

CACHE_VERSION = 3  # 3: stored at decoded_size(image_size), cropped at load
# the piece another node copies at a time: well under a node's object store (30% of its memory by default);
# SEARCH_PIECE_MB changes it
PIECE_BYTES = int(float(os.environ.get("SEARCH_PIECE_MB", "256")) * 2**20)
MAX_UNREADABLE = 0.2  # a larger share of unreadable files means the folder is wrong, not a few files
IMBALANCE_RATIO = 3.0
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DataCache:
    """Where a decoded dataset lives; small and picklable, so it travels to Ray workers as is. ``image_size`` is the
    models' input; the images are stored larger, at ``decoded_size(image_size)``, for the centre crop and
    augmentation."""

    path: Path
    fingerprint: str
    classes: tuple[str, ...]
    image_size: int
    sizes: dict[str, int]

    def load(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """Images ``[N, H, W, 3]`` uint8 (memory-mapped) and labels ``[N]`` int64 of one split."""
        return (np.load(self.path / f"{split}_x.npy", mmap_mode="r"), np.load(self.path / f"{split}_y.npy"))

    def report(self) -> dict:
        """Images per split and class, skipped files with reasons, duplicates across splits."""
        return json.loads((self.path / "report.json").read_text())


def report_line(report: dict) -> str:
    """One line: images per split and how many files were skipped."""
    per_split = ", ".join(f"{split} {sum(c.values())}" for split, c in report["images"].items())
    total = sum(sum(c.values()) for c in report["images"].values())
    line = f"{total} images in {len(report['classes'])} classes ({per_split}) from {report['root']}"
    if report["skipped"]:
        line += f"; skipped {len(report['skipped'])} files (reasons in data_report.json)"
    return line


def default_cache_root() -> Path:
    return Path(os.environ.get("SEARCH_CACHE", Path.home() / ".cache" / "search"))


def fingerprint(folder: ImageFolder, image_size: int) -> str:
    """Changes when any file, its split or label, or the target size changes."""
    h = hashlib.sha256(f"v{CACHE_VERSION}:{image_size}:{','.join(folder.classes)}".encode())
    for split in SPLITS:
        for path, label in folder.files[split]:
            st = os.stat(path)
            h.update(f"{split}\0{label}\0{path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:20]


def build_cache(folder: ImageFolder, image_size: int, root: Path | None = None) -> DataCache:
    """Decode ``folder`` once for models of ``image_size`` px (stored at ``decoded_size(image_size)``); a second call
    with unchanged files reuses the arrays."""
    key = fingerprint(folder, image_size)
    target = (root or default_cache_root()) / "decoded" / key
    target.parent.mkdir(parents=True, exist_ok=True)
    with _locked(target):  # two searches of one new dataset decode it once
        if not _usable(target):
            started = time.perf_counter()
            stored = decoded_size(image_size)
            _write(folder, stored, key, target)
            log.info("decoded %s at %d px into %s (%.1f s)", folder.root, stored, target, time.perf_counter() - started)
        meta = json.loads((target / "meta.json").read_text())
    return DataCache(
        path=target, fingerprint=key, classes=tuple(meta["classes"]), image_size=image_size, sizes=meta["sizes"]
    )


Piece = tuple[str, int, int]  # (file name, offset, length): a bounded part of one of the cache's files


def cache_pieces(cache: DataCache, piece_bytes: int = PIECE_BYTES) -> list[Piece]:
    """The cache's files cut into pieces of at most ``piece_bytes``: another node copies them one at a time, so
    neither the object store nor any process ever holds more than a piece, whatever the dataset's size."""
    pieces: list[Piece] = []
    for path in sorted(cache.path.iterdir()):
        if path.is_file():
            size = path.stat().st_size
            pieces += [(path.name, at, min(piece_bytes, size - at)) for at in range(0, size, piece_bytes)]
            pieces += [(path.name, 0, 0)] if size == 0 else []
    return pieces


def read_piece(folder: Path, piece: Piece) -> bytes:
    name, at, length = piece
    with open(folder / name, "rb") as f:
        f.seek(at)
        return f.read(length)


def local_copy(
    cache: DataCache, pieces: list[Piece], fetch: Callable[[Piece], bytes], root: Path | None = None
) -> DataCache:
    """This machine's copy of ``cache`` under ``root``: found there, or written once, piece by piece from
    ``fetch(piece)`` (byte for byte), while other processes of the machine wait for it. Each copy adds a line to
    ``root/decoded/copies.log``; a copy of more than 10 pieces logs its progress."""
    target = (root or default_cache_root()) / "decoded" / cache.fingerprint
    if _damage(target) is not None:  # missing or damaged
        target.parent.mkdir(parents=True, exist_ok=True)
        with _locked(target):
            if not _usable(target):
                total = sum(length for _, _, length in pieces)
                with atomic_folder(target) as tmp:
                    done = 0
                    for k, piece in enumerate(pieces, 1):
                        with open(tmp / piece[0], "ab") as f:
                            f.write(fetch(piece))
                        done += piece[2]
                        if len(pieces) > 10 and k % max(1, len(pieces) // 10) == 0:
                            log.info("copying the decoded images: %d of %d MB", done >> 20, total >> 20)
                with open(target.parent / "copies.log", "a") as copies:
                    copies.write(f"{cache.fingerprint} {socket.gethostname()} pid {os.getpid()} at {time.time():.0f}\n")
                log.info("copied the decoded images to %s (%d MB, %d pieces)", target, total >> 20, len(pieces))
    return dataclasses.replace(cache, path=target)


@contextmanager
def _locked(target: Path) -> Iterator[None]:
    """Hold the machine-wide lock on one cache folder (processes of several searches and trials share it)."""
    with open(target.parent / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _usable(target: Path) -> bool:
    """The cache folder is there and whole; a damaged one is moved aside (and deleted) so that it is rebuilt."""
    if not target.exists():
        return False
    reason = _damage(target)
    if reason is None:
        return True
    log.warning("the decoded images in %s are damaged (%s); decoding them again", target, reason)
    aside = target.with_name(f".{target.name}-damaged-{os.getpid()}")
    os.replace(target, aside)
    shutil.rmtree(aside, ignore_errors=True)
    return False


def _damage(target: Path) -> str | None:
    """Why the cache in ``target`` cannot be trusted (cut short, garbage, a file missing), or None when whole.
    Pixels overwritten with garbage of the right size cannot be told from pixels; everything else can."""
    try:
        meta = json.loads((target / "meta.json").read_text())
        size, classes = int(meta["decoded_size"]), list(meta["classes"])
        json.loads((target / "report.json").read_text())
        for split in SPLITS:
            n = int(meta["sizes"][split])
            x_path, y_path = target / f"{split}_x.npy", target / f"{split}_y.npy"
            x, y = np.load(x_path, mmap_mode="r"), np.load(y_path, mmap_mode="r")
            if x.shape != (n, size, size, 3) or x.dtype != np.uint8 or x.offset + x.nbytes != x_path.stat().st_size:
                return f"{x_path.name} holds {x.shape} {x.dtype} in {x_path.stat().st_size} bytes, not {n} images"
            labels_ok = n == 0 or 0 <= y.min() <= y.max() < len(classes)
            if y.shape != (n,) or y.offset + y.nbytes != y_path.stat().st_size or not labels_ok:
                return f"{y_path.name} does not hold {n} labels of {len(classes)} classes"
    except (OSError, ValueError, KeyError, TypeError, EOFError) as e:
        return f"{type(e).__name__}: {e}"
    return None


def _check_usable(folder: ImageFolder, counts: dict[str, dict[str, int]], unreadable: list[dict[str, str]]) -> None:
    listed = sum(len(items) for items in folder.files.values())
    if listed and len(unreadable) / listed > MAX_UNREADABLE:
        first = unreadable[0]
        raise UsageError(
            f"{len(unreadable)} of {listed} images in {folder.root} could not be read ({len(unreadable) / listed:.0%}, "
            f"more than {MAX_UNREADABLE:.0%}), e.g. {first['path']}: {first['reason']}; fix or remove them"
        )
    for split, per_class in counts.items():
        empty = [c for c, n in per_class.items() if n == 0]
        if empty:
            raise UsageError(
                f"no readable images of class {', '.join(empty)} in the {split} split of {folder.root}; "
                "add images or remove the class"
            )


def _warnings(counts: dict[str, dict[str, int]], duplicates: list) -> list[str]:
    warnings = []
    train = counts["train"]
    if min(train.values()) * IMBALANCE_RATIO < max(train.values()):
        big, small = max(train, key=train.get), min(train, key=train.get)
        warnings.append(
            f"strong class imbalance in train: {big} has {train[big]} images, {small} {train[small]}; "
            "watch macro-F1 as well as accuracy"
        )
    if duplicates:
        warnings.append(f"{len(duplicates)} identical images appear in more than one split (leakage); see the report")
    return warnings


def _write(folder: ImageFolder, size: int, key: str, target: Path) -> None:
    with atomic_folder(target) as tmp:
        _decode_into(tmp, folder, size, key)


def _decode_into(tmp: Path, folder: ImageFolder, size: int, key: str) -> None:
    unreadable: list[dict[str, str]] = []
    hashes: dict[str, list[tuple[str, str]]] = {}
    sizes: dict[str, int] = {}
    counts: dict[str, dict[str, int]] = {}
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        for split in SPLITS:
            items = folder.files[split]
            x = np.lib.format.open_memmap(
                tmp / f"{split}_x.npy", mode="w+", dtype=np.uint8, shape=(len(items), size, size, 3)
            )
            labels = []
            n = 0
            for (path, label), (pixels, digest, reason) in zip(
                items, pool.map(lambda item: decode(item[0], size), items), strict=True
            ):
                if pixels is None:
                    unreadable.append({"path": path, "reason": reason})
                    continue
                x[n] = pixels
                labels.append(label)
                hashes.setdefault(digest, []).append((split, path))
                n += 1
            x.flush()
            del x
            if n < len(items):  # shrink to the images that decoded
                full = np.load(tmp / f"{split}_x.npy", mmap_mode="r")
                np.save(tmp / f"{split}_x.tmp.npy", np.ascontiguousarray(full[:n]))
                del full
                os.replace(tmp / f"{split}_x.tmp.npy", tmp / f"{split}_x.npy")
            np.save(tmp / f"{split}_y.npy", np.array(labels, dtype=np.int64))
            sizes[split] = n
            counts[split] = {c: labels.count(i) for i, c in enumerate(folder.classes)}
    _check_usable(folder, counts, unreadable)
    duplicates = [
        [{"split": s, "path": p} for s, p in places] for places in hashes.values() if len({s for s, _ in places}) > 1
    ]
    report = {
        "root": str(folder.root),
        "layout": folder.layout,
        "classes": list(folder.classes),
        "images": counts,
        "skipped": [*folder.skipped, *unreadable],
        "duplicates_across_splits": duplicates,
        "warnings": _warnings(counts, duplicates),
    }
    (tmp / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False))
    (tmp / "meta.json").write_text(
        json.dumps({"classes": list(folder.classes), "sizes": sizes, "fingerprint": key, "decoded_size": size})
    )
