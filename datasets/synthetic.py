"""Generated stand-in data for ``--demo``, written once as a real JPEG folder; here the eggs and the registry.

The classes are told apart by shape (jagged cracks, chipped shell), not by colour: intact eggs carry speckles,
stains and yellow objects nearby, so that a colour statistic alone cannot separate them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from datasets.shared import UsageError, atomic_folder, atomic_write
from datasets.standins import FACES, SPORTS, render_face, render_sport

__all__ = ["DEMO_SIZES", "GENERATOR_VERSION", "RENDER", "STANDINS", "StandIn", "make_demo_dataset", "render_egg"]

GENERATOR_VERSION = 8
RENDER = 2  # supersampling factor: shapes are drawn at RENDER x size, then downsampled (anti-aliasing)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    palette = np.array(
        [
            [150, 105, 70],
            [190, 160, 120],
            [120, 120, 125],
            [200, 200, 195],
            [70, 90, 130],
            [95, 130, 85],
            [230, 225, 215],
            [60, 50, 45],
        ],
        dtype=np.float32,
    )
    base = palette[rng.integers(len(palette))] * rng.uniform(0.8, 1.2, 3)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    angle = rng.uniform(0, 2 * np.pi)
    gradient = (np.cos(angle) * xx + np.sin(angle) * yy - 0.5) * rng.uniform(0.2, 0.6)
    coarse = rng.normal(0, 1, (5, 5)).astype(np.float32)
    coarse = np.asarray(Image.fromarray(coarse, mode="F").resize((size, size), Image.BICUBIC))
    texture = coarse * rng.uniform(0.02, 0.08) + rng.normal(0, rng.uniform(0.01, 0.05), (size, size))
    light = 1.0 + gradient + texture
    return base[None, None, :] * light[..., None]


def _egg_polygon(cx: float, cy: float, a: float, b: float, theta: float, k: float) -> list[tuple[float, float]]:
    t = np.linspace(0, 2 * np.pi, 90, endpoint=False)
    x = a * np.cos(t)
    y = b * np.sin(t) * (1 + k * np.cos(t))  # one end wider than the other
    rx = cx + x * np.cos(theta) - y * np.sin(theta)
    ry = cy + x * np.sin(theta) + y * np.cos(theta)
    return list(zip(rx.tolist(), ry.tolist(), strict=True))


def _shaded_shell(rng: np.random.Generator, size: int, cx: float, cy: float, a: float, b: float, theta: float):
    shells = np.array(
        [[245, 240, 228], [235, 215, 185], [200, 150, 105], [170, 120, 80], [250, 250, 250]], dtype=np.float32
    )
    shell = shells[rng.integers(len(shells))] * rng.uniform(0.92, 1.05, 3)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    dx, dy = xx - cx, yy - cy
    u = (dx * np.cos(theta) + dy * np.sin(theta)) / a
    v = (-dx * np.sin(theta) + dy * np.cos(theta)) / b
    z = np.sqrt(np.clip(1 - u**2 - v**2, 0, 1))
    light = rng.normal(0, 1, 3) * np.array([1, 1, 0]) + np.array([0, 0, 1.5])
    light /= np.linalg.norm(light)
    lambert = np.clip(u * light[0] + v * light[1] + z * light[2], 0, 1)
    specular = lambert**30 * rng.uniform(0.1, 0.4)
    ambient = rng.uniform(0.45, 0.6)
    return shell[None, None, :] * (ambient + (1 - ambient) * lambert)[..., None] + 255 * specular[..., None]


def _blob(draw: ImageDraw.ImageDraw, rng: np.random.Generator, cx: float, cy: float, r: float, fill) -> None:
    n = int(rng.integers(7, 13))
    t = np.sort(rng.uniform(0, 2 * np.pi, n))
    rr = r * rng.uniform(0.6, 1.3, n)
    draw.polygon(list(zip((cx + rr * np.cos(t)).tolist(), (cy + rr * np.sin(t)).tolist(), strict=True)), fill=fill)


def _crack(
    draw: ImageDraw.ImageDraw, rng: np.random.Generator, x: float, y: float, length: float, width: int, fill
) -> None:
    heading = rng.uniform(0, 2 * np.pi)
    points = [(x, y)]
    branches = []
    step = length / rng.integers(5, 9)
    for _ in range(int(length / step)):
        heading += rng.uniform(-1.1, 1.1)
        x, y = x + step * np.cos(heading), y + step * np.sin(heading)
        points.append((x, y))
        if rng.random() < 0.25:  # a short branch
            bh = heading + rng.choice([-1, 1]) * rng.uniform(0.6, 1.3)
            branches.append([(x, y), (x + step * np.cos(bh), y + step * np.sin(bh))])
    rim = (235, 228, 210, 255)  # the broken edge catches the light, so cracks show on dark shells too
    for colour, extra in ((rim, 2 * RENDER), (fill, 0)):
        draw.line(points, fill=colour, width=width + extra, joint="curve")
        for branch in branches:
            draw.line(branch, fill=colour, width=max(1, width - RENDER) + extra)


def _break(
    canvas: Image.Image,
    mask: Image.Image,
    rng: np.random.Generator,
    on_egg: Callable[[float], tuple[float, float]],
    shape: tuple[float, float, float, float, float],
    big: int,
) -> Image.Image:
    """Cracks, a chipped hole and (sometimes) spilled yolk on the egg ``shape`` (centre, semi-axes, angle)."""
    cx, cy, a, b, theta = shape
    chosen = [kind for kind, p in (("crack", 0.8), ("chip", 0.45), ("yolk", 0.2)) if rng.random() < p]
    if "crack" not in chosen and "chip" not in chosen:
        chosen.append(("crack", "chip")[int(rng.integers(2))])
    dark = tuple(int(c) for c in rng.uniform(20, 70, 3)) + (255,)
    damage = Image.new("RGBA", (big, big), (0, 0, 0, 0))  # cracks and chips stay on the shell
    damage_draw = ImageDraw.Draw(damage)
    if "crack" in chosen:
        for _ in range(int(rng.integers(1, 4))):
            x, y = on_egg(0.5)
            _crack(damage_draw, rng, x, y, a * rng.uniform(0.9, 1.5), int(rng.integers(3, 6)) * RENDER, dark)
    if "chip" in chosen:
        phi = rng.uniform(0, 2 * np.pi)
        ex = cx + 0.85 * a * np.cos(phi) * np.cos(theta) - 0.85 * b * np.sin(phi) * np.sin(theta)
        ey = cy + 0.85 * a * np.cos(phi) * np.sin(theta) + 0.85 * b * np.sin(phi) * np.cos(theta)
        r = a * rng.uniform(0.28, 0.42)
        _blob(damage_draw, rng, ex, ey, r * 1.15, (235, 228, 210, 255))
        _blob(damage_draw, rng, ex, ey, r, dark)
    alpha = np.minimum(np.asarray(damage.getchannel("A")), np.asarray(mask))
    damage.putalpha(Image.fromarray(alpha))
    canvas.paste(damage, (0, 0), damage)
    draw = ImageDraw.Draw(canvas, "RGBA")
    if "yolk" in chosen:
        x, y = on_egg(0.9)
        r = a * rng.uniform(0.25, 0.4)
        _blob(draw, rng, x, y, r * 1.5, (250, 245, 220, 110))  # albumen
        draw.ellipse([x - r, y - r, x + r, y + r], fill=(245, int(rng.integers(150, 200)), 20, 255))
        draw.ellipse([x - r * 0.3, y - r * 0.5, x, y - r * 0.2], fill=(255, 250, 220, 180))
    return canvas


def render_egg(seed: tuple[int, ...], broken: bool, size: int = 128) -> Image.Image:
    """One egg photo-like image; the same seed always gives the same pixels."""
    rng = np.random.default_rng(list(seed))
    big = size * RENDER
    img = _background(rng, big)

    a = big * rng.uniform(0.24, 0.34)
    b = a * rng.uniform(0.7, 0.82)
    cx, cy = big * rng.uniform(0.38, 0.62, 2)
    theta = rng.uniform(0, np.pi)
    k = rng.uniform(0.08, 0.18)

    shadow = Image.new("L", (big, big), 0)
    off = rng.uniform(-0.15, 0.15, 2) * a
    ImageDraw.Draw(shadow).polygon(_egg_polygon(cx + off[0], cy + off[1] + 0.1 * a, a, b, theta, k), fill=255)
    shadow_f = np.asarray(shadow.filter(ImageFilter.GaussianBlur(big * 0.03)), dtype=np.float32) / 255
    img = img * (1 - rng.uniform(0.2, 0.45) * shadow_f[..., None])

    canvas = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    shell = Image.fromarray(np.clip(_shaded_shell(rng, big, cx, cy, a, b, theta), 0, 255).astype(np.uint8))
    mask = Image.new("L", (big, big), 0)
    ImageDraw.Draw(mask).polygon(_egg_polygon(cx, cy, a, b, theta, k), fill=255)
    canvas.paste(shell, (0, 0), mask)
    draw = ImageDraw.Draw(canvas, "RGBA")

    def on_egg(margin: float = 0.75) -> tuple[float, float]:
        r, phi = np.sqrt(rng.uniform(0, margin**2)), rng.uniform(0, 2 * np.pi)
        x, y = r * a * np.cos(phi), r * b * np.sin(phi)
        return cx + x * np.cos(theta) - y * np.sin(theta), cy + x * np.sin(theta) + y * np.cos(theta)

    # Distractors on every egg: speckles, stains, yellow things nearby; colour is not the label.
    for _ in range(int(rng.integers(0, 30)) if rng.random() < 0.6 else 0):
        x, y = on_egg(0.9)
        r = rng.uniform(0.4, 1.3) * RENDER
        draw.ellipse([x - r, y - r, x + r, y + r], fill=(90, 60, 40, int(rng.integers(120, 230))))
    for _ in range(int(rng.integers(0, 3))):
        x, y = on_egg(0.8)
        _blob(draw, rng, x, y, a * rng.uniform(0.08, 0.2), (200, 150, 60, int(rng.integers(50, 130))))
    if rng.random() < 0.25:  # a smooth yellow object beside the egg (a lemon, a sponge)
        ang = rng.uniform(0, 2 * np.pi)
        dist = a * rng.uniform(1.0, 1.4)
        x, y = cx + dist * np.cos(ang), cy + dist * np.sin(ang)
        rx, ry = a * rng.uniform(0.2, 0.4), a * rng.uniform(0.15, 0.3)
        draw.ellipse([x - rx, y - ry, x + rx, y + ry], fill=(235, int(rng.integers(150, 200)), 30, 255))

    if broken:
        canvas = _break(canvas, mask, rng, on_egg, (cx, cy, a, b, theta), big)

    out = canvas.resize((size, size), Image.LANCZOS)
    gain = rng.uniform(0.75, 1.2)  # exposure differs from photo to photo
    arr = np.asarray(out, dtype=np.float32) * gain + rng.normal(0, 3, (size, size, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


@dataclass(frozen=True)
class StandIn:
    """How to draw a task's generated data: its classes, a renderer, and the image size on disk."""

    classes: tuple[str, ...]
    render: Callable[[tuple[int, ...], int, int], Image.Image]  # (seed, class index, size) -> image
    size: int


STANDINS = {
    "egg": StandIn(("broken", "intact"), lambda seed, label, size: render_egg(seed, label == 0, size), 128),
    "sports": StandIn(SPORTS, render_sport, 64),
    "anime": StandIn(FACES, render_face, 64),
}
# images per class and split; "all" writes one folder of class folders, which the project splits (as anime's)
DEMO_SIZES = {
    "egg": {"train": 300, "valid": 60, "test": 100},
    "sports": {"train": 16, "valid": 4, "test": 4},
    "anime": {"all": 200},
}


def make_demo_dataset(task: str, root: Path, seed: int = 0, per_class: dict[str, int] | None = None) -> Path:
    """Write the stand-in image folder for ``task`` under ``root`` once; later calls reuse it."""
    if task not in STANDINS:
        raise UsageError(
            f"--demo has generated data for {', '.join(STANDINS)}, not {task!r}; give --data DIR with real images"
        )
    standin, per_class = STANDINS[task], per_class or DEMO_SIZES[task]
    key = "-".join(f"{s}{n}" for s, n in per_class.items())
    target = Path(root) / f"{task}-v{GENERATOR_VERSION}-seed{seed}-{standin.size}px-{key}"
    if target.is_dir():  # it appears whole or not at all (os.replace below)
        return target
    with atomic_folder(target) as tmp:
        for s_idx, (split, n) in enumerate(per_class.items()):
            for label, cls in enumerate(standin.classes):
                folder = tmp / cls if split == "all" else tmp / split / cls
                folder.mkdir(parents=True)
                for i in range(n):
                    image = standin.render((seed, s_idx, label, i), label, standin.size)
                    image.save(folder / f"{i:04d}.jpg", quality=90)
    meta = {"task": task, "version": GENERATOR_VERSION, "seed": seed, "per_class": per_class, "synthetic": True}
    meta_file = target.with_name(target.name + ".json")  # beside it, not a stray file among the images
    atomic_write(meta_file, lambda p: p.write_text(json.dumps(meta, indent=2)))
    return target
