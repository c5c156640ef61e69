"""Issue 20's done-when: `comp auto --budget 15m` against the plain loop an afternoon's notebook would write, on the
same long-tailed 28-px competition, each given the machine alone.

Data: `comp sample` (Fashion-MNIST, --n-train 5000, --n-test 2000 hold-out, --imbalance 10).

    loop  the issue's plain loop, by hand: one resnet18 (timm, from scratch) on every training row at 32 px, random
          hflip and 4-px shifts, label smoothing 0.1, AdamW with a one-cycle lr of 3e-3, batch 128, then hflip
          TTA. --loop-epochs 40 is the loop as the issue wrote it; --loop-seconds S instead fits its epochs to S
          wall seconds from a measured first epoch; --match gives it auto's own wall time.
    auto  `comp init data` + `comp auto --budget B`; its CV is the ledger row of submissions/auto.csv (honest: the
          folds its search never saw), its hold-out `comp score` against solution.csv.

Prints one table: wall seconds, CV (auto) and hold-out macro F1 for each, and the differences the issue asks for.

    python benchmarks/auto_vs_loop.py [--dir bench-auto] [--budget 15m] [--parts auto,loop] [--match | --loop-seconds S]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from techniques import comp  # noqa: E402


def sample(where: Path, args) -> None:
    if not (where / "data" / "solution.csv").exists():
        comp(where, "sample", "data", "--n-train", str(args.n_train), "--n-test", str(args.n_test),
             "--imbalance", str(args.imbalance), "--overwrite")


def images(folder: Path, ids) -> np.ndarray:
    from PIL import Image

    return np.stack([np.asarray(Image.open(next(folder.glob(f"{i}.*"))).convert("L"), dtype=np.uint8)
                     for i in ids])


def loop_data(where: Path):
    import torch

    train = pd.read_csv(where / "data" / "train.csv", dtype=str)
    sol = pd.read_csv(where / "data" / "solution.csv", dtype=str)
    classes = sorted(train["label"].unique())
    to_x = lambda a: torch.nn.functional.pad(torch.from_numpy(a).float().div(255).unsqueeze(1), (2, 2, 2, 2))  # noqa: E731
    xtr = to_x(images(where / "data" / "train_images", train["image_id"]))
    xte = to_x(images(where / "data" / "test_images", sol["image_id"]))
    ytr = torch.tensor([classes.index(c) for c in train["label"]])
    return xtr, ytr, xte, sol["label"].tolist(), classes


def augment(x):
    """Random hflip and a 4-px shift (reflect-pad 4, random 32 crop), per image, on the batch tensor."""
    import torch

    flip = torch.rand(len(x)) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(3), x)
    pad = torch.nn.functional.pad(x, (4, 4, 4, 4), mode="reflect")
    dx, dy = torch.randint(0, 9, (2, len(x)))
    return torch.stack([pad[i, :, dy[i]:dy[i] + 32, dx[i]:dx[i] + 32] for i in range(len(x))])


def plain_loop(where: Path, epochs: int | None, seconds: float | None) -> dict:
    import timm
    import torch
    from sklearn.metrics import f1_score

    t0 = time.perf_counter()
    torch.manual_seed(0)
    xtr, ytr, xte, truth, classes = loop_data(where)
    model = timm.create_model("resnet18", pretrained=False, num_classes=len(classes), in_chans=1)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.05)
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
    steps = (len(xtr) + 127) // 128

    def one_epoch(sched=None):
        model.train()
        for b in torch.randperm(len(xtr)).split(128):
            loss = loss_fn(model(augment(xtr[b])), ytr[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
            if sched:
                sched.step()

    if epochs is None:  # fit the epochs to the wall time from a measured (thrown away) first epoch
        probe = time.perf_counter()
        one_epoch()
        per = time.perf_counter() - probe
        epochs = max(1, int((seconds - (time.perf_counter() - t0) - 30) / per))
        model = timm.create_model("resnet18", pretrained=False, num_classes=len(classes), in_chans=1)
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.05)
        print(f"loop: {per:.1f} s an epoch -> {epochs} epochs in {seconds:.0f} s", flush=True)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=epochs * steps)
    for e in range(epochs):
        one_epoch(sched)
        print(f"loop: epoch {e + 1}/{epochs} at {time.perf_counter() - t0:.0f} s", flush=True)
    model.eval()
    with torch.no_grad():
        probs = sum(torch.cat([model(x).softmax(1) for x in v.split(256)]) for v in (xte, xte.flip(3)))
    pred = [classes[i] for i in probs.argmax(1).tolist()]
    return {"epochs": epochs, "wall_s": time.perf_counter() - t0,
            "holdout": float(f1_score(truth, pred, average="macro"))}


def auto(where: Path, budget: str) -> dict:
    if not (where / "comp.yaml").exists():
        comp(where, "init", "data")
    t0 = time.perf_counter()
    comp(where, "auto", "--budget", budget, *(["--resume"] if (where / "runs" / "auto" / "plan.json").exists() else []))
    wall = time.perf_counter() - t0
    ledger = pd.read_csv(where / "submissions" / "ledger.csv", dtype=str)
    row = ledger[ledger["name"] == "auto"].iloc[-1]
    scored = json.loads(comp(where, "score", "submissions/auto.csv", "--solution", "data/solution.csv", "--json"))
    return {"wall_s": wall, "cv": float(row["cv_macro_f1"]), "holdout": float(scored["macro_f1"])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dir", default="bench-auto")
    ap.add_argument("--budget", default="15m")
    ap.add_argument("--parts", default="auto,loop")
    ap.add_argument("--loop-epochs", type=int, default=40)
    ap.add_argument("--loop-seconds", type=float, default=None, help="fit the loop's epochs to this wall time")
    ap.add_argument("--match", action="store_true", help="give the loop auto's wall time (auto runs first)")
    ap.add_argument("--n-train", type=int, default=5000)
    ap.add_argument("--n-test", type=int, default=2000)
    ap.add_argument("--imbalance", type=float, default=10)
    args = ap.parse_args()
    where = Path(args.dir).resolve()
    where.mkdir(parents=True, exist_ok=True)
    sample(where, args)
    rows = {}
    for part in args.parts.split(","):
        if part == "auto":
            rows["auto"] = auto(where, args.budget)
        elif part == "loop":
            seconds = args.loop_seconds or (rows["auto"]["wall_s"] if args.match and "auto" in rows else None)
            rows["loop"] = plain_loop(where, None if seconds else args.loop_epochs, seconds)
        print(json.dumps({part: rows[part]}), flush=True)
    print("\n| run | wall s | CV | hold-out macro F1 |\n|---|---|---|---|")
    for name, r in rows.items():
        cv = f"{r['cv']:.4f}" if "cv" in r else "-"
        label = f"plain loop, {r['epochs']} epochs" if name == "loop" else f"comp auto --budget {args.budget}"
        print(f"| {label} | {r['wall_s']:.0f} | {cv} | {r['holdout']:.4f} |")
    if {"auto", "loop"} <= rows.keys():
        a, lp = rows["auto"], rows["loop"]
        print(f"\nauto hold-out - loop hold-out: {a['holdout'] - lp['holdout']:+.4f} (issue 20 asks >= +0.02); "
              f"auto CV - hold-out: {a['cv'] - a['holdout']:+.4f} (asks within 0.02)")


if __name__ == "__main__":
    main()
