"""Defaults fitted to the data and the machine, for the keys a user left unset (``None`` in comp.config).

    input.size        the median short side of the training images (file headers only), rounded to a multiple of
                      32 and kept within [32, 384] ([32, 224] without a GPU)
    train.batch_size  on CPU 128 from 2048 training rows (1.6x the images/s of 64 on 2 cores, resnet18 at 32 px),
                      else 64 (16 steps an epoch at least); on a GPU the largest power of two (<= 256) whose training
                      step fits in half the free memory (a short probe at the fitted size)
    train.num_workers derived by comp.train.setup.num_workers (0 on <= 2 cores); only its reason is printed here
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
from comp.config import FITTED_KEYS, Config
from comp.data.sizes import FIT_MIN_SIDE, MAX_SIZE, MAX_SIZE_CPU, fitted_size, summarize_sizes

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
                 echo: Callable[[str], None] = print, probe: bool = True, workers: int | None = None,
                 folds: int | None = None) -> dict:
    """Fill the unset input.size, train.epochs, train.batch_size and train.channels_last of ``cfg`` in place (see the
    module docstring), print every derived value with its reason; returns {key: reason} of what was derived (also in
    ``cfg.derived``). With ``folds`` (and ``probe``), images larger than FIT_MIN_SIDE get their size and epochs from a
    throughput probe of this machine (comp.train.fit), so that ``folds`` folds train within train.fit_minutes."""
    _keep_recorded(cfg, _recorded(cfg.exp))
    if cfg.input.size is None:
        cfg.input.size, why = fit_size(cfg, paths())
        if folds and probe and cfg.input.size > FIT_MIN_SIDE:
            from comp.train.fit import fit_to_machine

            why = fit_to_machine(cfg, len(paths()), folds, num_classes, cfg.input.size, why)
        cfg.derived["input.size"] = f"{cfg.input.size} ({why}; set input.size to change)"
    if cfg.train.batch_size is None:
        if has_accelerator() and probe:
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
    if cfg.train.channels_last is None:
        cfg.train.channels_last = False
    for key, why in cfg.derived.items():
        echo(f"{key} {why}")
    return dict(cfg.derived)


def _keep_recorded(cfg: Config, old: dict) -> None:
    """A run with a recorded config (runs/E/config.yaml: a resumed fold, a later fold, a refit) keeps every value it
    fitted for a key the user left unset: the same weights, lr, epochs, size, batch and layout."""
    for section, _, key in (k.partition(".") for k in FITTED_KEYS):
        value = (old.get(section) or {}).get(key)
        if value is None or value == "auto":
            continue
        if f"{section}.{key}" in cfg.derived or getattr(getattr(cfg, section), key) is None:
            setattr(getattr(cfg, section), key, value)
            cfg.derived[f"{section}.{key}"] = f"{value} (as recorded in runs/{cfg.exp}/config.yaml)"
