"""Grad-CAM overlays with pytorch-grad-cam (``grad-cam`` on PyPI) for timm models.

The target layer is the last feature stage that holds a convolution: the last entry of timm's
``model.feature_info`` (``layer4`` for ResNets, ``stages.3`` for ConvNeXt, ...), else the last top-level child
with a ``Conv2d`` that is not the classifier. Models without such a stage (ViTs and other token models) get
``None`` from :func:`find_target_layer`, and the caller says Grad-CAM was skipped and why.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn


def _has_conv(m: nn.Module) -> bool:
    return any(isinstance(x, nn.Conv2d) for x in m.modules())


MIN_CAM_SIDE = 4  # a stage whose output is smaller than this (e.g. 1x1 for 32 px inputs) gives a flat map


def find_target_layer(model: nn.Module, input_size: int | None = None) -> tuple[nn.Module | None, str]:
    """(layer, its name) for Grad-CAM, or (None, why) for models with no convolutional stage.

    With ``input_size``, stages whose output would be under MIN_CAM_SIDE pixels a side are passed over for the
    deepest one that still has a spatial map (small inputs: ``layer2`` of a ResNet at 32 px, ``layer4`` at 224).
    """
    info = getattr(model, "feature_info", None)
    names: list[str] = []
    reductions: list[int] = []
    if info is not None:
        try:
            if isinstance(info, list):
                names = [f["module"] for f in info]
                reductions = [int(f.get("reduction", 1)) for f in info]
            else:
                names, reductions = list(info.module_name()), [int(r) for r in info.reduction()]
        except (TypeError, KeyError, AttributeError, ValueError):
            names, reductions = [], []
    if names:
        last = model.get_submodule(names[-1]) if _exists(model, names[-1]) else None
        if last is None or not _has_conv(last):
            return None, f"the last feature stage '{names[-1]}' has no convolution (not a CNN)"
        for i in range(len(names) - 1, -1, -1):
            if not _exists(model, names[i]):
                continue
            mod = model.get_submodule(names[i])
            small = input_size is not None and i < len(reductions) and input_size // reductions[i] < MIN_CAM_SIDE
            if _has_conv(mod) and (not small or i == 0):
                return mod, names[i]
        return last, names[-1]
    head = None
    if hasattr(model, "get_classifier"):
        head = model.get_classifier()
    last = None
    for name, child in model.named_children():
        if child is head:
            continue
        if _has_conv(child):
            last = (child, name)
    if last is None:
        return None, "the model has no convolution"
    return last


def _exists(model: nn.Module, name: str) -> bool:
    try:
        model.get_submodule(name)
    except AttributeError:
        return False
    return True


def grad_cam(model: nn.Module, x: torch.Tensor, targets: Sequence[int], layer: nn.Module,
             batch_size: int = 16) -> np.ndarray:
    """Grad-CAM maps (N, H, W) in [0, 1] at the input size, for class ``targets[i]`` of image ``x[i]``."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model.eval()
    out = []
    with GradCAM(model=model, target_layers=[layer]) as cam:
        for s in range(0, len(x), batch_size):
            xb = x[s : s + batch_size]
            tb = [ClassifierOutputTarget(int(t)) for t in targets[s : s + batch_size]]
            out.append(cam(input_tensor=xb, targets=tb))
    return np.concatenate(out) if out else np.zeros((0,) + tuple(x.shape[2:]), np.float32)


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
