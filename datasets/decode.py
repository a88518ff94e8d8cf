"""Decoding one image file the way every image of the project is decoded: EXIF orientation applied, any mode made
RGB, centre-cropped to a square and resized; a bad file gives its reason instead of raising."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = ["DECODE_CROP_PCT", "decode", "decoded_size"]

# timm's default crop_pct (most ImageNet weights' evaluation crop): images are stored at the size timm resizes to
# before that crop, so the model's input is a crop of stored pixels, never an upsampled one
DECODE_CROP_PCT = 0.875


def decoded_size(image_size: int) -> int:
    """The side images are stored at for a model input of ``image_size`` px (timm's ``int(size / crop_pct)``)."""
    return int(image_size / DECODE_CROP_PCT)


def _to_rgb(im: Image.Image) -> Image.Image:
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):  # 16-bit and float greyscale: rescale to 8 bits
        arr = np.asarray(im, dtype=np.float64)
        hi = arr.max() or 1.0
        im = Image.fromarray((arr / hi * 255).astype(np.uint8))
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        flat = Image.new("RGBA", im.size, (255, 255, 255, 255))
        return Image.alpha_composite(flat, im).convert("RGB")
    return im.convert("RGB")


def decode(path: str, size: int) -> tuple[np.ndarray | None, str, str]:
    """(pixels or None, content hash, reason when None) for one file; never raises for a bad file."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        return None, "", f"unreadable: {e.strerror or e}"
    digest = hashlib.sha1(data).hexdigest()
    if not data:
        return None, digest, "empty file (0 bytes)"
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.draft("RGB", (size, size))  # JPEG: decode at a reduced scale when the file is much larger
            im = ImageOps.exif_transpose(im)
            rgb = _to_rgb(im)
            return np.asarray(ImageOps.fit(rgb, (size, size), Image.BICUBIC), dtype=np.uint8), digest, ""
    except UnidentifiedImageError:
        return None, digest, "not a readable image: not a format Pillow recognises"
    except Image.DecompressionBombError as e:  # not an OSError
        return None, digest, f"decompression bomb: {e}"
    except (OSError, SyntaxError, ValueError) as e:
        return None, digest, f"not a readable image: {e}"
