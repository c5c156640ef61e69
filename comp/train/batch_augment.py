"""Augmentation presets as batched tensor operations on the device (``augment.on: device``).

The training loader hands the model's device a uint8 (N, H, W, 3) batch; ``BatchAugment`` turns it into a float
(N, 3, H, W) batch in [0, 255] with every sample augmented on its own parameters, in a fixed number of whole-batch
operations whatever N is:

- flips, translate, scale and rotate: one affine matrix per sample, one ``affine_grid`` + ``grid_sample`` per
  batch (bilinear, zeros outside, as albumentations' Affine with a constant border);
- brightness/contrast (``x * alpha + beta * 255``), saturation, Gaussian noise and a 3x3 Gaussian blur (heavy);
- cutout/erasing: up to ``holes`` rectangles per sample, built as a mask by broadcasting coordinates.

Every random parameter comes from a ``torch.Generator`` on the batch's device, seeded by ``set_epoch`` from
(seed, epoch, rank): a resumed run draws the same parameters as an uninterrupted one (bit for bit on CPU).
``to_tensor_batch`` then normalises the result as it does a plain batch.

Why hand-written on torch primitives rather than torchvision.transforms.v2 or kornia: v2 draws one set of
parameters per call, so a batch is either augmented identically or looped per image; kornia draws per sample
but from the global RNG and costs several times more per batch at small image sizes
(benchmarks/augment_batch.py prints the three side by side; figures in docs/results.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from comp.config import AugmentConfig, ConfigError
from comp.data.dataset import epoch_seed, one_cpu_thread
from comp.train.augment import build_transform

DEVICE_PRESETS = ("none", "light", "medium", "heavy")


@dataclass(frozen=True)
class Spec:
    """One preset: probabilities and ranges (fractions of the image side for translate and holes)."""

    hflip: float = 0.5
    p_affine: float = 0.0
    translate: float = 0.0
    scale: tuple[float, float] = (1.0, 1.0)
    rotate: float = 0.0  # degrees, +-
    p_color: float = 0.0
    brightness: float = 0.0  # +- fraction of 255
    contrast: float = 0.0  # +- factor around 1
    p_saturation: float = 0.0
    saturation: float = 0.0
    p_noise: float = 0.0
    noise: tuple[float, float] = (0.0, 0.0)  # std, fraction of 255
    p_blur: float = 0.0
    p_erase: float = 0.0
    holes: int = 0
    hole: tuple[float, float] = (0.125, 0.25)  # side, fraction of the image side


# The same recipes as the albumentations presets in comp.train.augment (which the CPU path keeps).
SPECS = {
    "light": Spec(p_affine=0.5, translate=0.0625, scale=(0.95, 1.05)),
    "medium": Spec(p_affine=0.7, translate=0.1, scale=(0.85, 1.15), rotate=15.0,
                   p_color=0.5, brightness=0.2, contrast=0.2),
    "heavy": Spec(p_affine=0.7, translate=0.1, scale=(0.85, 1.15), rotate=15.0,
                  p_color=0.5, brightness=0.2, contrast=0.2, p_saturation=0.3, saturation=0.3,
                  p_noise=0.15, noise=(0.02, 0.08), p_blur=0.15, p_erase=0.5, holes=4),
}


class BatchAugment:
    """``aug(u8)``: uint8 (N, H, W, 3) on any device -> augmented float (N, 3, H, W) in [0, 255]."""

    def __init__(self, preset: str, seed: int = 0, rank: int = 0):
        if preset not in SPECS:
            raise ConfigError(f"augment.preset: {preset!r} has no device version; expected one of {tuple(SPECS)}")
        self.name, self.spec, self.seed, self.rank = preset, SPECS[preset], seed, rank
        self._gen: torch.Generator | None = None
        self._epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Restart the parameter stream for ``epoch``: batch b of epoch e always gets the same draws."""
        self._epoch = epoch
        self._gen = None  # made lazily on the batch's device

    def _generator(self, device: torch.device) -> torch.Generator:
        if self._gen is None or self._gen.device != device:
            g = torch.Generator(device=device)
            g.manual_seed(epoch_seed(self.seed, self._epoch, self.rank, salt=2000))
            self._gen = g
        return self._gen

    def __call__(self, u8: torch.Tensor) -> torch.Tensor:
        if u8.ndim != 4 or u8.shape[-1] != 3:
            raise ValueError(f"expected uint8 images shaped (N, H, W, 3), got {tuple(u8.shape)}")
        with one_cpu_thread(u8.device):
            return self._augment(u8)

    def _augment(self, u8: torch.Tensor) -> torch.Tensor:
        s, g = self.spec, self._generator(u8.device)
        n, h, w, _ = u8.shape
        dev = u8.device

        def uniform(lo, hi, size=(n,)):
            return torch.rand(size, generator=g, device=dev) * (hi - lo) + lo

        def chance(p):
            return torch.rand(n, generator=g, device=dev) < p

        x = u8.permute(0, 3, 1, 2).float()  # NCHW view of NHWC memory: channels_last, no copy before the math
        x = self._geometry(x, s, uniform, chance)
        if s.p_color:
            on = chance(s.p_color)
            alpha = torch.where(on, uniform(1 - s.contrast, 1 + s.contrast), 1.0)
            beta = torch.where(on, uniform(-s.brightness, s.brightness) * 255.0, 0.0)
            x = x * alpha.view(n, 1, 1, 1) + beta.view(n, 1, 1, 1)
        if s.p_saturation:
            on = chance(s.p_saturation)
            f = torch.where(on, uniform(1 - s.saturation, 1 + s.saturation), 1.0).view(n, 1, 1, 1)
            gray = (x * torch.tensor([0.299, 0.587, 0.114], device=dev).view(1, 3, 1, 1)).sum(1, keepdim=True)
            x = gray + (x - gray) * f
        if s.p_blur:
            on = chance(s.p_blur).view(n, 1, 1, 1)
            x = torch.where(on, _blur3(x), x)
        if s.p_noise:
            on = chance(s.p_noise)
            std = torch.where(on, uniform(*s.noise) * 255.0, 0.0).view(n, 1, 1, 1)
            x = x + torch.randn(x.shape, generator=g, device=dev) * std
        x = x.clamp_(0, 255)
        if s.p_erase and s.holes:
            x = x.masked_fill_(self._holes(n, h, w, dev, s, uniform, chance).unsqueeze(1), 0.0)
        return x

    def _geometry(self, x, s: Spec, uniform, chance):
        """Horizontal flip and a random affine per sample, folded into one matrix and one grid_sample."""
        n = x.shape[0]
        flip = torch.where(chance(s.hflip), -1.0, 1.0)
        if not s.p_affine:
            # A flip alone is exact: select between the batch and its mirror.
            return torch.where((flip < 0).view(n, 1, 1, 1), x.flip(3), x)
        on = chance(s.p_affine)
        angle = torch.where(on, uniform(-s.rotate, s.rotate) * (math.pi / 180), 0.0)
        scale = torch.where(on, uniform(*s.scale), 1.0)
        tx = torch.where(on, uniform(-s.translate, s.translate) * 2, 0.0)  # affine_grid's [-1, 1] is 2 sides wide
        ty = torch.where(on, uniform(-s.translate, s.translate) * 2, 0.0)
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        # theta maps output coordinates to input ones: the inverse of (scale, rotate, translate), then the flip.
        theta = torch.stack([torch.stack([cos * flip, -sin, -(cos * tx - sin * ty)], 1),
                             torch.stack([sin * flip, cos, -(sin * tx + cos * ty)], 1)], 1)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    @staticmethod
    def _holes(n, h, w, dev, s: Spec, uniform, chance) -> torch.Tensor:
        """(N, H, W) True inside the sample's holes: 1..holes rectangles on the samples picked with p_erase."""
        on = chance(s.p_erase)
        count = torch.floor(uniform(1, s.holes + 1)).clamp_(max=s.holes)
        ys, xs = torch.arange(h, device=dev).view(1, h), torch.arange(w, device=dev).view(1, w)
        out = torch.zeros(n, h, w, dtype=torch.bool, device=dev)
        for i in range(s.holes):
            hh = (uniform(*s.hole) * h).round().clamp_(min=1)
            ww = (uniform(*s.hole) * w).round().clamp_(min=1)
            y0 = torch.floor(uniform(0, 1) * (h - hh + 1)).view(n, 1)
            x0 = torch.floor(uniform(0, 1) * (w - ww + 1)).view(n, 1)
            rows = (ys >= y0) & (ys < y0 + hh.view(n, 1)) & (on & (count > i)).view(n, 1)
            cols = (xs >= x0) & (xs < x0 + ww.view(n, 1))
            out |= rows.unsqueeze(2) & cols.unsqueeze(1)
        return out


def _blur3(x: torch.Tensor) -> torch.Tensor:
    """A [1, 2, 1]/4 Gaussian blur along both axes (edges replicated), as shifted adds: cheaper than a conv."""
    p = F.pad(x, (1, 1, 1, 1), mode="replicate")
    v = p[:, :, :-2] + 2 * p[:, :, 1:-1] + p[:, :, 2:]
    return (v[..., :-2] + 2 * v[..., 1:-1] + v[..., 2:]) * (1 / 16)


def build_batch_augment(preset: str, seed: int, rank: int) -> BatchAugment | None:
    """The device augmentation for ``augment.preset`` (None for ``none``)."""
    return None if preset == "none" else BatchAugment(preset, seed, rank)


def training_augment(aug: AugmentConfig, size: int, seed: int, rank: int):
    """(albumentations transform for the loader, BatchAugment for the device): one of them, per ``augment.on``.

    An ``augment.pipeline`` is albumentations and always runs in the loader, whatever ``augment.on`` says."""
    if aug.on == "device" and not aug.pipeline:
        return None, build_batch_augment(aug.preset, seed, rank)
    return build_transform(aug, size), None
