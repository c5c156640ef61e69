"""Training throughput: end-to-end `comp train` images/s against the model's compute-only images/s, per
augmentation path, with each configuration's peak RSS and validation macro F1.

    python benchmarks/train_throughput.py                      # CPU bar: resnet18, 32 px, batch 128
    python benchmarks/train_throughput.py --runs light:device,light:cpu,pipeline:cpu
    # GPU (the configuration issue 8 names): resnet50 at 224, bf16, channels_last, compile off and on
    python benchmarks/train_throughput.py --model resnet50 --size 224 --batch-size 128 --precision bf16 \\
        --channels-last --compile off,on --runs light:device,light:cpu,medium:device,medium:cpu --n-train 5120

Builds a Fashion-MNIST sample competition (`comp sample`) once, then runs each configuration in a process of its
own (so its peak RSS is its own): it trains fold 0 with `comp.train.train_folds` and reads images/s from
metrics.csv for the epochs after the first (the decoded-image cache is warm by then). Before and after, the
same process times the same model, optimizer, loss, precision and memory format on synthetic tensors already on
the device (no data path at all), in windows of one epoch's steps. The ratio is what the data path costs:
the goal is >= 0.97 for the device presets.

A run is PRESET:ON. ON is ``device`` (batched tensor ops on the batch, comp.train.batch_augment) or ``cpu``
(albumentations per image in the loader); PRESET ``pipeline`` is the medium preset written as an albumentations
``augment.pipeline`` (the CPU path a user's own pipeline takes). The val macro F1 column compares the paths at
the same epochs.

``--multilabel`` (issue 19) measures multi-label targets against single-label ones on the same images, in one
run: an HPA-style mosaic sample (`comp sample --multilabel`, several labels per image, data.task multilabel:
multi-hot targets, bce) and the same images and folds with each image's first label as its one class
(multiclass, ce); each PRESET:ON runs under both and the table ends with the multi-label / single-label ratio of
end-to-end images/s (done when >= 0.95).

    python benchmarks/train_throughput.py --multilabel --runs light:device --model resnet18 --size 56
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import torch  # noqa: E402
import yaml  # noqa: E402


def compute_only(args, steps: int, windows: int, classes: int = 10, seed: int = 0) -> list[float]:
    """images/s of forward + backward + AdamW step on in-memory device tensors (the model's ceiling), per window
    of ``steps`` steps (the same number of steps as one training epoch, so both sides are timed alike)."""
    import timm
    from timm.optim import create_optimizer_v2

    from comp.accel import resolve_precision

    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(seed)
    model = timm.create_model(args.model, num_classes=classes).to(dev)
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    opt = create_optimizer_v2(model, opt="adamw", lr=args.lr, weight_decay=0.05)
    fwd = torch.compile(model) if args.compile_one == "on" else model
    loss_fn = torch.nn.CrossEntropyLoss()
    x = torch.randn(args.batch_size, 3, args.size, args.size, device=dev).contiguous(memory_format=fmt)
    y = torch.randint(0, classes, (args.batch_size,), device=dev)
    precision = resolve_precision(args.precision)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    model.train()

    def step():
        with torch.autocast(dev.type, dtype=dtype, enabled=dtype is not None):
            loss = loss_fn(fwd(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(3 if args.compile_one == "off" else 6):  # warm-up: allocator, kernels, compilation
        step()
    out = []
    for _ in range(windows):
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        out.append(args.batch_size * steps / (time.perf_counter() - t0))
    return out


def one_run(args) -> dict:
    """Child process: compute-only, then fold 0 end to end, then compute-only again; prints one JSON line."""
    import pandas as pd

    from comp.config import load_config
    from comp.train.augment import preset_dict
    from comp.train.session import train_folds

    preset, on = args.one.split(":")
    sets = [f"model.name={args.model}", f"input.size={args.size}", f"train.batch_size={args.batch_size}",
            f"train.epochs={args.epochs}", f"folds.n_splits={args.folds}", f"train.lr={args.lr}",
            f"train.precision={args.precision}", f"train.channels_last={str(args.channels_last).lower()}",
            f"train.compile={'true' if args.compile_one == 'on' else 'false'}", "train.cache=memory"]
    if preset == "pipeline":
        sets += ["augment.on=cpu", "augment.pipeline=" + json.dumps(preset_dict("medium", args.size))]
    else:
        sets += [f"augment.preset={preset}", f"augment.on={on}"]
    fit = args.n_train * (args.folds - 1) // args.folds
    steps = math.ceil(fit / args.batch_size)
    windows = max(1, args.epochs - 1)
    before = compute_only(args, steps, (windows + 1) // 2)
    exp = f"bench-{preset}-{on}-{args.compile_one}"
    exp += "-" + Path(args.config).stem
    cfg = load_config(Path(args.config), exp=exp, overrides=sets)
    res = train_folds(cfg, [0], overwrite=True, echo=lambda m: print(m, file=sys.stderr))
    after = compute_only(args, steps, windows // 2 or 1)
    metrics = pd.read_csv(Path("runs") / exp / "fold_0" / "metrics.csv")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: kilobytes
    gpu_peak = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else 0
    return {"run": args.one + (" " + cfg.data.task if args.config != "comp.yaml" or args.multilabel else ""),
            "compile": args.compile_one, "per_epoch": metrics["images_per_s"].tolist(),
            "compute": before + after, "score": res["folds"][0]["score"], "peak_rss": rss, "gpu_peak": gpu_peak,
            "steps": steps, "fit": fit}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n-train", type=int, default=2560)
    p.add_argument("--folds", type=int, default=5, help="fold 0 trains on (folds-1)/folds of --n-train")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--model", default="resnet18")
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--runs", default="light:device,medium:device,light:cpu,medium:cpu,pipeline:cpu",
                   help="comma-separated PRESET:ON (ON: device or cpu; PRESET pipeline = albumentations pipeline)")
    p.add_argument("--precision", default="auto", help="train.precision: auto, no, bf16, fp16")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--compile", default="off", help="off, on, or off,on (each run once per value)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--workdir", default=None, help="keep the sample competition and runs here")
    p.add_argument("--multilabel", action="store_true",
                   help="multi-label targets vs single-label ones on the same mosaic images (ratio in one run)")
    p.add_argument("--config", default="comp.yaml", help=argparse.SUPPRESS)
    p.add_argument("--one", help=argparse.SUPPRESS)
    p.add_argument("--compile-one", default="off", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.one:
        print("RESULT " + json.dumps(one_run(args)))
        return

    dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"
    print(f"torch {torch.__version__} on {dev}, {torch.get_num_threads()} threads, {os.cpu_count()} cpus visible")
    load0 = os.getloadavg()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.workdir or tmp).resolve()
        work.mkdir(parents=True, exist_ok=True)
        info = make_multilabel(work, args) if args.multilabel else make_competition(work, args)
        configs = ["comp_single.yaml", "comp.yaml"] if args.multilabel else ["comp.yaml"]
        for comp_mode, r, config in [(c, r, y) for c in args.compile.split(",") for r in args.runs.split(",")
                                     for y in configs]:
            cmd = [sys.executable, str(Path(__file__).resolve()), "--one", r, "--compile-one", comp_mode,
                   "--config", config,
                   *[a for k, v in vars(args).items() if k not in ("one", "compile_one", "workdir", "runs",
                                                                    "compile", "config") and v not in (None, False)
                     for a in ((f"--{k.replace('_', '-')}",) if v is True else (f"--{k.replace('_', '-')}",
                                                                                str(v)))]]
            out = subprocess.run(cmd, cwd=work, capture_output=True, text=True)
            line = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")]
            if out.returncode or not line:
                print(f"{r} compile {comp_mode}: failed\n{out.stderr[-3000:]}")
                continue
            results.append(json.loads(line[0][7:]))
            show(results[-1], args)
    load1 = os.getloadavg()
    print()
    print(f"data: {info}, {args.n_train} images; model {args.model} at {args.size}px, batch {args.batch_size}, "
          f"precision {args.precision}, channels_last {args.channels_last}, {args.epochs} epochs; "
          f"load average {load0[0]:.1f} before, {load1[0]:.1f} after")
    print(f"{'run':16} {'compile':7} {'e2e img/s':>10} {'compute img/s':>14} {'ratio med':>9} {'ratio best':>10} "
          f"{'val F1':>7} {'peak RSS':>9} {'GPU peak':>9}")
    for r in results:
        e2e, c = r["per_epoch"][1:] or r["per_epoch"], r["compute"]
        print(f"{r['run']:16} {r['compile']:7} {statistics.median(e2e):10.1f} {statistics.median(c):14.1f} "
              f"{statistics.median(e2e) / statistics.median(c):9.3f} {max(e2e) / max(c):10.3f} {r['score']:7.3f} "
              f"{r['peak_rss'] / 2**20:7.0f}MB {r['gpu_peak'] / 2**20:7.0f}MB")
    if args.multilabel:
        multilabel_ratios(results)
    print("ratio = end-to-end / compute-only images/s (goal >= 0.97 for the device presets); on a shared machine "
          "trust 'best': contention only ever slows a window down. val F1: fold 0 after the same epochs.")


def show(r: dict, args) -> None:
    print(f"{r['run']} compile {r['compile']}: end-to-end per epoch {', '.join(f'{v:.0f}' for v in r['per_epoch'])}"
          f" | compute-only per {r['steps']}-step window {', '.join(f'{v:.0f}' for v in r['compute'])} img/s")


def multilabel_ratios(results: list[dict]) -> None:
    """Multi-label / single-label end-to-end images/s of each PRESET:ON (medians and bests of the epochs after
    the first)."""
    by = {(r["run"], r["compile"]): r for r in results}
    for (run, comp_mode), ml in by.items():
        if not run.endswith(" multilabel"):
            continue
        single = by.get((run.replace(" multilabel", " multiclass"), comp_mode))
        if single is None:
            continue
        a, b = ml["per_epoch"][1:] or ml["per_epoch"], single["per_epoch"][1:] or single["per_epoch"]
        print(f"multi-label / single-label images/s, {run.split()[0]} compile {comp_mode}: median "
              f"{statistics.median(a) / statistics.median(b):.3f}, best {max(a) / max(b):.3f} (goal >= 0.95); "
              f"val score {ml['score']:.3f} (data.metric macro_f1 of the labels) vs {single['score']:.3f}")


def make_multilabel(work: Path, args) -> str:
    """An HPA-style mosaic sample under ``work/data``: comp.yaml (multi-label, as comp init writes it) and
    comp_single.yaml (the same images and folds, each image's first label its one class)."""
    import pandas as pd

    from comp.config import load_config
    from comp.data.folds import make_folds
    from comp.data.init import init_competition
    from comp.data.sample_multilabel import make_multilabel_sample

    info = make_multilabel_sample(work / "data", "hpa", n_train=args.n_train, n_test=50, seed=0, overwrite=True)
    here = os.getcwd()
    os.chdir(work)
    try:
        init_competition(work / "data", "comp.yaml", overwrite=True, echo=lambda s: None)
        cfg = load_config("comp.yaml", overrides=[f"folds.n_splits={args.folds}"])
        make_folds(cfg, overwrite=True, echo=lambda s: None)
        train = pd.read_csv(work / "data" / "train.csv", dtype=str, keep_default_na=False)
        train["Target"] = train["Target"].str.split().str[0]
        train.to_csv(work / "data" / "train_single.csv", index=False)
        folds = pd.read_csv("folds/folds.csv", dtype=str, keep_default_na=False)
        folds["Target"] = folds["Target"].str.split().str[0]
        folds.to_csv("folds/folds_single.csv", index=False)  # the same folds: only the targets differ
        single = yaml.safe_load(Path("comp.yaml").read_text())
        single["data"] = {k: v for k, v in single["data"].items() if k not in ("task", "label_sep", "metric")}
        single["data"]["train_csv"] = "train_single.csv"
        single["folds"] = {**(single.get("folds") or {}), "file": "folds/folds_single.csv"}
        Path("comp_single.yaml").write_text(yaml.safe_dump(single))
    finally:
        os.chdir(here)
    return f"{info.source} mosaics (multi-label, hpa layout)"


def make_competition(work: Path, args) -> str:
    from comp.config import load_config
    from comp.data.folds import make_folds
    from comp.data.sample import make_sample

    info = make_sample(work / "data", n_train=args.n_train, n_test=50, imbalance=1.0, seed=0, overwrite=True)
    (work / "comp.yaml").write_text(yaml.safe_dump({"data": {
        "root": "data", "id_has_ext": False, "ext": ".png", "id_col": "image_id", "label_col": "label"}}))
    cfg = load_config(work / "comp.yaml", overrides=[f"folds.n_splits={args.folds}"])
    here = os.getcwd()
    os.chdir(work)
    try:
        make_folds(cfg, overwrite=True, echo=lambda s: None)
    finally:
        os.chdir(here)
    return info.source


if __name__ == "__main__":
    main()
