"""Every kind of odd file a real image folder holds: decoded right, or skipped with its reason, never a crash."""

import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
from PIL import Image

from datasets import build_cache, scan_folder
from datasets.decode import decode


def _png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims a huge size: a decompression bomb."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    ("mode", "fmt", "suffix"),
    [
        ("L", "PNG", ".png"),
        ("P", "PNG", ".png"),
        ("RGBA", "PNG", ".png"),
        ("CMYK", "JPEG", ".JPG"),
        ("I;16", "PNG", ".png"),
        ("RGB", "WEBP", ".webp"),
        ("RGB", "BMP", ".bmp"),
        ("LA", "PNG", ".png"),
    ],
)
def test_every_colour_mode_becomes_rgb(tmp_path, mode, fmt, suffix):
    path = tmp_path / f"image{suffix}"
    img = Image.new(mode, (30, 20), 40000 if mode == "I;16" else (100 if len(mode) == 1 or mode == "P" else None))
    img.save(path, format=fmt)
    pixels, digest, reason = decode(str(path), 16)
    assert reason == "" and pixels.shape == (16, 16, 3) and pixels.dtype == np.uint8 and digest


def test_sixteen_bit_keeps_its_brightness(tmp_path):
    path = tmp_path / "deep.png"
    Image.fromarray(np.full((8, 8), 65535, dtype=np.uint16)).save(path)
    pixels, _, _ = decode(str(path), 8)
    assert pixels.min() == 255


def test_exif_orientation_is_applied(tmp_path):
    path = tmp_path / "rotated.jpg"
    img = Image.new("RGB", (40, 20), (255, 0, 0))
    img.paste((0, 0, 255), (0, 0, 20, 20))  # left half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when shown
    img.save(path, exif=exif.tobytes(), quality=95)
    pixels, _, _ = decode(str(path), 20)
    top, bottom = pixels[:5].mean(axis=(0, 1)), pixels[-5:].mean(axis=(0, 1))
    assert top[2] > top[0] and bottom[0] > bottom[2], "the blue left half should end on top"


def test_animated_gif_gives_its_first_frame(tmp_path):
    path = tmp_path / "anim.gif"
    frames = [Image.new("RGB", (16, 16), c) for c in ((255, 0, 0), (0, 255, 0))]
    frames[0].save(path, save_all=True, append_images=frames[1:])
    pixels, _, reason = decode(str(path), 16)
    assert reason == "" and pixels[..., 0].mean() > 200 and pixels[..., 1].mean() < 50


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "empty file (0 bytes)"),
        (b"just some text\n", "not a readable image"),
        (_png_claiming(40000, 40000), "decompression bomb"),
    ],
)
def test_unreadable_files_give_a_reason(tmp_path, content, reason):
    path = tmp_path / "bad.jpg"
    path.write_bytes(content)
    pixels, _, why = decode(str(path), 16)
    assert pixels is None and why.startswith(reason)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_files_are_skipped_not_padded(tmp_path, fmt):
    path = tmp_path / f"cut.{fmt.lower()}"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path, format=fmt)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    pixels, _, why = decode(str(path), 16)
    assert pixels is None and why.startswith("not a readable image")


def test_unicode_names_spaces_and_symlinks_are_read(tmp_path):
    root = tmp_path / "data"
    for cls in ("café crème", "日本"):
        for i in range(4):
            path = root / cls / f"photo {i} ü.PNG"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (20, 20), (i * 50, 10, 10)).save(path, format="PNG")
    (root / "日本" / "link.png").symlink_to(root / "café crème" / "photo 0 ü.PNG")
    folder = scan_folder(root)
    assert folder.classes == ("café crème", "日本")
    cache = build_cache(folder, 8, tmp_path / "cache")
    assert sum(cache.sizes.values()) == 9 and not cache.report()["skipped"]


def _cut_short(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _garble_header(path):
    data = bytearray(path.read_bytes())
    data[:16] = b"\x00" * 16
    path.write_bytes(bytes(data))


def _bad_labels(path):
    np.save(path, np.full(np.load(path).shape, 7, dtype=np.int64))  # class 7 of 2


def _drop_sizes(path):
    import json

    meta = json.loads(path.read_text())
    del meta["sizes"]
    path.write_text(json.dumps(meta))


@pytest.mark.parametrize(
    ("name", "damage"),
    [
        ("train_x.npy", _cut_short),
        ("val_x.npy", _garble_header),
        ("train_y.npy", _bad_labels),
        ("meta.json", _drop_sizes),
        ("report.json", lambda p: p.unlink()),
    ],
)
def test_a_damaged_decoded_cache_is_decoded_again_with_one_log_line(tiny_eggs, tmp_path, caplog, name, damage):
    folder = scan_folder(tiny_eggs)
    whole = build_cache(folder, 24, tmp_path)
    expected = {s: [a.copy() for a in whole.load(s)] for s in ("train", "val", "test")}
    damage(whole.path / name)
    healed = build_cache(folder, 24, tmp_path)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and str(whole.path) in warnings[0] and "decoding them again" in warnings[0]
    assert healed.path == whole.path and healed.sizes == whole.sizes
    for split, (x, y) in expected.items():
        got_x, got_y = healed.load(split)
        assert np.array_equal(got_x, x) and np.array_equal(got_y, y)
    caplog.clear()
    build_cache(folder, 24, tmp_path)
    assert not [r for r in caplog.records if r.levelname == "WARNING"], "a whole cache is trusted as it is"


def test_two_processes_decoding_one_new_dataset_decode_it_once(tiny_eggs, tmp_path):
    script = (
        "import logging, sys; from pathlib import Path; logging.basicConfig(level=logging.INFO);"
        "from datasets import build_cache, scan_folder;"
        f"c = build_cache(scan_folder(Path({str(tiny_eggs)!r})), 40, Path({str(tmp_path)!r})); print(c.fingerprint)"
    )
    runs = [
        subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [run.communicate(timeout=120) for run in runs]
    assert all(run.returncode == 0 for run in runs), outputs
    assert outputs[0][0] == outputs[1][0], "one cache, the same fingerprint"
    assert sum(err.count("INFO:datasets.cache:decoded") for _, err in outputs) == 1
    assert len(list((tmp_path / "decoded").iterdir())) == 2  # the cache folder and its lock file


def test_another_nodes_copy_comes_in_bounded_pieces_byte_for_byte_and_once(tiny_eggs, tmp_path):
    from datasets import cache_pieces, local_copy, read_piece

    cache = build_cache(scan_folder(tiny_eggs), 32, tmp_path / "driver")
    pieces = cache_pieces(cache, piece_bytes=4096)
    assert max(length for _, _, length in pieces) <= 4096
    sizes = {p.name: p.stat().st_size for p in cache.path.iterdir() if p.is_file()}
    assert {name: sum(n for f, _, n in pieces if f == name) for name in sizes} == sizes, "every byte once"
    fetched: list = []

    def fetch(piece):
        fetched.append(piece)
        return read_piece(cache.path, piece)

    copy = local_copy(cache, pieces, fetch, root=tmp_path / "node")
    assert fetched == pieces and len(pieces) > len(sizes)
    assert all((copy.path / name).read_bytes() == (cache.path / name).read_bytes() for name in sizes)
    assert local_copy(cache, pieces, fetch, root=tmp_path / "node").path == copy.path and fetched == pieces
    assert copy.load("train")[0].shape == cache.load("train")[0].shape
