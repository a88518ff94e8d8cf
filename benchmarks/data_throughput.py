"""Images per second of the decode-once cache against torchvision's ImageFolder + PIL transforms + DataLoader.

Both sides read the same generated JPEG folder and apply the same kind of augmentation (crop/zoom, flip, rotation,
colour) at the same resolution; only the data pipeline is timed, no model. Usage:

    .venv/bin/python benchmarks/data_throughput.py [--images 2000] [--size 128] [--epochs 3] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision import datasets as tv_datasets
from torchvision import transforms

from datasets import build_cache, scan_folder
from datasets.decode import DECODE_CROP_PCT
from trainables import Images, Preprocess
from trainables.accel import to_unit
from trainables.steps import batches

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def make_jpegs(root: Path, n: int, width: int = 640, height: int = 480) -> None:
    """Smooth random photos (a low-resolution field upsampled, plus grain): JPEG sizes like real photos."""
    rng = np.random.default_rng(0)
    for i in range(n):
        folder = root / f"class{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        coarse = Image.fromarray(rng.integers(0, 255, (6, 8, 3), dtype=np.uint8)).resize((width, height), Image.BICUBIC)
        grain = rng.normal(0, 6, (height, width, 3))
        pixels = np.clip(np.asarray(coarse, dtype=np.float32) + grain, 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:05d}.jpg", quality=90)


def ours(root: Path, size: int, epochs: int, batch: int, cache_root: Path) -> tuple[float, list[float]]:
    start = time.perf_counter()
    cache = build_cache(scan_folder(root, val_fraction=0.01, test_fraction=0.01), size, cache_root)
    build_s = time.perf_counter() - start
    data = Images([cache.load("train")])
    gen = torch.Generator().manual_seed(0)
    prep = Preprocess(MEAN, STD, crop_pct=DECODE_CROP_PCT, size=size)
    rates = []
    for epoch in range(epochs):
        start, seen = time.perf_counter(), 0
        for idx in batches(len(data), batch, np.random.default_rng(epoch)):
            x, _ = data.batch(idx)
            prep.normalize(prep.train_view(to_unit(x), 0.5, gen))
            seen += len(idx)
        rates.append(seen / (time.perf_counter() - start))
    return build_s, rates


def baseline(root: Path, size: int, epochs: int, batch: int, workers: int) -> list[float]:
    transform = transforms.Compose(
        [
            transforms.RandomResizedCrop(size, scale=(0.6, 1.0)),
            transforms.RandomHorizontalFlip(),
            transforms.RandomRotation(12),
            transforms.ColorJitter(0.2, 0.2, 0.2),
            transforms.ToTensor(),
            transforms.Normalize(MEAN, STD),
        ]
    )
    loader = DataLoader(
        tv_datasets.ImageFolder(str(root), transform),
        batch_size=batch,
        shuffle=True,
        num_workers=workers,
        persistent_workers=workers > 0,
    )
    rates = []
    for _ in range(epochs):
        start, seen = time.perf_counter(), 0
        for x, _ in loader:
            seen += len(x)
        rates.append(seen / (time.perf_counter() - start))
    return rates


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = p.parse_args()
    torch.set_num_threads(args.workers)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "photos"
        start = time.perf_counter()
        make_jpegs(root, args.images)
        print(f"generated {args.images} JPEGs of 640x480 in {time.perf_counter() - start:.1f} s")
        build_s, cached = ours(root, args.size, args.epochs, args.batch, Path(tmp) / "cache")
        plain = baseline(root, args.size, args.epochs, args.batch, args.workers)
    print(f"cache build (decode once, {args.workers} threads): {build_s:.1f} s")
    for epoch, (a, b) in enumerate(zip(cached, plain, strict=True), start=1):
        print(
            f"epoch {epoch}: cache {a:8.0f} img/s | ImageFolder+DataLoader({args.workers} workers) {b:8.0f} img/s "
            f"| ratio {a / b:5.1f}x"
        )
    later = slice(1, None) if args.epochs > 1 else slice(0, None)
    ratio = np.mean(cached[later]) / np.mean(plain[later])
    print(f"ratio from the second epoch on: {ratio:.1f}x (target 5x)")


if __name__ == "__main__":
    main()
