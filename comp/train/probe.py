"""Throughput probes: compute-only training and inference images/s of a model at a size, batch and memory layout,
measured on random tensors on the device training would use (bf16 on a GPU). ``comp train`` fits its unset input
size, epochs, batch and layout from them (comp.train.defaults) and ``comp auto`` plans its stages from them
(comp.orchestrate.auto_plan).

A probe is short (about a second of timed steps after two warm-ups) and a median of steps, so a shared host's slow
moment moves it little; two layouts are compared with their steps taken in turn (a slow minute slows both alike).
"""

from __future__ import annotations

import copy
import statistics
import time

PROBE_MIN_S = 1.0  # seconds of timed training steps per probe (inference: half)
# End-to-end training images/s over the probe's compute-only figure at the training batch (loader, augmentation,
# optimizer state, checkpoints). CPU, comp auto's resnet10t folds at 32 px on a shared 2-core machine: ~565 img/s
# end to end against the probe's 612 (0.92), ~456 against 534-643 (0.71-0.85); four later 15-min runs' fold epochs
# fit 0.88-1.05 of the faster of two probes, and planned at 0.85 each ended 2-18% early. Planned at 0.9: the next
# two runs' folds ran 11% over (0.85 read) and 13% under their boxes. GPU: the loader and augmentation weigh more.
EFFICIENCY_CPU = 0.9
EFFICIENCY_GPU = 0.6


def device():
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def probe_model(cfg, name: str, num_classes: int, size: int, batch: int, channels_last: bool,
                min_s: float | None = None) -> tuple[float, float]:
    """(training, inference) images/s of timm ``name`` at ``size`` px, ``batch`` images a step, timed for at least
    ``min_s`` seconds (default PROBE_MIN_S)."""
    import torch

    min_s = PROBE_MIN_S if min_s is None else min_s
    dev = device()
    model, opt = build(cfg, name, num_classes, dev, channels_last)
    x = torch.randn(batch, 3, size, size, device=dev)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, num_classes, (batch,), device=dev)
    train = batch / timed(lambda: train_step(model, opt, x, y, dev), dev, min_s)
    model.eval()
    with torch.no_grad():
        infer = batch / timed(lambda: forward(model, x, dev), dev, min_s / 2)
    return train, infer


def probe_models(cfg, models: list[str], num_classes: int, batch: int, min_s: float | None = None
                 ) -> tuple[dict, dict]:
    """({model: training images/s}, {model: inference images/s}) at cfg.input.size and its layout."""
    train_ips, infer_ips = {}, {}
    for name in models:
        train_ips[name], infer_ips[name] = probe_model(cfg, name, num_classes, cfg.input.size, batch,
                                                       bool(cfg.train.channels_last), min_s)
    return train_ips, infer_ips


def build(cfg, name: str, num_classes: int, dev, channels_last: bool):
    """(model, AdamW) of timm ``name`` as training would build it, from scratch (the same compute), on ``dev``."""
    import torch

    from comp.train.model import create_model

    c = copy.deepcopy(cfg)
    c.model.name, c.model.pretrained, c.model.pretrained_file = name, False, None
    model = create_model(c, num_classes).to(dev)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model, torch.optim.AdamW(model.parameters(), lr=1e-3)


def channels_last_gain(cfg, name: str, num_classes: int, batch: int, min_s: float | None = None,
                       size: int | None = None) -> float:
    """Training images/s of ``name`` channels_last over contiguous, from steps of the two taken in turn for at
    least ``min_s`` seconds (medians of each). Taken in turn, a shared host's slow minute slows both alike: two
    probes one after the other read 0.93x for resnet18, the steps in turn 0.95x; resnet10t 1.06-1.10x (2 cores,
    32 px, batch 128); tf_efficientnet_lite0 at 96 px 1.4-2x. ``min_s``: default 2 x PROBE_MIN_S."""
    import torch

    dev, size = device(), size or cfg.input.size
    min_s = 2 * PROBE_MIN_S if min_s is None else min_s
    x = torch.randn(batch, 3, size, size, device=dev)
    y = torch.randint(0, num_classes, (batch,), device=dev)
    steps = []
    for cl in (False, True):
        model, opt = build(cfg, name, num_classes, dev, cl)
        xb = x.contiguous(memory_format=torch.channels_last) if cl else x
        steps.append(lambda m=model, o=opt, xb=xb: train_step(m, o, xb, y, dev))
    times = ([], [])
    for fn in steps:  # warm-ups
        timed(fn, dev, 0.0, min_steps=1)
    start = time.perf_counter()
    while len(times[0]) < 3 or time.perf_counter() - start < min_s:
        for i, fn in enumerate(steps):
            times[i].append(call_s(fn, dev))
    return statistics.median(times[0]) / max(1e-9, statistics.median(times[1]))


def forward(model, x, dev):
    import torch

    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
        return model(x)


def train_step(model, opt, x, y, dev):
    import torch

    opt.zero_grad(set_to_none=True)
    loss = torch.nn.functional.cross_entropy(forward(model, x, dev).float(), y)
    loss.backward()
    opt.step()


def timed(fn, dev, min_s: float, min_steps: int = 2) -> float:
    """Seconds of one call of ``fn``: the median of calls made for at least ``min_s`` seconds after two warm-ups
    (the first calls pay for allocation and kernel selection; a median shrugs off one slow call on a busy host)."""
    for _ in range(2):
        fn()
    sync(dev)
    times, start = [], time.perf_counter()
    while len(times) < min_steps or time.perf_counter() - start < min_s:
        times.append(call_s(fn, dev))
    return max(1e-6, statistics.median(times))


def call_s(fn, dev) -> float:
    """Seconds of one call of ``fn``, the device synchronised after it."""
    t0 = time.perf_counter()
    fn()
    sync(dev)
    return time.perf_counter() - t0


def sync(dev) -> None:
    import torch

    if dev.type == "cuda":
        torch.cuda.synchronize()
