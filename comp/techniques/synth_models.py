"""The kinds of generator ``comp synth`` trains, behind one interface (chosen by ``GenSpec.kind``):

    gan        comp.techniques.gan: a small class-conditional DCGAN (one forward per image; the CPU default)
    diffusion  comp.techniques.generator: a diffusers UNet2DModel, DDPM loss, DDIM sampling (needs diffusers)

A saved generator's ``generator.json`` records its spec (kind included), so loading and sampling need no options;
a generator saved before ``kind`` existed is a diffusion one.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from comp.techniques import gan, generator
from comp.techniques.generator import GenSpec

KINDS = ("gan", "diffusion")
DEFAULT_LR = {"gan": 2e-4, "diffusion": 1e-3}


def train(spec: GenSpec, images: np.ndarray, labels: np.ndarray, steps: int, batch_size: int, lr: float, seed: int,
          state_dir: Path, echo: Callable[[str], None], bar=None, block: int = 100, max_seconds: float | None = None):
    """(model in eval mode, TrainInfo) of the spec's kind, resumed from ``state_dir`` when it holds a state."""
    fn = gan.train_gan if spec.kind == "gan" else generator.train_generator
    return fn(spec, images, labels, steps, batch_size, lr, seed, state_dir, echo, bar, block, max_seconds)


def load(path: Path):
    """(model in eval mode, GenSpec, meta) of a saved generator of either kind."""
    from safetensors.torch import load_file

    meta = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
    spec = GenSpec(**meta["spec"])
    if spec.kind != "gan":
        return generator.load_generator(path)
    model = gan.create_gan_generator(spec)
    model.load_state_dict(load_file(str(path)))
    return model.eval(), spec, meta


def sample(model, spec: GenSpec, labels: np.ndarray, seeds: np.ndarray, steps: int = 20,
           guidance: float = 1.0) -> np.ndarray:
    """uint8 NHWC images of ``labels``, image i from seed ``seeds[i]`` (``steps``/``guidance``: diffusion only)."""
    if spec.kind == "gan":
        return gan.sample_gan(model, spec, labels, seeds)
    return generator.sample(model, spec, labels, seeds, steps, guidance)
