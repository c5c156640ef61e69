"""Model factory (timm) and checkpoints (safetensors + JSON metadata beside them)."""

from __future__ import annotations

import json
from collections.abc import Callable
from itertools import chain
from pathlib import Path
from typing import Optional

import timm
import torch
from safetensors.torch import load_file, save_file

from comp import weights
from comp.config import Config, ConfigError, resolve
from comp.files import atomic_path, write_text
from comp.tasks import task_of


def create_model(cfg: Config, num_classes: int, echo: Optional[Callable[[str], None]] = None) -> torch.nn.Module:
    """timm model ``model.name`` with ``num_classes`` outputs, started as comp.weights says (a local file, the hub
    cache, the hub, or from scratch; ``echo`` is told which and why). A classifier of another size in the weights is
    dropped and the new head starts at ``model.head_init_scale`` x timm's init (0 for a pretrained backbone)."""
    m = cfg.model
    kwargs = dict(num_classes=num_classes, drop_rate=m.drop_rate)
    if m.drop_path_rate:
        kwargs["drop_path_rate"] = m.drop_path_rate
    path = resolve(cfg, m.pretrained_file)
    if path is not None and not path.exists():
        raise ConfigError(f"model.pretrained_file: {path} does not exist")
    w = weights.resolve(m.name, m.pretrained, path)
    name = m.name
    if w.source in ("file", "hub-cache"):
        name = w.name
        kwargs["pretrained_cfg_overlay"] = dict(file=w.path)
    if echo is not None:
        echo(f"model {m.name}: {w.describe()}")
    try:
        model = timm.create_model(name, pretrained=w.pretrained, **kwargs)
    except RuntimeError as e:
        if "Unknown model" in str(e):
            near = timm.list_models(f"*{m.name.split('.')[0][:6]}*")[:8]
            raise ConfigError(f"model.name: unknown timm model {m.name!r}; similar names: {near}") from None
        raise
    scale = m.head_init_scale if m.head_init_scale is not None else (0.0 if w.pretrained else None)
    kept = w.pretrained and num_classes == (getattr(model, "pretrained_cfg", None) or {}).get("num_classes")
    if scale is not None and not kept:  # the weights' own head (as many classes) is kept as it is
        init_head(model, scale)
    task_of(cfg).adapt_head(model, num_classes)
    if m.stem_stride is not None:
        keep_resolution(model, m.stem_stride)
    return model


def init_head(model: torch.nn.Module, scale: float) -> None:
    """The classifier's weights x ``scale`` and its bias 0 (timm train.py's --head-init-scale / --head-init-bias 0).
    At 0 every logit starts at 0, so the first loss is ln(classes) whatever the backbone's features: timm's own
    init for EfficientNet scales by fan-out, suited to 1,000 classes, and with ImageNet features a new 10-class head
    started at a loss of 13.8."""
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    layers = [head] if isinstance(head, (torch.nn.Linear, torch.nn.Conv2d)) else \
        [x for x in (head.modules() if isinstance(head, torch.nn.Module) else []) if isinstance(x, torch.nn.Linear)]
    with torch.no_grad():
        for layer in layers[-1:]:
            layer.weight.mul_(scale)
            if layer.bias is not None:
                layer.bias.zero_()


def keep_resolution(model: torch.nn.Module, stem_stride: int) -> torch.nn.Module:
    """model.stem_stride: 1 = the first convolution at stride 1 and no stem max-pool, 2 = no stem max-pool, 4 = as
    built. Parameters are unchanged (weights load either way); small images keep their resolution through the stem.
    Works on ResNet-like timm models (a ``maxpool`` after the stem); on others only the first convolution changes."""
    if stem_stride >= 4:
        return model
    if isinstance(getattr(model, "maxpool", None), torch.nn.MaxPool2d):
        model.maxpool = torch.nn.Identity()
    if stem_stride == 1:
        first = next((c for c in model.modules() if isinstance(c, torch.nn.Conv2d)), None)
        if first is not None:
            first.stride = (1, 1)
    return model


def normalization(cfg: Config, model: Optional[torch.nn.Module] = None) -> tuple[list[float], list[float]]:
    """input.mean/std, else the model's pretrained config, else ImageNet's."""
    mean, std = cfg.input.mean, cfg.input.std
    pc = getattr(model, "pretrained_cfg", None) or {}
    if mean is None:
        mean = list(pc.get("mean", timm.data.IMAGENET_DEFAULT_MEAN))
    if std is None:
        std = list(pc.get("std", timm.data.IMAGENET_DEFAULT_STD))
    return [float(x) for x in mean], [float(x) for x in std]


def save_checkpoint(path: str | Path, model: torch.nn.Module, meta: dict) -> None:
    """Weights to ``path`` (safetensors), ``meta`` (classes, input size, epoch, score, ...) to path.json."""
    path = Path(path)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt"})
    write_text(path.with_suffix(".json"), json.dumps(meta, indent=2, ensure_ascii=False))


def load_meta(path: str | Path) -> dict:
    return json.loads(Path(path).with_suffix(".json").read_text(encoding="utf-8"))


def load_checkpoint(path: str | Path, model: torch.nn.Module) -> dict:
    """Load safetensors weights into ``model`` (never unpickles); return the metadata."""
    model.load_state_dict(load_file(str(path)))
    return load_meta(path)


def freeze_stages(model: torch.nn.Module, n: int, name: str) -> set[int]:
    """Freeze the stem and the first ``n`` stages (timm's coarse ``group_matcher``); the ids of frozen params."""
    if n == 0:
        return set()
    from timm.models import group_parameters

    if not hasattr(model, "group_matcher"):
        raise ConfigError(f"model.freeze_stages: {name} does not describe its stages (no group_matcher); use 0")
    groups = group_parameters(model, model.group_matcher(coarse=True))
    ids = sorted(groups)
    n_stages = len(ids) - 2  # minus the stem and the head
    if n > n_stages:
        raise ConfigError(f"model.freeze_stages={n}, but {name} has {n_stages} stages after its stem")
    names = set(chain.from_iterable(groups[i] for i in ids[: n + 1]))
    frozen = set()
    for pname, p in model.named_parameters():
        if pname in names:
            p.requires_grad_(False)
            frozen.add(id(p))
    return frozen


def set_backbone_trainable(model: torch.nn.Module, trainable: bool, keep_frozen: set[int]) -> None:
    """model.freeze_epochs: only the classifier trains while ``trainable`` is False."""
    head = {id(p) for p in model.get_classifier().parameters()}
    for p in model.parameters():
        if id(p) not in head and id(p) not in keep_frozen:
            p.requires_grad_(trainable)


def keep_norm_stats(model: torch.nn.Module) -> None:
    """Batch-norm layers in eval mode: their running statistics stay as they are (model.freeze_bn, and the linear
    probe of model.freeze_epochs); their scale and shift still train when they require grad."""
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.eval()


def sync_buffers(module: torch.nn.Module, accelerator) -> None:
    """Batch-norm statistics drift apart across processes; evaluate (and save) rank 0's everywhere."""
    if accelerator.num_processes > 1:
        for b in module.buffers():
            torch.distributed.broadcast(b, src=0)
