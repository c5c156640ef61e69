"""Test-time augmentation views, picked by name (``infer.tta`` / ``comp predict --tta``).

A view maps a batch to a batch of the same shape. It takes either uint8 NHWC images (numpy or torch, as the
decoded-image cache holds them) or normalised float NCHW tensors (what the model sees), so it can run on the
accelerator after normalisation. Flips and rotations are exact permutations of pixels; ``scale<f>`` zooms by
``f`` about the centre (``f > 1`` crops, ``f < 1`` shrinks and repeats the edge pixels) and ``shift`` moves the
image by about 1/16 of its side, repeating the edge — both small, to stay close to what the model was trained on.

    >>> views = create_views(["identity", "hflip", "scale1.1"])
    >>> batches = [view(x) for view in views]
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

View = Callable[[torch.Tensor], torch.Tensor]

FIXED_VIEWS = ("identity", "hflip", "vflip", "hvflip", "rot90", "rot270", "shift", "shift_ul")
PARAM_VIEWS = ("scale<f>",)  # 0.5 <= f <= 2, e.g. scale0.9, scale1.1
_SCALE = re.compile(r"^scale(\d+(?:\.\d+)?)$")


def _nchw(fn: Callable[[torch.Tensor], torch.Tensor]) -> View:
    """Lift a function on NCHW tensors to uint8 NHWC (numpy or torch) input as well."""

    def view(x):
        as_numpy = isinstance(x, np.ndarray)
        t = torch.from_numpy(np.ascontiguousarray(x)) if as_numpy else x
        if t.ndim != 4:
            raise ValueError(f"a TTA view expects a 4-d batch (NHWC uint8 or NCHW float), got shape {tuple(t.shape)}")
        if t.dtype == torch.uint8:  # decoded images: NHWC
            out = fn(t.permute(0, 3, 1, 2)).permute(0, 2, 3, 1).contiguous()
        else:
            # Keep the input's memory layout: convolutions on the strides rot90 leaves behind run ~10x slower.
            cl = t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()
            out = fn(t).contiguous(memory_format=torch.channels_last if cl else torch.contiguous_format)
        return out.numpy() if as_numpy else out

    return view


def _edge_pad(x: torch.Tensor, top: int, bottom: int, left: int, right: int) -> torch.Tensor:
    """Pad by repeating edge pixels (negative amounts crop); float tensors use the native replicate pad."""
    if x.is_floating_point():
        return F.pad(x, (left, right, top, bottom), mode="replicate")
    h, w = x.shape[-2:]  # uint8: an index gather, exact
    rows = (torch.arange(-top, h + bottom, device=x.device)).clamp_(0, h - 1)
    cols = (torch.arange(-left, w + right, device=x.device)).clamp_(0, w - 1)
    return x.index_select(-2, rows).index_select(-1, cols)


def _edge_shift(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Translate content by (dy, dx) pixels, repeating edge pixels."""
    return _edge_pad(x, dy, -dy, dx, -dx)


def _shift(sign: int) -> Callable[[torch.Tensor], torch.Tensor]:
    def fn(x):
        d = sign * max(1, round(x.shape[-1] / 16))
        return _edge_shift(x, d, d)

    return fn


def _scale(f: float) -> Callable[[torch.Tensor], torch.Tensor]:
    def fn(x):
        h, w = x.shape[-2:]
        nh, nw = max(1, round(h * f)), max(1, round(w * f))
        is_int = not x.is_floating_point()
        y = x.float() if is_int else x
        y = F.interpolate(y, size=(nh, nw), mode="bilinear", align_corners=False, antialias=f < 1)
        if f >= 1:  # zoom in: centre crop
            top, left = (nh - h) // 2, (nw - w) // 2
            y = y[..., top : top + h, left : left + w]
        else:  # zoom out: centre, repeat the edge around it
            top, left = (h - nh) // 2, (w - nw) // 2
            y = _edge_pad(y, top, h - nh - top, left, w - nw - left)
        if is_int:
            y = y.round_().clamp_(0, 255).to(x.dtype)
        return y

    return fn


_FIXED: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "identity": lambda x: x,
    "hflip": lambda x: x.flip(-1),
    "vflip": lambda x: x.flip(-2),
    "hvflip": lambda x: x.flip(-2, -1),
    "rot90": lambda x: x.rot90(1, (-2, -1)),  # square inputs only, as every comp input is
    "rot270": lambda x: x.rot90(-1, (-2, -1)),
    "shift": _shift(+1),  # content moves down-right
    "shift_ul": _shift(-1),  # content moves up-left
}


def create_view(name: str) -> View:
    """The view called ``name``; see FIXED_VIEWS and PARAM_VIEWS. Unknown names raise ValueError listing them."""
    key = str(name).strip().lower()
    if key in _FIXED:
        return _nchw(_FIXED[key])
    m = _SCALE.match(key)
    if m:
        f = float(m.group(1))
        if not 0.5 <= f <= 2.0:
            raise ValueError(f"TTA view {name!r}: the scale factor must be in [0.5, 2] (e.g. scale0.9, scale1.1)")
        return _nchw(_FIXED["identity"] if f == 1 else _scale(f))
    raise ValueError(f"Unknown TTA view {name!r}, expected one of {FIXED_VIEWS + PARAM_VIEWS}")


def check_views(names: Sequence[str]) -> list[str]:
    """Normalised, validated view names (duplicates refused: they would silently re-weight the average)."""
    if not names:
        raise ValueError(f"no TTA views given; expected one or more of {FIXED_VIEWS + PARAM_VIEWS}")
    out = [str(n).strip().lower() for n in names]
    for n in out:
        create_view(n)
    dup = sorted({n for n in out if out.count(n) > 1})
    if dup:
        raise ValueError(f"TTA view(s) {dup} listed twice; list each view once")
    return out


def create_views(names: Sequence[str]) -> list[View]:
    return [create_view(n) for n in check_views(names)]


def apply_view(name: str, x):
    """``create_view(name)(x)``."""
    return create_view(name)(x)
