"""Issue 34's done-when: `comp auto --budget 15m` on photos against the careful notebook fine-tune, each given the
machine alone, at equal wall time.

Data: `comp sample --kind photo` (colour JPEGs of 300-700 px, objects at varied scale and place on clutter, 10%
stored sideways with an EXIF tag; --n-train 5000, a balanced --n-test 2000 hold-out, --imbalance 10).

    notebook  the issue's careful notebook fine-tune, by hand: timm tf_efficientnet_lite0 with its ImageNet weights
              (the local hub cache, HF_HUB_OFFLINE=1) at 128 px (stretched), the new head zeroed, on every training
              row; random hflip and 8-px shifts, label smoothing 0.1, AdamW (weight decay 0.05) with a one-cycle lr of
              3e-4, batch 64; hflip TTA. --match fits its epochs to auto's wall time from a measured first epoch
              (thrown away, its time not counted); decoding the JPEGs counts in its time, as it does in auto's.
    scratch   --weights none: the same loop from scratch, resnet18 at 64 px with a one-cycle lr of 3e-3, and auto run
              with an empty hub cache (no weights on the machine)
    auto      `comp init data` + `comp auto --budget B`; its CV is the ledger row of submissions/auto.csv, its hold-out
              `comp score` against solution.csv

    python benchmarks/auto_vs_notebook.py [--dir bench-photo] [--budget 15m] [--weights lite0|none] [--match]
        [--parts auto,notebook] [--notebook-seconds S]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

os.environ["HF_HUB_OFFLINE"] = "1"
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).parent))
import techniques  # noqa: E402
from auto_vs_loop import auto  # noqa: E402
from techniques import comp  # noqa: E402


def sample(where: Path, args) -> None:
    if not (where / "data" / "solution.csv").exists():
        comp(where, "sample", "data", "--kind", "photo", "--n-train", str(args.n_train), "--n-test", str(args.n_test),
             "--imbalance", str(args.imbalance), "--seed", str(args.seed), "--overwrite")


def weights(kind: str) -> None:
    """lite0: the real weights in the hub cache; none: an empty private cache, so nothing is found."""
    if kind == "none":
        techniques.ENV["HF_HOME"] = os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="empty-hf-")
        return
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "lite0_weights.py")], capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(r.stdout + r.stderr)


def decode(folder: Path, ids, size: int):
    """Every image upright (EXIF), stretched to size x size, as a notebook's PIL Resize would: uint8 (N, 3, S, S)."""
    import torch
    from PIL import Image, ImageOps

    out = np.empty((len(ids), 3, size, size), np.uint8)
    for k, i in enumerate(ids):
        with Image.open(next(folder.glob(f"{i}.*"))) as im:
            im.draft("RGB", (size, size))
            im = ImageOps.exif_transpose(im).convert("RGB").resize((size, size), Image.BILINEAR)
            out[k] = np.asarray(im).transpose(2, 0, 1)
    return torch.from_numpy(out)


def augment(x, size: int):
    """Random hflip and an 8-px shift (reflect-pad 8, random crop), per image, on the float batch."""
    import torch

    flip = torch.rand(len(x)) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(3), x)
    pad = torch.nn.functional.pad(x, (8, 8, 8, 8), mode="reflect")
    dx, dy = torch.randint(0, 17, (2, len(x)))
    return torch.stack([pad[i, :, dy[i]:dy[i] + size, dx[i]:dx[i] + size] for i in range(len(x))])


def make(kind: str, n: int):
    import timm
    import torch

    name = "tf_efficientnet_lite0" if kind == "lite0" else "resnet18"
    model = timm.create_model(name, pretrained=kind == "lite0", num_classes=n)
    if kind == "lite0":
        with torch.no_grad():
            model.get_classifier().weight.zero_()
            model.get_classifier().bias.zero_()
    return model


def notebook(where: Path, kind: str, epochs: int | None, seconds: float | None) -> dict:
    import torch
    from sklearn.metrics import f1_score

    t0 = time.perf_counter()
    torch.manual_seed(0)
    size, lr, batch = (128, 3e-4, 64) if kind == "lite0" else (64, 3e-3, 64)
    train = pd.read_csv(where / "data" / "train.csv", dtype=str)
    sol = pd.read_csv(where / "data" / "solution.csv", dtype=str)
    classes = sorted(train["label"].unique())
    xtr, xte = decode(where / "data" / "train_images", train["image_id"], size), \
        decode(where / "data" / "test_images", sol["image_id"], size)
    ytr = torch.tensor([classes.index(c) for c in train["label"]])
    norm = lambda u8: (u8.float() / 255 - 0.5) / 0.5 if kind == "lite0" else \
        (u8.float() / 255 - torch.tensor([0.485, 0.456, 0.406])[:, None, None]) / torch.tensor([0.229, 0.224, 0.225])[:, None, None]  # noqa: E501, E731
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
    steps = (len(xtr) + batch - 1) // batch
    print(f"notebook: decoded {len(xtr) + len(xte)} images at {size}px in {time.perf_counter() - t0:.0f}s", flush=True)

    def one_epoch(model, opt, sched=None):
        model.train()
        for b in torch.randperm(len(xtr)).split(batch):
            loss = loss_fn(model(augment(norm(xtr[b]), size)), ytr[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
            if sched:
                sched.step()

    if epochs is None:  # fit the epochs to the wall time from a measured (thrown away) first epoch
        probe = time.perf_counter()
        m = make(kind, len(classes))
        one_epoch(m, torch.optim.AdamW(m.parameters(), lr=lr, weight_decay=0.05))
        per = time.perf_counter() - probe
        t0 += per  # the measuring epoch is the benchmark's, not the notebook's: its time does not count
        epochs = max(1, int((seconds - (time.perf_counter() - t0) - 30) / per))
        print(f"notebook: {per:.1f} s an epoch -> {epochs} epochs in {seconds:.0f} s (the measuring epoch not "
              f"counted)", flush=True)
    model = make(kind, len(classes))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps)
    for e in range(epochs):
        one_epoch(model, opt, sched)
        print(f"notebook: epoch {e + 1}/{epochs} at {time.perf_counter() - t0:.0f} s", flush=True)
    model.eval()
    with torch.no_grad():
        probs = sum(torch.cat([model(norm(x)).softmax(1) for x in v.split(128)]) for v in (xte, xte.flip(3)))
    pred = [classes[i] for i in probs.argmax(1).tolist()]
    return {"epochs": epochs, "wall_s": time.perf_counter() - t0,
            "holdout": float(f1_score(sol["label"], pred, average="macro"))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dir", default="bench-photo")
    ap.add_argument("--budget", default="15m")
    ap.add_argument("--weights", choices=["lite0", "none"], default="lite0")
    ap.add_argument("--parts", default="auto,notebook")
    ap.add_argument("--notebook-epochs", type=int, default=5)
    ap.add_argument("--notebook-seconds", type=float, default=None, help="fit the notebook's epochs to this time")
    ap.add_argument("--match", action="store_true", help="give the notebook auto's wall time (auto runs first)")
    ap.add_argument("--n-train", type=int, default=5000)
    ap.add_argument("--n-test", type=int, default=2000)
    ap.add_argument("--imbalance", type=float, default=10)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    print(f"uptime: {os.popen('uptime').read().strip()}", flush=True)
    weights(args.weights)
    where = Path(args.dir).resolve()
    where.mkdir(parents=True, exist_ok=True)
    sample(where, args)
    rows = {}
    for part in args.parts.split(","):
        if part == "auto":
            rows["auto"] = auto(where, args.budget)
        elif part == "notebook":
            seconds = args.notebook_seconds or (rows["auto"]["wall_s"] if args.match and "auto" in rows else None)
            rows["notebook"] = notebook(where, args.weights, None if seconds else args.notebook_epochs, seconds)
        print(json.dumps({part: rows[part]}), flush=True)
    print(f"\n| run ({args.weights}) | wall s | CV | hold-out macro F1 |\n|---|---|---|---|")
    for name, r in rows.items():
        cv = f"{r['cv']:.4f}" if "cv" in r else "-"
        label = f"notebook, {r['epochs']} epochs" if name == "notebook" else f"comp auto --budget {args.budget}"
        print(f"| {label} | {r['wall_s']:.0f} | {cv} | {r['holdout']:.4f} |")
    if {"auto", "notebook"} <= rows.keys():
        a, nb = rows["auto"], rows["notebook"]
        print(f"\nauto hold-out - notebook hold-out: {a['holdout'] - nb['holdout']:+.4f} (issue 34 asks >= +0.03 with "
              f"weights); auto CV - hold-out: {a['cv'] - a['holdout']:+.4f} (asks within 0.02)")
    print(f"uptime: {os.popen('uptime').read().strip()}")


if __name__ == "__main__":
    main()
