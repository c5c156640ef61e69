"""The class-conditional generator of ``comp synth``: a small diffusers ``UNet2DModel`` with a class embedding,
trained with DDPM's noise-prediction loss and sampled with DDIM in a few steps.

Class-free guidance: one extra class embedding (index = number of classes) stands for "no class"; training drops
the class of a share of the images to it, and sampling mixes the conditional and unconditional predictions
(``guidance`` > 1 pushes images towards their class; 1 is plain conditional sampling, one forward per step).

Everything that decides the weights or an image is seeded: a training step's batch and noise come from
(seed, step), an image's starting noise from its own seed, so a resumed run continues the same sequence and a
csv row's seed remakes its image.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from comp.config import ConfigError
from comp.files import write_text

TRAIN_TIMESTEPS = 1000
UNCOND_SHARE = 0.1  # training images whose class is dropped (classifier-free guidance)


@dataclass
class GenSpec:
    """What defines a generator's architecture (generator.json beside its weights)."""

    size: int  # square side the generator makes
    n_classes: int
    channels: list[int] = field(default_factory=list)  # UNet block_out_channels / GAN widths; [] = by size
    layers_per_block: int = 1
    kind: str = "diffusion"  # diffusion (this module) or gan (comp.techniques.gan)

    def __post_init__(self):
        if not self.channels:
            self.channels = default_channels(self.size, self.kind)


def gen_size(input_size: int, max_size: int = 64) -> int:
    """The generator's side for an experiment's input.size: at most ``max_size``, a multiple of 8 (three UNet
    levels halve it twice); images are resized to input.size when training decodes them."""
    return max(8, int(math.ceil(min(input_size, max_size) / 8)) * 8)


def default_channels(size: int, kind: str = "diffusion") -> list[int]:
    """Widths by size. Diffusion: UNet (32, 64, 64) up to 32 px, one more level of 128 beyond. GAN: the generator's
    four widths from size/8 up to full size (the discriminator's in reverse): 128,64,32,16 up to 32 px, x2 beyond."""
    if kind == "gan":
        return [128, 64, 32, 16] if size <= 32 else [256, 128, 64, 32]
    return [32, 64, 64] if size <= 32 else [32, 64, 64, 128]


def diffusers():
    """The diffusers package, or a clear error naming the extra that installs it."""
    try:
        import diffusers as d
    except ImportError:
        raise ConfigError('comp synth needs diffusers: pip install "comp[synth]" (or pip install diffusers)') from None
    return d


def create_unet(spec: GenSpec):
    UNet2DModel = diffusers().UNet2DModel  # noqa: N806

    n = len(spec.channels)
    groups = min(8, *spec.channels)
    return UNet2DModel(
        sample_size=spec.size, in_channels=3, out_channels=3, block_out_channels=tuple(spec.channels),
        layers_per_block=spec.layers_per_block, down_block_types=("DownBlock2D",) * (n - 1) + ("AttnDownBlock2D",),
        up_block_types=("AttnUpBlock2D",) + ("UpBlock2D",) * (n - 1), num_class_embeds=spec.n_classes + 1,
        norm_num_groups=groups, attention_head_dim=min(32, spec.channels[-1]),
    )


def to_model(images: np.ndarray) -> torch.Tensor:
    """uint8 NHWC -> float NCHW in [-1, 1]."""
    return torch.from_numpy(np.array(images)).permute(0, 3, 1, 2).float().div_(127.5).sub_(1)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


# ---- optimizer state as safetensors (nothing is unpickled) ----

def optimizer_tensors(opt: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    out = {}
    for i, st in opt.state_dict()["state"].items():
        for name, v in st.items():
            out[f"{i}.{name}"] = v if torch.is_tensor(v) else torch.tensor(v)
    return out


def load_optimizer_tensors(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor]) -> None:
    sd = opt.state_dict()
    state: dict = {}
    for key, v in tensors.items():
        i, name = key.split(".", 1)
        state.setdefault(int(i), {})[name] = v
    sd["state"] = state
    opt.load_state_dict(sd)


@dataclass
class TrainInfo:
    step: int = 0
    seconds: float = 0.0
    losses: list = field(default_factory=list)  # mean loss of each block of steps


def save_gen_state(state_dir: Path, model, opt, info: TrainInfo) -> None:
    """model + optimizer (safetensors) and progress, swapped in whole (info.json written last)."""
    import shutil

    from safetensors.torch import save_file

    tmp = state_dir.with_name(state_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp / "model.safetensors"))
    save_file(optimizer_tensors(opt), str(tmp / "optimizer.safetensors"))
    write_text(tmp / "info.json", json.dumps(asdict(info)))
    shutil.rmtree(state_dir, ignore_errors=True)
    tmp.rename(state_dir)


def load_gen_state(state_dir: Path, model, opt) -> TrainInfo:
    from safetensors.torch import load_file

    model.load_state_dict(load_file(str(state_dir / "model.safetensors")))
    load_optimizer_tensors(opt, load_file(str(state_dir / "optimizer.safetensors")))
    return TrainInfo(**json.loads((state_dir / "info.json").read_text(encoding="utf-8")))


def train_generator(spec: GenSpec, images: np.ndarray, labels: np.ndarray, steps: int, batch_size: int, lr: float,
                    seed: int, state_dir: Path, echo: Callable[[str], None], bar=None, block: int = 100,
                    max_seconds: float | None = None):
    """Train a generator on ``images`` (uint8 NHWC at spec.size) and ``labels``; resumes from ``state_dir``
    (saved every ``block`` steps, with a log line). ``max_seconds``: stop early once training has taken that long
    (the steps reached are recorded). Returns (model in eval mode, TrainInfo)."""
    DDPMScheduler = diffusers().DDPMScheduler  # noqa: N806
    torch.manual_seed(seed)
    model = create_unet(spec)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    info = TrainInfo()
    if (state_dir / "info.json").exists():
        info = load_gen_state(state_dir, model, opt)
        echo(f"  resumed the generator at step {info.step}/{steps}")
        if bar is not None:
            bar.update(info.step)
    sched = DDPMScheduler(num_train_timesteps=TRAIN_TIMESTEPS)
    x_all, y_all = to_model(images), torch.as_tensor(np.array(labels), dtype=torch.long)
    model.train()
    t0, block_loss, n_block = time.perf_counter(), 0.0, 0
    while info.step < steps:
        g = torch.Generator().manual_seed(seed * 1_000_003 + info.step)
        idx = torch.randint(0, len(x_all), (min(batch_size, len(x_all)),), generator=g)
        x, y = x_all[idx], y_all[idx].clone()
        y[torch.rand(len(y), generator=g) < UNCOND_SHARE] = spec.n_classes
        noise = torch.randn(x.shape, generator=g)
        t = torch.randint(0, TRAIN_TIMESTEPS, (len(x),), generator=g)
        pred = model(sched.add_noise(x, noise, t), t, class_labels=y).sample
        loss = torch.nn.functional.mse_loss(pred, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        info.step += 1
        block_loss, n_block = block_loss + loss.item(), n_block + 1
        if bar is not None:
            bar.update(1)
        if info.step % block == 0 or info.step == steps:
            info.seconds += time.perf_counter() - t0
            info.losses.append(round(block_loss / n_block, 5))
            echo(f"  generator step {info.step}/{steps}: loss {block_loss / n_block:.4f}, "
                 f"{info.seconds:.0f} s so far")
            save_gen_state(state_dir, model, opt, info)
            t0, block_loss, n_block = time.perf_counter(), 0.0, 0
        if max_seconds and info.seconds + time.perf_counter() - t0 >= max_seconds:
            info.seconds += time.perf_counter() - t0
            if n_block:
                info.losses.append(round(block_loss / n_block, 5))
            echo(f"  generator: time budget of {max_seconds / 60:g} min reached at step {info.step}/{steps}")
            break
    return model.eval(), info


@torch.inference_mode()
def sample(model, spec: GenSpec, labels: np.ndarray, seeds: np.ndarray, steps: int = 20, guidance: float = 1.0,
           batch_size: int = 64) -> np.ndarray:
    """uint8 NHWC images of ``labels`` (class indices), image i from its own seed ``seeds[i]`` (DDIM)."""
    sched = diffusers().DDIMScheduler(num_train_timesteps=TRAIN_TIMESTEPS)
    sched.set_timesteps(steps)
    out = []
    for lo in range(0, len(labels), batch_size):
        y = torch.as_tensor(labels[lo:lo + batch_size], dtype=torch.long)
        x = torch.stack([torch.randn(3, spec.size, spec.size, generator=torch.Generator().manual_seed(int(s)))
                         for s in seeds[lo:lo + batch_size]])
        for t in sched.timesteps:
            tt = torch.full((len(y),), int(t), dtype=torch.long)
            eps = model(x, tt, class_labels=y).sample
            if guidance != 1.0:
                free = model(x, tt, class_labels=torch.full_like(y, spec.n_classes)).sample
                eps = free + guidance * (eps - free)
            x = sched.step(eps, t, x).prev_sample
        out.append(to_uint8(x))
    return np.concatenate(out) if out else np.zeros((0, spec.size, spec.size, 3), np.uint8)


def save_generator(path: Path, model, spec: GenSpec, info: TrainInfo, extra: dict) -> None:
    """generator.safetensors + generator.json (the spec, the steps trained, the cost)."""
    from safetensors.torch import save_file

    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
    tmp.replace(path)
    meta = {"spec": asdict(spec), "step": info.step, "train_seconds": round(info.seconds, 1),
            "losses": info.losses, **extra}
    write_text(path.with_suffix(".json"), json.dumps(meta, indent=2, ensure_ascii=False))


def load_generator(path: Path):
    """(model in eval mode, GenSpec, meta) of a saved generator."""
    from safetensors.torch import load_file

    meta = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
    spec = GenSpec(**meta["spec"])
    model = create_unet(spec)
    model.load_state_dict(load_file(str(path)))
    return model.eval(), spec, meta
