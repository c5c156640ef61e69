"""Training augmentation: albumentations presets or a pipeline in albumentations' own dict form, plus timm Mixup.

Transforms run on the cached uint8 (S, S, 3) images, before normalisation, so they are cheap; the image size
never changes (every preset and pipeline must return S x S). Write a pipeline as albumentations saves one:

    augment:
      pipeline:
        transform: {__class_fullname__: Compose, p: 1.0, transforms: [
          {__class_fullname__: HorizontalFlip, p: 0.5},
          {__class_fullname__: Affine, rotate: [-10, 10], p: 0.5}]}

(``A.to_dict(A.Compose([...]))`` prints that form; ``comp.augment.preset_dict('medium')`` shows a preset's.)
"""

from __future__ import annotations

import albumentations as A
import numpy as np

from comp.config import AugmentConfig, ConfigError

PRESETS = ("none", "light", "medium", "heavy")


def preset(name: str, size: int) -> A.Compose | None:
    """The named preset for ``size`` px images; None for ``none``."""
    if name not in PRESETS:
        raise ConfigError(f"augment.preset: unknown preset {name!r}, expected one of {PRESETS}")
    if name == "none":
        return None
    # Flips and small shifts keep every class recognisable on any dataset; medium/heavy add photometric
    # change and occlusion, which help most on larger models and longer runs.
    ts: list = [A.HorizontalFlip(p=0.5)]
    if name == "light":
        ts.append(A.Affine(translate_percent=(-0.0625, 0.0625), scale=(0.95, 1.05), p=0.5))
    else:
        ts.append(A.Affine(translate_percent=(-0.1, 0.1), scale=(0.85, 1.15), rotate=(-15, 15), p=0.7))
        ts.append(A.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.2, p=0.5))
    if name == "heavy":
        ts.append(A.OneOf([A.GaussianBlur(blur_limit=(3, 5)), A.GaussNoise(std_range=(0.02, 0.08))], p=0.3))
        ts.append(A.HueSaturationValue(p=0.3))
        hole = max(1, size // 8)
        ts.append(A.CoarseDropout(num_holes_range=(1, 4), hole_height_range=(hole, 2 * hole),
                                  hole_width_range=(hole, 2 * hole), p=0.5))
    return A.Compose(ts)


def preset_dict(name: str, size: int = 224) -> dict:
    """A preset in albumentations' dict form: a starting point for ``augment.pipeline``."""
    t = preset(name, size)
    return A.to_dict(t) if t is not None else {}


def from_pipeline(pipeline: dict) -> A.Compose:
    """An albumentations Compose from its dict form (``A.from_dict``); errors name ``augment.pipeline``."""
    d = pipeline if "transform" in pipeline else {"transform": pipeline}
    try:
        t = A.from_dict(d)
    except Exception as e:  # albumentations raises KeyError/ValueError/TypeError with terse messages
        raise ConfigError(
            f"augment.pipeline is not a valid albumentations pipeline ({type(e).__name__}: {e}); write it as "
            "A.to_dict(A.Compose([...])) prints it, e.g. {transform: {__class_fullname__: Compose, transforms: "
            "[{__class_fullname__: HorizontalFlip, p: 0.5}]}}"
        ) from None
    if not isinstance(t, A.Compose):
        t = A.Compose([t])
    return t


def build_transform(aug: AugmentConfig, size: int) -> A.Compose | None:
    """The training transform: ``augment.pipeline`` when set, else ``augment.preset``; checked on one image."""
    t = from_pipeline(aug.pipeline) if aug.pipeline else preset(aug.preset, size)
    if t is not None:
        try:
            out = t(image=np.zeros((size, size, 3), np.uint8))["image"]
        except Exception as e:
            raise ConfigError(f"augment.pipeline fails on a {size}x{size} RGB uint8 image: {e}") from None
        if out.shape != (size, size, 3) or out.dtype != np.uint8:
            raise ConfigError(
                f"augment.pipeline must keep images {size}x{size}x3 uint8 (input.size); it returned "
                f"{out.shape} {out.dtype}. Resizing happens once in the cache: drop resize/crop-to-size steps."
            )
    return t


def build_mixup(aug: AugmentConfig, num_classes: int, label_smoothing: float, multi_label: bool = False):
    """timm ``Mixup`` for ``augment.mixup`` / ``augment.cutmix`` alphas, or None when both are 0 (``multi_label``:
    it mixes multi-hot targets (B, C))."""
    if not (aug.mixup > 0 or aug.cutmix > 0):
        return None
    from timm.data import Mixup

    return Mixup(mixup_alpha=aug.mixup, cutmix_alpha=aug.cutmix, prob=aug.mix_prob,
                 label_smoothing=label_smoothing, num_classes=num_classes, multi_label=multi_label)
