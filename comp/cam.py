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


def find_target_layer(model: nn.Module) -> tuple[nn.Module | None, str]:
    """(layer, its name) for Grad-CAM, or (None, why) for models with no convolutional stage."""
    info = getattr(model, "feature_info", None)
    names: list[str] = []
    if info is not None:
        try:
            names = [f["module"] for f in info] if isinstance(info, list) else list(info.module_name())
        except (TypeError, KeyError, AttributeError):
            names = []
    for name in reversed(names):
        try:
            mod = model.get_submodule(name)
        except AttributeError:
            continue
        if _has_conv(mod):
            return mod, name
        break  # the deepest stage has no convolution: a token model, whatever its stem has
    if names:
        return None, f"the last feature stage '{names[-1]}' has no convolution (not a CNN)"
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
