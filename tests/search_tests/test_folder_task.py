"""A user's own folder, full of odd and broken files, searched end to end: nothing crashes, nothing is hidden."""

import json
import shutil
import struct
import zlib

import numpy as np
from PIL import Image

from search import main
from tests.search_tests.tiny import tiny_search


def _bomb() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 50000, 50000, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def test_a_messy_folder_is_searched_and_every_bad_file_is_reported(ray_cluster, tiny_eggs, tmp_path):
    root = tmp_path / "my eggs"
    for cls in ("broken", "intact"):
        (root / cls).mkdir(parents=True)
        for split in ("train", "valid", "test"):
            for src in (tiny_eggs / split / cls).iterdir():
                shutil.copy(src, root / cls / f"{split}-{src.name}")
    good = root / "intact"
    Image.new("L", (40, 30), 120).save(good / "grey.png")
    Image.new("CMYK", (40, 30), (10, 20, 30, 0)).save(good / "print.JPG")
    Image.new("RGBA", (40, 30), (200, 10, 10, 128)).save(good / "alpha.webp")
    Image.fromarray(np.full((20, 20), 30000, dtype=np.uint16)).save(good / "deep.png")
    Image.new("RGB", (20, 20), 5).save(root / "broken" / "ñandú ö.jpeg")
    (root / "broken" / "alias.jpg").symlink_to(root / "broken" / "train-0000.jpg")
    bad = {
        "empty.jpg": b"",
        "notes.txt": b"hello",
        ".DS_Store": b"\0\0\0\1Bud1",
        "Thumbs.db": b"\xd0\xcf\x11\xe0",
        "fake.jpg": b"this is text",
        "bomb.png": _bomb(),
    }
    for name, content in bad.items():
        (root / "broken" / name).write_bytes(content)
    cut = (root / "intact" / "train-0001.jpg").read_bytes()
    (root / "intact" / "cut.jpg").write_bytes(cut[: len(cut) // 2])

    out = tmp_path / "runs"
    code = main(tiny_search(root, out, "--no-retrain", max_epochs=1, pretrained="auto"))
    assert code == 0
    report = json.loads((out / "my eggs" / "data_report.json").read_text())
    skipped = {s["path"].rsplit("/", 1)[1]: s["reason"] for s in report["skipped"]}
    assert set(skipped) == {*bad, "cut.jpg"}
    assert skipped["bomb.png"].startswith("decompression bomb") and skipped["empty.jpg"].startswith("empty file")
    total = sum(sum(c.values()) for c in report["images"].values())
    assert total == 80 + 4 + 2  # tiny eggs, the odd-but-good intact files, the unicode file and the symlink
    best = json.loads((out / "my eggs" / "best.json").read_text())
    assert best["provenance"]["synthetic"] is False and "test_acc" not in best
