"""Grad-CAM overlays with pytorch-grad-cam (``grad-cam`` on PyPI) for every timm backbone, with no configuration.

The target layer comes from the model's own ``feature_info``: the deepest feature stage whose output still has a
spatial map of MIN_CAM_SIDE pixels a side at the input size (``layer4`` of a ResNet at 224 px, ``layer2`` at 32,
``stages.3`` of a ConvNeXt, ``layers.N`` of a Swin, ``blocks.11`` of a ViT). Models without ``feature_info`` get
the last top-level child that holds a ``Conv2d`` and is not the classifier.

The layout of that layer's output is read from one probe forward, never from a table of model names:

- ``B, C, H, W`` (CNNs) is used as it is;
- ``B, H, W, C`` (Swin and other NHWC stages: the channel count of ``feature_info`` is last) is permuted;
- ``B, N, C`` tokens (ViT, DeiT, EVA, BEiT...) drop the ``model.num_prefix_tokens`` class/distillation/register
  tokens and fold the rest into the patch grid of the input's aspect. For a token stage the target is the block's
  ``norm1`` (the input of its attention): with class-token pooling the block's own output patch tokens never reach
  the head, so their gradient, and the map, would be zero.

:func:`grad_cam` takes one class per image; :func:`grad_cam_labels` gives one map per label of one image (the
multi-label case: a map for every label above its threshold).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn


def _has_conv(m: nn.Module) -> bool:
    return any(isinstance(x, nn.Conv2d) for x in m.modules())


MIN_CAM_SIDE = 4  # a stage whose output is smaller than this (e.g. 1x1 for 32 px inputs) gives a flat map


def _feature_stages(model: nn.Module) -> list[tuple[str, int, int]]:
    """(module name, channels, reduction) of each stage in timm's ``feature_info`` that exists, shallow first."""
    info = getattr(model, "feature_info", None)
    if info is None:
        return []
    try:
        if isinstance(info, list):
            rows = [(f["module"], int(f.get("num_chs", 0)), int(f.get("reduction", 1))) for f in info]
        else:
            rows = list(zip(info.module_name(), map(int, info.channels()), map(int, info.reduction())))
    except (TypeError, KeyError, AttributeError, ValueError):
        return []
    return [r for r in rows if _exists(model, r[0])]


def _default_side(model: nn.Module) -> int:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    size = cfg.get("input_size") or (3, 224, 224)
    return int(size[-1])


def _output_shapes(model: nn.Module, layers: Sequence[nn.Module], x: torch.Tensor) -> list[tuple[int, ...] | None]:
    """The output shape of each layer on the first image of ``x`` (eval mode, no gradient)."""
    shapes: list[tuple[int, ...] | None] = [None] * len(layers)

    def hook(i):
        def fn(_m, _inp, out):
            if isinstance(out, torch.Tensor) and shapes[i] is None:
                shapes[i] = tuple(out.shape)
        return fn

    handles = [m.register_forward_hook(hook(i)) for i, m in enumerate(layers)]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(x[:1])
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return shapes


def _spatial_side(shape: tuple[int, ...] | None, chans: int, prefix: int) -> int:
    """The shorter side of a layer output's spatial map (0 when it has none)."""
    if shape is None:
        return 0
    if len(shape) == 4:
        h, w = (shape[1], shape[2]) if chans and shape[-1] == chans and shape[1] != chans else shape[2:]
        return min(h, w)
    if len(shape) == 3:
        return int(math.isqrt(max(shape[1] - prefix, 0)))
    return 0


def find_target_layer(model: nn.Module, input_size: int | None = None) -> tuple[nn.Module | None, str]:
    """(layer, its name) for Grad-CAM, or (None, why) for a model with no spatial feature stage.

    The deepest ``feature_info`` stage whose output is at least MIN_CAM_SIDE a side at ``input_size`` (the
    model's pretrained input size when not given); for a token stage, its block's ``norm1``.
    """
    stages = _feature_stages(model)
    if not stages:
        return _last_conv_child(model)
    side = input_size or _default_side(model)
    prefix = int(getattr(model, "num_prefix_tokens", 0) or 0)
    mods = [model.get_submodule(n) for n, _, _ in stages]
    try:
        p = next(model.parameters(), None)
        x = torch.zeros(1, 3, side, side, device=p.device if p is not None else "cpu",
                        dtype=p.dtype if p is not None and p.is_floating_point() else torch.float32)
        shapes = _output_shapes(model, mods, x)
    except Exception as e:  # noqa: BLE001 - a model that can't run a probe image says why, the caller skips
        return None, f"a {side} px probe image failed in the model: {type(e).__name__}: {e}"
    sides = [_spatial_side(s, c, prefix) for s, (_, c, _) in zip(shapes, stages)]
    ok = [i for i, s in enumerate(sides) if s >= MIN_CAM_SIDE] or [i for i, s in enumerate(sides) if s > 0]
    if not ok:
        return None, f"no feature stage of the model has a spatial map at {side} px"
    i = ok[-1]
    name, mod = stages[i][0], mods[i]
    if len(shapes[i]) == 3 and isinstance(getattr(mod, "norm1", None), nn.Module):
        return mod.norm1, f"{name}.norm1"
    return mod, name


def _last_conv_child(model: nn.Module) -> tuple[nn.Module | None, str]:
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    last = None
    for name, child in model.named_children():
        if child is not head and _has_conv(child):
            last = (child, name)
    return last if last is not None else (None, "the model has no convolution and no timm feature_info")


def _exists(model: nn.Module, name: str) -> bool:
    try:
        model.get_submodule(name)
    except AttributeError:
        return False
    return True


def _grid(n: int, height: int, width: int) -> tuple[int, int]:
    """(h, w) with h * w == n closest to the input's aspect height / width."""
    best = (1, n)
    for h in range(1, n + 1):
        if n % h == 0 and abs(math.log(h / (n // h)) - math.log(height / width)) < \
                abs(math.log(best[0] / best[1]) - math.log(height / width)):
            best = (h, n // h)
    return best


def reshape_transform(model: nn.Module, layer: nn.Module, x: torch.Tensor) -> Callable | None:
    """pytorch-grad-cam's ``reshape_transform`` for ``layer``'s output on inputs like ``x``: None for NCHW, a
    permute for NHWC, a fold of the patch tokens (prefix tokens dropped) into B, C, h, w for B, N, C tokens."""
    shape = _output_shapes(model, [layer], x)[0]
    chans = {id(model.get_submodule(n)): c for n, c, _ in _feature_stages(model)}.get(id(layer), 0)
    if shape is None or len(shape) == 4 and (shape[1] == chans or not chans and _nchw_guess(model)):
        return None
    if len(shape) == 4:
        return lambda t: t.permute(0, 3, 1, 2)
    prefix = int(getattr(model, "num_prefix_tokens", 0) or 0)
    h, w = _grid(shape[1] - prefix, int(x.shape[-2]), int(x.shape[-1]))

    def tokens(t: torch.Tensor) -> torch.Tensor:
        t = t[:, prefix:, :]
        return t.reshape(t.shape[0], h, w, t.shape[2]).permute(0, 3, 1, 2)

    return tokens


def _nchw_guess(model: nn.Module) -> bool:
    return str(getattr(model, "output_fmt", "NCHW")).upper() != "NHWC"


def grad_cam(model: nn.Module, x: torch.Tensor, targets: Sequence[int], layer: nn.Module,
             batch_size: int = 16) -> np.ndarray:
    """Grad-CAM maps (N, H, W) in [0, 1] at the input size, for class ``targets[i]`` of image ``x[i]``."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model.eval()
    if not len(x):
        return np.zeros((0,) + tuple(x.shape[2:]), np.float32)
    out = []
    with GradCAM(model=model, target_layers=[layer], reshape_transform=reshape_transform(model, layer, x)) as cam:
        for s in range(0, len(x), batch_size):
            xb = x[s : s + batch_size]
            tb = [ClassifierOutputTarget(int(t)) for t in targets[s : s + batch_size]]
            out.append(cam(input_tensor=xb, targets=tb))
    return np.concatenate(out)


def grad_cam_labels(model: nn.Module, x: torch.Tensor, labels: Sequence[int], layer: nn.Module) -> np.ndarray:
    """One Grad-CAM map per label (L, H, W) of the single image ``x`` (1, 3, H, W): multi-label images."""
    if not len(labels):
        return np.zeros((0,) + tuple(x.shape[2:]), np.float32)
    return grad_cam(model, x[:1].expand(len(labels), *x.shape[1:]).contiguous(), list(labels), layer)


def overlay(rgb: np.ndarray, mask: np.ndarray, side: int = 112) -> np.ndarray:
    """uint8 image: the model input and its Grad-CAM heat map side by side, each ``side`` px tall."""
    import cv2
    from pytorch_grad_cam.utils.image import show_cam_on_image

    img = rgb.astype(np.float32) / 255.0
    heat = show_cam_on_image(img, mask.astype(np.float32), use_rgb=True, image_weight=0.55)
    pair = np.concatenate([rgb, heat], axis=1)
    h, w = pair.shape[:2]
    scale = side / h
    interp = cv2.INTER_NEAREST if scale > 1 else cv2.INTER_AREA
    return cv2.resize(pair, (max(1, round(w * scale)), side), interpolation=interp)
