"""The one image loader every command uses: any file Pillow reads becomes an upright 8-bit RGB array.

CMYK, RGBA, palette, 16-bit, grayscale and EXIF-rotated images are normal inputs, not errors. A JPEG that will
be shrunk to a model input of at most half its short side is decoded at 1/2-1/8 scale (``target``). Zero-byte,
truncated, non-image and over-large files raise :class:`ImageProblem` with a short problem code.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

# We check the pixel count ourselves (from the header, before decoding), with the limit from the config.
Image.MAX_IMAGE_PIXELS = None
ImageFile.LOAD_TRUNCATED_IMAGES = False

DEFAULT_MAX_PIXELS = 89_478_485
DRAFT_FORMATS = ("JPEG", "MPO")  # Pillow's draft() scales these in the decoder; the others decode in full


class ImageProblem(Exception):
    """An image that can't be used. ``problem`` is a short code (empty_file, truncated, not_an_image, ...)."""

    def __init__(self, problem: str, detail: str):
        super().__init__(f"{problem}: {detail}")
        self.problem = problem
        self.detail = detail


def _to_uint8(arr: np.ndarray, mode: str) -> np.ndarray:
    """Scale high-bit-depth pixels to 8 bits (Pillow's convert('L') would clip at 255)."""
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * 255
    if mode.startswith("I;16") or arr.dtype == np.uint16:
        return (arr.astype(np.uint32) * 255 // 65535).astype(np.uint8)
    a = arr.astype(np.float64)
    if mode == "F" and a.size and a.max() <= 1.0 and a.min() >= 0.0:
        return np.round(a * 255).astype(np.uint8)
    # 32-bit integer images: 16-bit PNGs often arrive as mode "I" holding 0..65535.
    hi = 65535.0 if (a.size and a.max() > 255) else 255.0
    return np.clip(np.round(a * 255.0 / hi), 0, 255).astype(np.uint8)


def to_rgb(im: Image.Image) -> np.ndarray:
    """Upright 8-bit RGB array (H, W, 3) from any Pillow image."""
    im = ImageOps.exif_transpose(im)
    mode = im.mode
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        mode = im.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        # Transparent pixels go on white, as a viewer shows them.
        rgba = im.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(bg, rgba).convert("RGB"))
    if mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        gray = _to_uint8(np.asarray(im), mode)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode != "RGB":
        im = im.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV
    return np.asarray(im)


def draft(im: Image.Image, target: int | None) -> bool:
    """Before ``load()``: let a JPEG decode at 1/2, 1/4 or 1/8 scale in the DCT domain (Pillow's ``draft``) when
    ``target`` is at most half its short side, several times faster; both sides stay >= ``target``, so the
    resize to the model input that follows still only shrinks. True when a smaller decode was set up."""
    if not target or im.format not in DRAFT_FORMATS or min(im.size) < 2 * target:
        return False
    before = im.size
    im.draft("RGB", (target, target))
    return im.size != before


def open_image(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS, target: int | None = None) -> Image.Image:
    """Open and decode ``path`` (a JPEG at reduced size when ``target`` allows, see :func:`draft`); raise
    ImageProblem for anything unusable."""
    path = Path(path)
    try:
        size = os.path.getsize(path)
    except FileNotFoundError:
        raise ImageProblem("missing_file", f"{path} does not exist") from None
    if size == 0:
        raise ImageProblem("empty_file", f"{path} is 0 bytes")
    try:
        im = Image.open(path)
    except UnidentifiedImageError:
        raise ImageProblem("not_an_image", f"{path} is not an image Pillow can read") from None
    except OSError as e:
        raise ImageProblem("unreadable", f"{path}: {e}") from None
    w, h = im.size
    if w * h > max_pixels:
        im.close()
        raise ImageProblem(
            "too_large", f"{w}x{h} = {w * h:,} pixels is over data.max_pixels={max_pixels:,} (decompression bomb?)"
        )
    draft(im, target)
    load_pixels(im, path)
    return im


def load_pixels(im: Image.Image, path: str | Path, shown: str | None = None) -> None:
    """Decode an opened image's pixels; a truncated or corrupt file raises ImageProblem naming ``shown`` (default
    the path), with the path in Pillow's message replaced by it too."""
    shown = str(path) if shown is None else shown
    try:
        im.load()
    except (OSError, SyntaxError, ValueError) as e:
        msg = str(e).replace(str(path), shown)
        problem = "truncated" if "truncat" in msg.lower() else "corrupt"
        raise ImageProblem(problem, f"{shown}: {msg}") from None


def load_rgb(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS, target: int | None = None) -> np.ndarray:
    """Decode ``path`` to an upright uint8 RGB array (H, W, 3). ``target``: the square side it will be resized
    to next; a JPEG of at least twice that short side is decoded smaller (both sides still >= target)."""
    with open_image(path, max_pixels, target) as im:
        return np.ascontiguousarray(to_rgb(im))
