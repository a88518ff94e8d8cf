"""Writing result files atomically (a temporary file beside the target, then ``os.replace``), and reading them back
with an error that names a damaged one."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from datasets.shared import DamagedFile, atomic_write, short

__all__ = ["copy_tree", "read_json", "write_csv", "write_json", "write_parquet", "write_text"]


def write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def write_json(path: str | Path, data: object) -> Path:
    return write_text(path, json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


def write_parquet(path: str | Path, frame: pd.DataFrame) -> Path:
    return atomic_write(path, lambda p: frame.to_parquet(p, index=False, engine="pyarrow"))


def write_csv(path: str | Path, frame: pd.DataFrame) -> Path:
    return atomic_write(path, lambda p: frame.to_csv(p, index=False))


def read_json(path: str | Path, fix: str) -> dict:
    """A JSON object this project wrote: ``{}`` when the file is not there; ``DamagedFile`` (exit 2, naming the file
    and ``fix``) when it is not whole JSON of an object."""
    path = Path(path)
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DamagedFile(path, short(e), fix) from None
    if not isinstance(data, dict):
        raise DamagedFile(path, f"a JSON {type(data).__name__}, not an object", fix)
    return data


def copy_tree(source: Path, uri: str, skip: tuple[str, ...] = ()) -> list[str]:
    """Copy the files under ``source`` (but not the top-level names in ``skip``) to ``uri``, a pyarrow filesystem
    URI (``s3://``, ``gs://``, ``file://``); returns the relative paths copied."""
    from pyarrow import fs

    filesystem, base = fs.FileSystem.from_uri(uri)
    copied = []
    for path in sorted(p for p in source.rglob("*") if p.is_file()):
        relative = path.relative_to(source)
        if relative.parts[0] in skip or relative.name.startswith("."):
            continue
        filesystem.create_dir(base if relative.parent == Path(".") else f"{base}/{relative.parent}", recursive=True)
        with filesystem.open_output_stream(f"{base}/{relative}") as stream:
            stream.write(path.read_bytes())
        copied.append(str(relative))
    return copied
