"""Generated stand-ins for the sports and anime tasks: the same layouts as the real downloads, drawn procedurally.

sports: 100 classes in train/valid/test folders; a class is a (playing field, equipment, colour) combination, with
lines, players and lighting varying freely. anime: anime, cartoon and human faces in one folder of class folders;
the styles differ in eyes, outlines and shading, not in one colour.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

__all__ = ["COLOURS", "EQUIPMENT", "FACES", "FIELDS", "SPORTS", "render_face", "render_sport"]

FIELDS = {
    "grass": (60, 140, 60),
    "clay": (190, 100, 60),
    "court": (60, 90, 170),
    "ice": (215, 230, 240),
    "wood": (170, 120, 70),
}
EQUIPMENT = ("ball", "oval", "ring", "stick")
COLOURS = {
    "white": (245, 245, 245),
    "yellow": (240, 220, 40),
    "red": (210, 40, 40),
    "black": (25, 25, 25),
    "orange": (240, 140, 30),
}
SPORTS = tuple(f"{f}-{e}-{c}" for f in FIELDS for e in EQUIPMENT for c in COLOURS)
FACES = ("anime", "cartoon", "human")


def _noise(rng: np.random.Generator, img: Image.Image, sigma: float) -> Image.Image:
    arr = np.asarray(img, dtype=np.float32) * rng.uniform(0.8, 1.15) + rng.normal(0, sigma, (*img.size[::-1], 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def _jitter(rng: np.random.Generator, colour: tuple[int, ...], amount: float = 18) -> tuple[int, ...]:
    return tuple(int(np.clip(c + rng.normal(0, amount), 0, 255)) for c in colour)


def render_sport(seed: tuple[int, ...], label: int, size: int = 64) -> Image.Image:
    """A field with its markings, players and one piece of equipment that, with the field, names the sport."""
    rng = np.random.default_rng(list(seed))
    field, equipment, colour = SPORTS[label].split("-")
    big = size * 2
    img = Image.new("RGB", (big, big), _jitter(rng, FIELDS[field]))
    draw = ImageDraw.Draw(img)
    line = _jitter(rng, (235, 235, 235), 10)
    for _ in range(int(rng.integers(1, 4))):  # field markings, shared by every sport on that field
        x0, y0, x1, y1 = rng.uniform(0, big, 4)
        draw.line([(x0, y0), (x1, y1)], fill=line, width=int(rng.integers(1, 4)))
    for _ in range(int(rng.integers(1, 4))):  # players: colours tell nothing about the sport
        x, y = rng.uniform(0.1, 0.9, 2) * big
        h = big * rng.uniform(0.2, 0.35)
        draw.ellipse([x - h * 0.12, y - h * 0.5, x + h * 0.12, y - h * 0.26], fill=(220, 180, 150))
        draw.rectangle([x - h * 0.18, y - h * 0.26, x + h * 0.18, y + h * 0.5], fill=tuple(rng.integers(0, 255, 3)))
    x, y = rng.uniform(0.25, 0.75, 2) * big
    r = big * rng.uniform(0.07, 0.12)
    fill = _jitter(rng, COLOURS[colour], 10)
    if equipment == "ball":
        draw.ellipse([x - r, y - r, x + r, y + r], fill=fill, outline=(40, 40, 40))
    elif equipment == "oval":
        draw.ellipse([x - 1.6 * r, y - r, x + 1.6 * r, y + r], fill=fill, outline=(40, 40, 40))
    elif equipment == "ring":
        draw.ellipse([x - 1.3 * r, y - 1.3 * r, x + 1.3 * r, y + 1.3 * r], outline=fill, width=max(2, int(r / 2)))
    else:
        angle = rng.uniform(0, np.pi)
        dx, dy = 3 * r * np.cos(angle), 3 * r * np.sin(angle)
        draw.line([(x - dx, y - dy), (x + dx, y + dy)], fill=fill, width=max(3, int(r / 2)))
    return _noise(rng, img.resize((size, size), Image.LANCZOS), 4)


def _eyes_and_mouth(
    draw: ImageDraw.ImageDraw,
    rng: np.random.Generator,
    style: str,
    face: tuple[float, float, float, float],
    hair: tuple[int, ...],
    skin: tuple[int, ...],
) -> None:
    """The eyes and mouth of a ``style`` face centred at ``face`` (centre, half width, half height)."""
    cx, cy, w, h = face
    eye_y, eye_dx = cy - h * 0.05, w * 0.45
    for side in (-1, 1):
        ex = cx + side * eye_dx
        if style == "anime":
            iris = tuple(int(c) for c in rng.integers(0, 255, 3))
            draw.ellipse(
                [ex - w * 0.22, eye_y - h * 0.28, ex + w * 0.22, eye_y + h * 0.2],
                fill=(255, 255, 255),
                outline=(30, 20, 20),
                width=2,
            )
            draw.ellipse([ex - w * 0.17, eye_y - h * 0.2, ex + w * 0.17, eye_y + h * 0.18], fill=iris)
            draw.ellipse([ex - w * 0.1, eye_y - h * 0.18, ex, eye_y - h * 0.08], fill=(255, 255, 255))
        elif style == "cartoon":
            draw.ellipse(
                [ex - w * 0.25, eye_y - h * 0.22, ex + w * 0.25, eye_y + h * 0.22],
                fill=(255, 255, 255),
                outline=(0, 0, 0),
                width=4,
            )
            draw.ellipse([ex - w * 0.07, eye_y - h * 0.05, ex + w * 0.07, eye_y + h * 0.09], fill=(0, 0, 0))
        else:
            draw.ellipse([ex - w * 0.14, eye_y - h * 0.05, ex + w * 0.14, eye_y + h * 0.05], fill=(245, 240, 235))
            draw.ellipse([ex - w * 0.06, eye_y - h * 0.05, ex + w * 0.06, eye_y + h * 0.05], fill=(60, 40, 30))
            draw.line([(ex - w * 0.18, eye_y - h * 0.14), (ex + w * 0.18, eye_y - h * 0.16)], fill=hair, width=3)
    mouth_y = cy + h * 0.45
    if style == "cartoon":
        draw.chord(
            [cx - w * 0.45, mouth_y - h * 0.2, cx + w * 0.45, mouth_y + h * 0.25],
            0,
            180,
            fill=(200, 30, 40),
            outline=(0, 0, 0),
            width=4,
        )
    elif style == "anime":
        draw.line([(cx - w * 0.08, mouth_y), (cx + w * 0.08, mouth_y)], fill=(120, 50, 50), width=2)
    else:
        draw.line(
            [(cx, cy + h * 0.05), (cx - w * 0.05, cy + h * 0.25)], fill=tuple(int(c * 0.75) for c in skin), width=2
        )
        draw.chord([cx - w * 0.3, mouth_y - h * 0.08, cx + w * 0.3, mouth_y + h * 0.08], 0, 180, fill=(170, 90, 90))


def render_face(seed: tuple[int, ...], label: int, size: int = 64) -> Image.Image:
    """A face drawn as anime (huge eyes, flat colour), cartoon (thick outlines) or human (shading, photo noise)."""
    rng = np.random.default_rng(list(seed))
    style = FACES[label]
    big = size * 2
    bg = tuple(int(c) for c in rng.integers(40, 230, 3))
    img = Image.new("RGB", (big, big), bg)
    draw = ImageDraw.Draw(img)
    cx, cy = big * rng.uniform(0.42, 0.58), big * rng.uniform(0.45, 0.58)
    w, h = big * rng.uniform(0.24, 0.32), big * rng.uniform(0.3, 0.38)
    hair = tuple(int(c) for c in rng.integers(0, 255, 3))
    if style == "human":
        hair = _jitter(rng, [(30, 25, 20), (90, 60, 35), (200, 170, 110), (130, 60, 30)][int(rng.integers(4))])
    skin = _jitter(rng, [(250, 225, 210), (225, 180, 140), (160, 110, 80), (95, 65, 45)][int(rng.integers(4))])
    outline = {"anime": (60, 40, 40), "cartoon": (0, 0, 0), "human": None}[style]
    width = {"anime": 2, "cartoon": 6, "human": 0}[style]
    draw.ellipse([cx - w * 1.1, cy - h * 1.15, cx + w * 1.1, cy + h * 0.3], fill=hair)
    if style == "anime":  # narrow pointed chin
        draw.polygon(
            [
                (cx - w, cy - h * 0.3),
                (cx + w, cy - h * 0.3),
                (cx + w * 0.7, cy + h * 0.5),
                (cx, cy + h),
                (cx - w * 0.7, cy + h * 0.5),
            ],
            fill=skin,
            outline=outline,
            width=width,
        )
        draw.ellipse([cx - w, cy - h, cx + w, cy + h * 0.2], fill=skin)
    else:
        draw.ellipse([cx - w, cy - h, cx + w, cy + h], fill=skin, outline=outline, width=width)
    _eyes_and_mouth(draw, rng, style, (cx, cy, w, h), hair, skin)
    if style == "human":  # soft light across the face, a blurred photo, sensor noise
        yy, xx = np.mgrid[0:big, 0:big].astype(np.float32)
        light = 1 - 0.35 * np.clip(((xx - cx) * rng.choice([-1, 1]) / w + 1) / 2, 0, 1)
        arr = np.asarray(img, dtype=np.float32) * light[..., None]
        img = Image.fromarray(arr.astype(np.uint8)).filter(ImageFilter.GaussianBlur(1.2))
        return _noise(rng, img.resize((size, size), Image.LANCZOS), 6)
    return _noise(rng, img.resize((size, size), Image.LANCZOS), 1.5)
