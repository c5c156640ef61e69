"""``comp sample --kind photo``: Fashion-MNIST (or digits) items turned into photo-like colour JPEGs.

What our users' competitions look like, at the cost of a few milliseconds an image: each side drawn in
300-700 px (aspect ratios vary); a cluttered background (a colour gradient, semi-transparent and opaque
rectangles, ellipses, lines and polygons in random colours, a little out of focus); the item upscaled smoothly,
coloured with its own texture and shading, turned a little, at 25-75% of the short side anywhere in the frame,
composited with a soft alpha from its intensity and a soft shadow, now and then behind a shape or two; sensor
noise; JPEG quality 90. About 10% are stored sideways as cameras do: the pixels turned and an EXIF Orientation
tag (6 or 8, sometimes 3) saying how to turn them back, so only a loader that applies it
(``PIL.ImageOps.exif_transpose``, as comp's does) sees them upright.

Every image draws from its own random stream (seed, split, index), so a sample is the same byte for byte for a
seed however many threads write it.
"""

from __future__ import annotations

import colorsys
import io
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import cv2
import numpy as np
from PIL import Image

SIDE_RANGE = (300, 700)  # each side, drawn independently
OBJECT_SCALE = (0.25, 0.75)  # the item's frame, as a fraction of the short side
SIDEWAYS = 0.10  # fraction of images stored turned, with an EXIF Orientation tag
JPEG_QUALITY = 90
EXIF_ORIENTATION = 0x0112
# Stored pixels = upright.transpose(UNDO[o]); exif_transpose applies the inverse for tag o.
UNDO = {6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270, 3: Image.Transpose.ROTATE_180}


@dataclass
class PhotoStats:
    min_side: int
    max_side: int
    sideways: int


def _colour(rng, sat=(0.2, 1.0), val=(0.25, 1.0)) -> np.ndarray:
    r, g, b = colorsys.hsv_to_rgb(rng.random(), rng.uniform(*sat), rng.uniform(*val))
    return np.array([r, g, b], np.float32) * 255


def _shapes(img: np.ndarray, rng, n: int) -> None:
    """Draw ``n`` random rectangles, ellipses, lines and polygons on ``img`` (uint8, in place)."""
    h, w = img.shape[:2]
    for _ in range(n):
        colour = tuple(int(c) for c in _colour(rng, (0.0, 1.0), (0.1, 1.0)))
        kind = rng.integers(4)
        thick = -1 if rng.random() < 0.6 else int(rng.integers(1, 8))
        x, y = int(rng.integers(-w // 8, w)), int(rng.integers(-h // 8, h))
        sx, sy = int(rng.integers(8, w // 3)), int(rng.integers(8, h // 3))
        if kind == 0:
            cv2.rectangle(img, (x, y), (x + sx, y + sy), colour, thick, cv2.LINE_AA)
        elif kind == 1:
            angle = float(rng.uniform(0, 180))
            cv2.ellipse(img, (x, y), (sx // 2, sy // 2), angle, 0, 360, colour, thick, cv2.LINE_AA)
        elif kind == 2:
            x2, y2 = int(rng.integers(0, w)), int(rng.integers(0, h))
            cv2.line(img, (x, y), (x2, y2), colour, int(rng.integers(1, 10)), cv2.LINE_AA)
        else:
            pts = np.stack([x + rng.integers(0, sx, 5), y + rng.integers(0, sy, 5)], 1).astype(np.int32)
            if thick < 0:
                cv2.fillPoly(img, [pts], colour, cv2.LINE_AA)
            else:
                cv2.polylines(img, [pts], True, colour, thick, cv2.LINE_AA)


def background(h: int, w: int, rng) -> np.ndarray:
    """uint8 (h, w, 3): a colour gradient under layers of random shapes, slightly out of focus."""
    c0, c1 = _colour(rng), _colour(rng)
    a = rng.uniform(0, 2 * np.pi)
    gh, gw = h // 16 + 2, w // 16 + 2  # linear, so drawn small and upscaled bilinearly
    t = np.arange(gw, dtype=np.float32)[None, :] * np.cos(a) + np.arange(gh, dtype=np.float32)[:, None] * np.sin(a)
    t = (t - t.min()) / max(1e-6, float(np.ptp(t)))
    small = (c0 + t[:, :, None] * (c1 - c0)).astype(np.uint8)
    img = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    for _ in range(2):  # translucent layers
        over = img.copy()
        _shapes(over, rng, int(rng.integers(6, 16)))
        a = float(rng.uniform(0.3, 0.7))
        cv2.addWeighted(over, a, img, 1 - a, 0, dst=img)
    _shapes(img, rng, int(rng.integers(4, 12)))  # opaque clutter
    sigma = float(rng.uniform(0.3, 2.0))
    return cv2.GaussianBlur(img, (0, 0), sigma)


def _texture(s: int, rng) -> np.ndarray:
    """float32 (s, s) around 1: smooth blotches, and stripes one time in three (a printed fabric)."""
    k = int(rng.integers(3, 9))
    tex = cv2.resize(rng.uniform(0.7, 1.3, (k, k)).astype(np.float32), (s, s), interpolation=cv2.INTER_CUBIC)
    if rng.random() < 1 / 3:
        a, period = rng.uniform(0, np.pi), rng.uniform(0.04, 0.15) * s
        yy, xx = np.mgrid[0:s, 0:s].astype(np.float32)
        tex *= 1 + 0.25 * np.sin((xx * np.cos(a) + yy * np.sin(a)) * (2 * np.pi / period)).astype(np.float32)
    return tex


def item_layer(item: np.ndarray, s: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """(colour float32 (s, s, 3), alpha float32 (s, s, 1)) of a grey item upscaled to ``s``, tinted, textured,
    mirrored half the time and turned by up to 20 degrees."""
    g = cv2.resize(item.astype(np.float32) / 255, (s, s), interpolation=cv2.INTER_CUBIC)
    if rng.random() < 0.5:
        g = g[:, ::-1]
    rot = cv2.getRotationMatrix2D((s / 2, s / 2), float(rng.uniform(-20, 20)), float(rng.uniform(0.9, 1.1)))
    g = cv2.warpAffine(np.ascontiguousarray(g), rot, (s, s), flags=cv2.INTER_LINEAR)
    g = np.clip(g, 0, 1)
    alpha = np.clip(g * 3.0, 0, 1)  # soft: the item's faint edge pixels blend into the background
    shade = 0.35 + 0.65 * g
    colour = _colour(rng, (0.15, 1.0), (0.35, 1.0))
    rgb = np.clip(colour * (shade * _texture(s, rng))[:, :, None], 0, 255)
    return rgb, alpha[:, :, None]


def render(item: np.ndarray, rng) -> np.ndarray:
    """One upright uint8 RGB photo of ``item`` (a 2-D grey image, object bright on black)."""
    h, w = (int(v) for v in rng.integers(SIDE_RANGE[0], SIDE_RANGE[1] + 1, 2))
    img = background(h, w, rng)
    s = int(min(h, w) * rng.uniform(*OBJECT_SCALE))
    y, x = int(rng.integers(0, h - s + 1)), int(rng.integers(0, w - s + 1))
    rgb, alpha = item_layer(item, s, rng)
    d = max(2, s // 30)  # a soft shadow below right
    shadow = cv2.GaussianBlur(alpha[:, :, 0], (0, 0), d)[:, :, None] * 0.5
    y1, x1 = min(h, y + s + d), min(w, x + s + d)  # the item and its shadow
    area = img[y:y1, x:x1].astype(np.float32)
    area[d:, d:] *= 1 - shadow[: y1 - y - d, : x1 - x - d]
    area[:s, :s] = area[:s, :s] * (1 - alpha) + rgb * alpha
    img[y:y1, x:x1] = np.clip(area, 0, 255).astype(np.uint8)
    if rng.random() < 0.3:  # a little clutter in front of the item, as in real scenes
        _shapes(img, rng, int(rng.integers(1, 3)))
    k = int(rng.integers(3, 13))  # sensor noise
    return cv2.add(img, rng.integers(-k, k + 1, img.shape, dtype=np.int16), dtype=cv2.CV_8U)


def photo_bytes(item: np.ndarray, rng, orientation: int = 1) -> tuple[bytes, tuple[int, int]]:
    """(JPEG bytes, upright (w, h)); ``orientation`` 6, 8 or 3 stores the pixels turned with that EXIF tag."""
    im = Image.fromarray(render(item, rng))
    size = im.size
    buf = io.BytesIO()
    if orientation in UNDO:
        exif = Image.Exif()
        exif[EXIF_ORIENTATION] = orientation
        im.transpose(UNDO[orientation]).save(buf, "JPEG", quality=JPEG_QUALITY, exif=exif.tobytes())
    else:
        im.save(buf, "JPEG", quality=JPEG_QUALITY)
    return buf.getvalue(), size


def write_photos(items: np.ndarray, paths: list[Path], seed: int, stream: int,
                 workers: Optional[int] = None) -> PhotoStats:
    """Render ``items[i]`` to ``paths[i]`` (JPEG); ``stream`` tells splits apart (train 0, test 1)."""
    n = len(paths)
    pick = np.random.default_rng([seed, stream, 1 << 20])
    orientation = np.ones(n, np.int64)
    side = pick.choice(n, size=int(round(n * SIDEWAYS)), replace=False)
    orientation[side] = pick.choice([6, 8, 3], size=len(side), p=[0.45, 0.45, 0.10])

    def one(i: int) -> tuple[int, int]:
        data, size = photo_bytes(items[i], np.random.default_rng([seed, stream, i]), int(orientation[i]))
        Path(paths[i]).write_bytes(data)
        return size

    # Threads: OpenCV, numpy's big operations and Pillow's JPEG encoder release the GIL.
    with ThreadPoolExecutor(workers or min(8, os.cpu_count() or 1)) as pool:
        sizes = np.asarray(list(pool.map(one, range(n))), np.int64).reshape(-1, 2)
    return PhotoStats(int(sizes.min()) if n else 0, int(sizes.max()) if n else 0, len(side))
