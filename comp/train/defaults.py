"""Defaults fitted to the data and the machine, for the keys a user left unset (``None`` in comp.config).

    input.size        the median short side of the training images (file headers only), rounded to a multiple of
                      32 and kept within [32, 384] ([32, 224] without a GPU)
    train.batch_size  on CPU 128 from 2048 training rows (1.6x the images/s of 64 on 2 cores, resnet18 at 32 px),
                      else 64 (16 steps an epoch at least); on a GPU the largest power of two (<= 256) whose training
                      step fits in half the free memory (a short probe at the fitted size)
    train.num_workers derived by comp.train.loop.num_workers (0 on <= 2 cores); only its reason is printed here
    train.lr/epochs   by how the model starts (comp.config.fit_schedule)

A user's value always wins. A run that already has ``runs/E/config.yaml`` keeps the values recorded there, so a
resumed or refitted run computes what it computed before. Each fitted value is printed with its reason, e.g.
``input.size 32 (median image 28x28; set input.size to change)``, and ``runs/E/config.yaml`` records it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import yaml

from comp import runs
from comp.accel import has_accelerator
from comp.config import Config
from comp.data.sizes import MAX_SIZE, MAX_SIZE_CPU, fitted_size, summarize_sizes

CPU_BATCH = 64
CPU_BATCH_LARGE = 128  # from CPU_LARGE_ROWS training rows: measured 627 vs 382 img/s compute-only (2 cores)
CPU_LARGE_ROWS = 16 * CPU_BATCH_LARGE
MAX_BATCH = 256


def _recorded(exp: str | None) -> dict:
    path = runs.run_dir(exp) / "config.yaml" if exp else None
    if path is None or not path.exists():
        return {}
    return yaml.safe_load(path.read_text(encoding="utf-8")) or {}


def fit_size(cfg: Config, paths: Sequence[str]) -> tuple[int, str]:
    gpu = has_accelerator()
    s = summarize_sizes(paths)
    if s is None:
        return 224 if gpu else 128, "no image header could be read; comp check names the files"
    size = fitted_size(s.median_short, gpu)
    cap = "" if size < (MAX_SIZE if gpu else MAX_SIZE_CPU) else f", capped at {size} {'on GPU' if gpu else 'on CPU'}"
    return size, f"{s.describe()}, short side {s.median_short}{cap}"


def cpu_batch(n_train: int) -> tuple[int, str]:
    if n_train >= CPU_LARGE_ROWS:
        return CPU_BATCH_LARGE, (f"no GPU: {CPU_BATCH_LARGE} trains 1.6x the images/s of {CPU_BATCH} on a CPU, and "
                                 f"{n_train} rows keep >= 16 steps an epoch")
    return CPU_BATCH, f"no GPU: under {CPU_LARGE_ROWS} rows {CPU_BATCH} keeps >= 16 steps an epoch"


def probe_batch(cfg: Config, num_classes: int, n_train: int) -> tuple[int, str]:
    """The largest power of two batch (<= MAX_BATCH, <= n_train / 8) whose forward + backward at input.size uses
    at most half the GPU's free memory."""
    import torch

    from comp.train.model import create_model

    free, _ = torch.cuda.mem_get_info()
    model = create_model(cfg, num_classes).cuda().train()
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    best, b, limit = 16, 16, max(16, min(MAX_BATCH, n_train // 8))
    try:
        while b <= limit:
            torch.cuda.reset_peak_memory_stats()
            x = torch.randn(b, 3, cfg.input.size, cfg.input.size, device="cuda")
            with torch.autocast("cuda", dtype=torch.bfloat16):
                model(x).float().sum().backward()
            if torch.cuda.max_memory_allocated() > free / 2:
                break
            best, b = b, b * 2
    except torch.cuda.OutOfMemoryError:
        pass
    finally:
        model.zero_grad(set_to_none=True)
        del model
        torch.cuda.empty_cache()
    return best, f"GPU memory probe at {cfg.input.size}px: fits in half the free {free / 2**30:.1f} GiB"


def fit_defaults(cfg: Config, paths: Callable[[], Sequence[str]], num_classes: int = 10,
                 echo: Callable[[str], None] = print, probe: bool = True, workers: int | None = None) -> dict:
    """Fill the unset input.size and train.batch_size of ``cfg`` in place (see the module docstring), print every
    derived value with its reason; returns {key: reason} of what was derived (also in ``cfg.derived``)."""
    old = _recorded(cfg.exp)
    if cfg.input.size is None:
        if (old.get("input") or {}).get("size"):
            cfg.input.size, why = int(old["input"]["size"]), f"as recorded in runs/{cfg.exp}/config.yaml"
        else:
            cfg.input.size, why = fit_size(cfg, paths())
        cfg.derived["input.size"] = f"{cfg.input.size} ({why}; set input.size to change)"
    if cfg.train.batch_size is None:
        if (old.get("train") or {}).get("batch_size"):
            b, why = int(old["train"]["batch_size"]), f"as recorded in runs/{cfg.exp}/config.yaml"
        elif has_accelerator() and probe:
            import torch

            b, why = probe_batch(cfg, num_classes, len(paths())) if torch.cuda.is_available() else (CPU_BATCH, "")
        else:
            b, why = cpu_batch(len(paths()))
        cfg.train.batch_size = b
        cfg.derived["train.batch_size"] = f"{b} ({why or 'the default'}; set train.batch_size to change)"
    if cfg.train.num_workers is None and workers is not None:
        cores = os.cpu_count() or 1
        rule = "0 on <= 2 cores: workers would take cores from the model" if cores <= 2 else "half the cores, <= 4"
        cfg.derived["train.num_workers"] = f"{workers} ({cores} cores: {rule}; set train.num_workers to " \
                                           f"change)"
    for key, why in cfg.derived.items():
        echo(f"{key} {why}")
    return dict(cfg.derived)
