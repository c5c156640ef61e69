"""Training throughput: end-to-end `comp train` images/s against the model's compute-only images/s.

    python benchmarks/train_throughput.py [--n-train 2560] [--epochs 5] [--model resnet18] [--size 32]

Builds a Fashion-MNIST sample competition (`comp sample`), trains one fold with `comp.train.train_folds`
(batch 128, light augmentation, AdamW, cosine) and reads images/s from metrics.csv for the epochs after the
first (the decoded-image cache is warm by then). Before and after, it times the same model, optimizer and loss
on synthetic tensors already in memory (no data path at all), in windows of one epoch's steps. The ratio says
what the data path costs: the goal is >= 0.95.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import pandas as pd  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402


def compute_only(model_name: str, size: int, batch: int, steps: int, windows: int, classes: int, lr: float,
                 seed: int = 0) -> list[float]:
    """images/s of forward + backward + AdamW step on in-memory tensors (the model's ceiling), per window of
    ``steps`` steps (the same number of steps as one training epoch, so both sides are timed alike)."""
    import timm
    from timm.optim import create_optimizer_v2

    torch.manual_seed(seed)
    model = timm.create_model(model_name, num_classes=classes)
    opt = create_optimizer_v2(model, opt="adamw", lr=lr, weight_decay=0.05)
    loss_fn = torch.nn.CrossEntropyLoss()
    x = torch.randn(batch, 3, size, size)
    y = torch.randint(0, classes, (batch,))
    model.train()

    def step():
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(3):  # warm-up: allocator, kernels
        step()
    out = []
    for _ in range(windows):
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        out.append(batch * steps / (time.perf_counter() - t0))
    return out


def end_to_end(work: Path, args) -> tuple[list[float], dict]:
    from comp.config import load_config
    from comp.folds import make_folds
    from comp.sample import make_sample
    from comp.train import train_folds

    data = work / "data"
    info = make_sample(data, n_train=args.n_train, n_test=50, imbalance=1.0, seed=0)
    (work / "comp.yaml").write_text(yaml.safe_dump({"data": {
        "root": "data", "id_has_ext": False, "ext": ".png", "id_col": "image_id", "label_col": "label"}}))
    os.chdir(work)
    sets = [f"model.name={args.model}", f"input.size={args.size}", f"train.batch_size={args.batch_size}",
            f"train.epochs={args.epochs}", f"folds.n_splits={args.folds}", f"augment.preset={args.preset}",
            f"train.lr={args.lr}"]
    cfg = load_config(work / "comp.yaml", exp="bench", overrides=sets)
    make_folds(cfg, echo=lambda s: None)
    res = train_folds(cfg, [0], echo=print)
    metrics = pd.read_csv(work / "runs" / "bench" / "fold_0" / "metrics.csv")
    return metrics["images_per_s"].tolist(), {"source": info.source, "score": res["folds"][0]["score"],
                                              "classes": len(info.classes)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n-train", type=int, default=2560)
    p.add_argument("--folds", type=int, default=5, help="fold 0 trains on (folds-1)/folds of --n-train")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--model", default="resnet18")
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--preset", default="light")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--workdir", default=None, help="keep the sample competition and run here")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cpus visible, "
          f"affinity {len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else '?'} cores")

    classes = 10
    fit = args.n_train * (args.folds - 1) // args.folds
    steps = math.ceil(fit / args.batch_size)
    windows = max(1, args.epochs - 1)
    load0 = os.getloadavg()
    before = compute_only(args.model, args.size, args.batch_size, steps, (windows + 1) // 2, classes, args.lr)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.workdir or tmp).resolve()
        work.mkdir(parents=True, exist_ok=True)
        here = os.getcwd()
        try:
            per_epoch, info = end_to_end(work, args)
        finally:
            os.chdir(here)
    after = compute_only(args.model, args.size, args.batch_size, steps, windows // 2 or 1, classes, args.lr)
    load1 = os.getloadavg()

    warm = per_epoch[1:] or per_epoch  # epoch 1 includes first-touch costs; the cache was filled before it
    compute = before + after
    print()
    print(f"data: {info['source']}, {args.n_train} images, fold 0 trains on {fit} ({steps} steps of "
          f"{args.batch_size} per epoch)")
    print(f"model {args.model} at {args.size}px, augment {args.preset}, {args.epochs} epochs "
          f"(val macro F1 {info['score']:.3f}); load average {load0[0]:.1f} before, {load1[0]:.1f} after")
    print(f"end-to-end training images/s per epoch (metrics.csv): {', '.join(f'{v:.0f}' for v in per_epoch)}")
    print(f"compute-only images/s per {steps}-step window: {', '.join(f'{v:.0f}' for v in compute)}")
    e2e_med, e2e_best = statistics.median(warm), max(warm)
    c_med, c_best = statistics.median(compute), max(compute)
    print(f"end-to-end images/s (epochs 2..{args.epochs}): median {e2e_med:.1f}, best {e2e_best:.1f}")
    print(f"compute-only images/s:               median {c_med:.1f}, best {c_best:.1f}")
    print(f"ratio end-to-end / compute-only: median {e2e_med / c_med:.3f}, best {e2e_best / c_best:.3f}  "
          f"(goal >= 0.95; on a shared machine trust 'best': contention only ever slows a window down)")


if __name__ == "__main__":
    main()
