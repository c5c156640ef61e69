"""What a training run checks and builds before any image is decoded: the config checks, the accelerator (with its
trackers) and the data loaders' worker count. Shared by comp train, comp lr-find and the techniques' helpers."""

from __future__ import annotations

import os

from comp import runs
from comp.accel import fresh_state, has_accelerator, resolve_precision
from comp.config import Config, ConfigError
from comp.tasks import task_of
from comp.train.augment import build_transform
from comp.train.optim import check_names


def num_workers(cfg: Config) -> int:
    """train.num_workers, else 0 on machines with <= 2 cores (workers would take cores from the model)."""
    if cfg.train.num_workers is not None:
        return cfg.train.num_workers
    return 0 if (os.cpu_count() or 1) <= 2 else min(4, (os.cpu_count() or 1) // 2)


def make_accelerator(cfg: Config):
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    t = cfg.train
    precision = resolve_precision(t.precision)
    log_with = trackers(t.trackers)
    fresh_state()
    return Accelerator(
        # Without a GPU, accelerate only joins a torchrun/`accelerate launch` process group when told it is CPU.
        cpu=not has_accelerator(),
        mixed_precision=precision,
        gradient_accumulation_steps=t.accum_steps,
        # Parameters frozen for the first epochs get no gradient; DDP must be told to expect that.
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=cfg.model.freeze_epochs > 0)],
        log_with=log_with or None,
        project_dir=str(runs.run_dir(cfg.exp)),
        dynamo_backend="inductor" if t.compile else "no",
        step_scheduler_with_optimizer=False,
    )


def trackers(names: list[str]) -> list[str]:
    from accelerate.utils import is_mlflow_available, is_tensorboard_available, is_wandb_available

    available = {"tensorboard": is_tensorboard_available, "wandb": is_wandb_available, "mlflow": is_mlflow_available}
    for n in names:
        if n not in available:
            raise ConfigError(f"train.trackers: unknown tracker {n!r}, expected some of {tuple(available)}")
        if not available[n]():
            raise ConfigError(f"train.trackers: {n} is not installed (pip install {n}), or remove it from the list")
    if "wandb" in names:
        os.environ.setdefault("WANDB_MODE", "offline")  # no network: logs stay in ./wandb until `wandb sync`
    uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    if "mlflow" in names and (uri.startswith("file:") or (uri and "://" not in uri)):
        # A file store the user named: MLflow 3 refuses one unless told (it prefers a database it may not have).
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return list(names)


def check_config(cfg: Config) -> None:
    """Everything a user controls that can be checked before any image is decoded."""
    import timm

    if not cfg.exp:
        raise ConfigError("an experiment name is needed: --exp NAME")
    hub = cfg.model.name.startswith(("hf-hub:", "hf_hub:", "local-dir:"))
    if not hub and not timm.is_model(cfg.model.name) and not cfg.model.pretrained_file:
        near = timm.list_models(f"*{cfg.model.name.split('.')[0][:6]}*")[:8]
        raise ConfigError(f"model.name: unknown timm model {cfg.model.name!r}; similar names: {near}")
    check_names(cfg.train)
    task_of(cfg).check_train(cfg)
    build_transform(cfg.augment, cfg.input.size or 32)  # an unset size is fitted later (comp.train.defaults)
    if cfg.model.freeze_epochs >= cfg.train.epochs:
        raise ConfigError("model.freeze_epochs must be smaller than train.epochs (the backbone would never train)")
    resolve_precision(cfg.train.precision)
    trackers(cfg.train.trackers)
