"""``comp synth --kind gan``: a small class-conditional DCGAN (plain torch), the CPU-friendly generator.

Generator: z (``Z_DIM``) -> a linear layer to (size/8)^2 x w0, then three blocks of nearest 2x upsampling, a 3x3
convolution and class-conditional batch norm (a per-class scale and shift after a plain BatchNorm), ReLU; a 3x3
convolution and tanh make the RGB image. Discriminator: spectral-normalised convolutions (a 3x3, then three 4x4 of
stride 2), LeakyReLU, global sum pooling, and a projection head (a linear output plus the dot product of a class
embedding with the pooled features: Miyato & Koyama 2018). Hinge loss, Adam(lr, betas 0.0/0.9), one D step per
G step. An exponential moving average of the generator's weights (``EMA_DECAY``) is what samples.

Real rows are drawn class-balanced (each class equally often), so rare classes get as many updates as common ones;
both real and generated images pass through the same random translation (up to 1/8 of the side, zero-padded)
before the discriminator (DiffAugment-style), which keeps it from memorising the few images of a rare class.

Everything that decides the weights or an image is seeded: a step's batch, classes, noise and shifts come from
(seed, step), an image's z from its own seed, so a resumed run continues the same sequence bit for bit on CPU.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812

from comp.files import write_text
from comp.techniques.generator import GenSpec, TrainInfo, load_optimizer_tensors, optimizer_tensors, to_model, to_uint8

Z_DIM = 64
EMA_DECAY = 0.99
BETAS = (0.0, 0.9)


class CondBN(nn.Module):
    """BatchNorm without its own affine, then a per-class scale (around 1) and shift."""

    def __init__(self, ch: int, n_classes: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(ch, affine=False)
        self.gain = nn.Embedding(n_classes, ch)
        self.bias = nn.Embedding(n_classes, ch)
        nn.init.zeros_(self.gain.weight)
        nn.init.zeros_(self.bias.weight)

    def forward(self, x, y):
        return self.bn(x) * (1 + self.gain(y))[:, :, None, None] + self.bias(y)[:, :, None, None]


class Generator(nn.Module):
    def __init__(self, spec: GenSpec):
        super().__init__()
        w = spec.channels
        self.base, self.w0 = spec.size // 8, w[0]
        self.fc = nn.Linear(Z_DIM, self.base * self.base * w[0])
        self.norms = nn.ModuleList([CondBN(c, spec.n_classes) for c in w])
        self.convs = nn.ModuleList([nn.Conv2d(a, b, 3, padding=1) for a, b in zip(w[:-1], w[1:])])
        self.out = nn.Conv2d(w[-1], 3, 3, padding=1)

    def forward(self, z, y):
        h = F.relu(self.norms[0](self.fc(z).view(len(z), self.w0, self.base, self.base), y))
        for conv, norm in zip(self.convs, self.norms[1:]):
            h = F.relu(norm(conv(F.interpolate(h, scale_factor=2.0, mode="nearest")), y))
        return torch.tanh(self.out(h))


class Discriminator(nn.Module):
    def __init__(self, spec: GenSpec):
        super().__init__()
        w = list(reversed(spec.channels))  # narrow at full size, wide at size/8
        sn = nn.utils.spectral_norm
        layers = [sn(nn.Conv2d(3, w[0], 3, padding=1))]
        layers += [sn(nn.Conv2d(a, b, 4, stride=2, padding=1)) for a, b in zip(w[:-1], w[1:])]
        self.convs = nn.ModuleList(layers)
        self.linear = sn(nn.Linear(w[-1], 1))
        self.embed = sn(nn.Embedding(spec.n_classes, w[-1]))

    def forward(self, x, y):
        h = x
        for conv in self.convs:
            h = F.leaky_relu(conv(h), 0.1)
        h = h.sum(dim=(2, 3))
        return self.linear(h).squeeze(1) + (self.embed(y) * h).sum(1)


def check_spec(spec: GenSpec) -> None:
    from comp.config import ConfigError

    if spec.size % 8 or len(spec.channels) != 4:
        raise ConfigError(f"--kind gan: needs a side that is a multiple of 8 (got {spec.size}) and 4 widths for "
                          f"--channels (got {spec.channels}), e.g. 128,64,32,16")


def translate(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Each image shifted by its own random (dy, dx) of up to size/8 pixels, zero-padded (differentiable)."""
    n, _, h, w = x.shape
    m = max(1, h // 8)
    shift = torch.randint(-m, m + 1, (n, 2), generator=g)
    pad = F.pad(x, (m, m, m, m))
    iy = (torch.arange(h)[None, :] + m - shift[:, :1]).clamp(0, h + 2 * m - 1)  # n x h
    ix = (torch.arange(w)[None, :] + m - shift[:, 1:]).clamp(0, w + 2 * m - 1)  # n x w
    rows = pad[torch.arange(n)[:, None], :, iy]  # n x h x c x W
    out = rows[torch.arange(n)[:, None, None], torch.arange(h)[None, :, None], :, ix[:, None, :]]  # n h w c
    return out.permute(0, 3, 1, 2)


class Gan:
    """The generator, its EMA copy, the discriminator and both optimizers: what a state holds."""

    def __init__(self, spec: GenSpec, lr: float, seed: int):
        check_spec(spec)
        torch.manual_seed(seed)
        self.g, self.d = Generator(spec), Discriminator(spec)
        self.ema = Generator(spec)
        self.ema.load_state_dict(self.g.state_dict())
        self.ema.requires_grad_(False)
        self.opt_g = torch.optim.Adam(self.g.parameters(), lr=lr, betas=BETAS)
        self.opt_d = torch.optim.Adam(self.d.parameters(), lr=lr, betas=BETAS)

    def parts(self) -> dict[str, nn.Module]:
        return {"g": self.g, "d": self.d, "ema": self.ema}

    def save(self, state_dir: Path, info: TrainInfo) -> None:
        """Weights and optimizers (safetensors) and progress, swapped in whole (info.json written last)."""
        from safetensors.torch import save_file

        tmp = state_dir.with_name(state_dir.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_file({f"{p}.{k}": v.contiguous() for p, m in self.parts().items() for k, v in m.state_dict().items()},
                  str(tmp / "model.safetensors"))
        opt = {f"g.{k}": v for k, v in optimizer_tensors(self.opt_g).items()}
        opt.update({f"d.{k}": v for k, v in optimizer_tensors(self.opt_d).items()})
        save_file(opt, str(tmp / "optimizer.safetensors"))
        write_text(tmp / "info.json", json.dumps(asdict(info)))
        shutil.rmtree(state_dir, ignore_errors=True)
        tmp.rename(state_dir)

    def load(self, state_dir: Path) -> TrainInfo:
        from safetensors.torch import load_file

        weights = load_file(str(state_dir / "model.safetensors"))
        for p, m in self.parts().items():
            m.load_state_dict({k[len(p) + 1:]: v for k, v in weights.items() if k.startswith(p + ".")})
        opt = load_file(str(state_dir / "optimizer.safetensors"))
        for p, o in (("g", self.opt_g), ("d", self.opt_d)):
            load_optimizer_tensors(o, {k[2:]: v for k, v in opt.items() if k.startswith(p + ".")})
        return TrainInfo(**json.loads((state_dir / "info.json").read_text(encoding="utf-8")))

    def step(self, x_real, y_real, g: torch.Generator, n_classes: int) -> tuple[float, float]:
        """One D step and one G step (hinge loss); returns (d_loss, g_loss)."""
        n = len(x_real)
        y_fake = torch.randint(0, n_classes, (n,), generator=g)
        z = torch.randn(n, Z_DIM, generator=g)
        with torch.no_grad():
            fake = self.g(z, y_fake)
        d_real = self.d(translate(x_real, g), y_real)
        d_fake = self.d(translate(fake, g), y_fake)
        d_loss = F.relu(1 - d_real).mean() + F.relu(1 + d_fake).mean()
        self.opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        self.opt_d.step()
        g_loss = -self.d(translate(self.g(z, y_fake), g), y_fake).mean()
        self.opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        self.opt_g.step()
        with torch.no_grad():
            for e, p in zip(self.ema.parameters(), self.g.parameters()):
                e.lerp_(p, 1 - EMA_DECAY)
            for e, b in zip(self.ema.buffers(), self.g.buffers()):
                e.copy_(b)
        return d_loss.item(), g_loss.item()


def balanced_weights(labels: np.ndarray) -> torch.Tensor:
    """Per row 1 / (its class's count): every class is drawn equally often."""
    counts = np.bincount(labels)
    return torch.as_tensor(1.0 / counts[labels], dtype=torch.double)


def train_gan(spec: GenSpec, images: np.ndarray, labels: np.ndarray, steps: int, batch_size: int, lr: float,
              seed: int, state_dir: Path, echo: Callable[[str], None], bar=None, block: int = 100,
              max_seconds: float | None = None):
    """Train on ``images`` (uint8 NHWC at spec.size) and ``labels``, class-balanced; resumes from ``state_dir``
    (saved every ``block`` steps, with a log line); ``max_seconds`` stops early (the steps reached are recorded).
    Returns (the EMA generator in eval mode, TrainInfo); ``info.losses`` holds each block's mean D loss."""
    gan = Gan(spec, lr, seed)
    info = TrainInfo()
    if (state_dir / "info.json").exists():
        info = gan.load(state_dir)
        echo(f"  resumed the generator at step {info.step}/{steps}")
        if bar is not None:
            bar.update(info.step)
    x_all, y_all = to_model(images), torch.as_tensor(np.array(labels), dtype=torch.long)
    weights = balanced_weights(np.asarray(labels))
    gan.g.train()
    gan.d.train()
    t0, sums, n_block = time.perf_counter(), np.zeros(2), 0
    while info.step < steps:
        g = torch.Generator().manual_seed(seed * 1_000_003 + info.step)
        idx = torch.multinomial(weights, min(batch_size, len(x_all)), replacement=True, generator=g)
        sums += gan.step(x_all[idx], y_all[idx], g, spec.n_classes)
        info.step, n_block = info.step + 1, n_block + 1
        if bar is not None:
            bar.update(1)
        timed_out = bool(max_seconds) and info.seconds + time.perf_counter() - t0 >= max_seconds
        if info.step % block == 0 or info.step == steps or timed_out:
            info.seconds += time.perf_counter() - t0
            info.losses.append(round(sums[0] / n_block, 5))
            echo(f"  generator step {info.step}/{steps}: D loss {sums[0] / n_block:.3f}, G loss "
                 f"{sums[1] / n_block:.3f}, {info.seconds:.0f} s so far ({info.step / max(info.seconds, 1e-9):.2f} "
                 f"steps/s)")
            gan.save(state_dir, info)
            t0, sums, n_block = time.perf_counter(), np.zeros(2), 0
        if timed_out:
            echo(f"  generator: time budget of {max_seconds / 60:g} min reached at step {info.step}/{steps}")
            break
    return gan.ema.eval(), info


@torch.inference_mode()
def sample_gan(model: Generator, spec: GenSpec, labels: np.ndarray, seeds: np.ndarray,
               batch_size: int = 256) -> np.ndarray:
    """uint8 NHWC images of ``labels`` (class indices), image i from its own seed ``seeds[i]`` (one forward)."""
    model.eval()
    out = []
    for lo in range(0, len(labels), batch_size):
        y = torch.as_tensor(labels[lo:lo + batch_size], dtype=torch.long)
        z = torch.stack([torch.randn(Z_DIM, generator=torch.Generator().manual_seed(int(s)))
                         for s in seeds[lo:lo + batch_size]])
        out.append(to_uint8(model(z, y)))
    return np.concatenate(out) if out else np.zeros((0, spec.size, spec.size, 3), np.uint8)


def create_gan_generator(spec: GenSpec) -> Generator:
    check_spec(spec)
    return Generator(spec)
