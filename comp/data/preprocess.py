"""Deterministic resizing to the square model input, shared by the training cache and prediction."""

from __future__ import annotations

import cv2
import numpy as np

RESIZE_MODES = ("stretch", "letterbox", "crop")


def resize(img: np.ndarray, size: int, mode: str = "stretch") -> np.ndarray:
    """uint8 (H, W, 3) -> uint8 (size, size, 3).

    stretch: ignore the aspect ratio; letterbox: fit inside and pad with black; crop: fill, then centre-crop.
    """
    if mode not in RESIZE_MODES:
        raise ValueError(f"Unknown input.resize {mode!r}, expected one of {RESIZE_MODES}")
    h, w = img.shape[:2]
    if mode == "stretch":
        out_hw = (size, size)
    else:
        scale = (min if mode == "letterbox" else max)(size / h, size / w)
        out_hw = (max(1, round(h * scale)), max(1, round(w * scale)))
    interp = cv2.INTER_AREA if out_hw[0] < h else cv2.INTER_LINEAR
    r = cv2.resize(img, (out_hw[1], out_hw[0]), interpolation=interp)
    if r.ndim == 2:
        r = r[:, :, None].repeat(3, axis=2)
    if mode == "stretch":
        return np.ascontiguousarray(r)
    rh, rw = r.shape[:2]
    if mode == "letterbox":
        out = np.zeros((size, size, 3), np.uint8)
        y, x = (size - rh) // 2, (size - rw) // 2
        out[y : y + rh, x : x + rw] = r
        return out
    y, x = (rh - size) // 2, (rw - size) // 2
    return np.ascontiguousarray(r[y : y + size, x : x + size])
