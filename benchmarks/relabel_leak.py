"""Relabel leak with near-duplicates across folds (docs/leaks.md).

    python benchmarks/relabel_leak.py N NOISE EPOCHS SIZE [LR] [WORKDIR]   # from the repo root

N comp-sample images, each twice (the copy shifted 1 px) in two different folds of 3, every copy's label flipped
with probability NOISE, no group column; a noisy baseline, then every `comp relabel` suggestion accepted; prints
CV and hold-out macro F1 of both and the leak (CV rise minus hold-out rise).
"""

import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from sklearn.metrics import f1_score

sys.path.insert(0, os.path.join(os.getcwd(), "tests"))
from conftest import write_config  # noqa: E402

from comp.config import load_config  # noqa: E402
from comp.data.sample import make_sample  # noqa: E402
from comp.infer.predict import predict  # noqa: E402
from comp.techniques import sources  # noqa: E402
from comp.techniques.relabel import run_relabel  # noqa: E402
from comp.train.loop import train_folds  # noqa: E402

PAIRS = [(0, 1), (0, 2), (1, 2)]


def build(work: Path, src: Path, n: int, noise: float) -> None:
    root = work / "data"
    (root / "train_images").mkdir(parents=True)
    train = pd.read_csv(src / "train.csv", dtype=str).head(n)
    classes = sorted(train["label"].unique())
    rng = np.random.default_rng(0)
    rows = []
    for i, r in enumerate(train.itertuples(index=False)):
        img = np.asarray(Image.open(src / "train_images" / f"{r.image_id}.png"))
        pair = PAIRS[i % 3] if rng.random() < 0.5 else PAIRS[i % 3][::-1]
        for c, im, f in (("a", img, pair[0]), ("b", np.roll(img, 1, axis=1), pair[1])):
            lab = r.label if rng.random() >= noise else rng.choice([x for x in classes if x != r.label])
            Image.fromarray(im).save(root / "train_images" / f"{r.image_id}{c}.png")
            rows.append({"image_id": f"{r.image_id}{c}", "label": lab, "fold": f})
    df = pd.DataFrame(rows)
    df[["image_id", "label"]].to_csv(root / "train.csv", index=False)
    shutil.copytree(src / "test_images", root / "test_images")
    shutil.copy(src / "sample_submission.csv", root / "sample_submission.csv")
    write_config(work, root)
    (work / "folds").mkdir()
    df.to_csv(work / "folds" / "folds.csv", index=False)


def holdout(work: Path, exp: str, recipe: list[str], solution: Path) -> float:
    predict(load_config(work / "comp.yaml", exp=exp, overrides=recipe), echo=lambda s: None, progress=False)
    t = pd.read_csv(work / "runs" / exp / "test.csv", dtype={"image_id": str})
    sol = pd.read_csv(solution, dtype=str).set_index("image_id").loc[t["image_id"]]
    cl = [c for c in t.columns if c != "image_id"]
    return f1_score(sol["label"], np.asarray(cl)[t[cl].to_numpy().argmax(1)], average="macro")


def main() -> None:
    n, noise, epochs, size = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    lr = sys.argv[5] if len(sys.argv) > 5 else "0.01"
    work = Path(sys.argv[6] if len(sys.argv) > 6 else "/tmp/relabel_leak").resolve()
    shutil.rmtree(work, ignore_errors=True)
    src = work.parent / f"{work.name}_src"
    if not src.exists():
        make_sample(src, n_train=600, n_test=150, imbalance=1.0, seed=0)
    build(work, src, n, noise)
    os.chdir(work)
    recipe = ["model.name=test_resnet", f"input.size={size}", "augment.preset=none", "train.batch_size=32",
              f"train.lr={lr}", f"train.epochs={epochs}"]
    t0 = time.time()
    cv0 = train_folds(load_config(work / "comp.yaml", exp="noisy", overrides=recipe), echo=lambda s: None)
    h0 = holdout(work, "noisy", recipe, src / "solution.csv")
    run_relabel(load_config(work / "comp.yaml"), "noisy", gallery=0, echo=lambda s: None)
    path = work / "reports" / "noisy" / "relabel.csv"
    rl = pd.read_csv(path, dtype=str, keep_default_na=False).assign(accept="accept")
    rl.to_csv(path, index=False)
    cfg = load_config(work / "comp.yaml", exp="clean", overrides=[*recipe, "data.relabel=reports/noisy/relabel.csv"])
    said: list[str] = []
    cv1 = train_folds(cfg, echo=said.append, sources=sources(cfg))
    print("\n".join(x for x in said if "relabel" in x))
    h1 = holdout(work, "clean", recipe, src / "solution.csv")
    c0, c1 = cv0["cv_macro_f1"], cv1["cv_macro_f1"]
    print(f"N={n} noise={noise} epochs={epochs} size={size}: {len(rl)} suspects accepted; CV {c0:.4f} -> {c1:.4f} "
          f"({c1 - c0:+.4f}); hold-out {h0:.4f} -> {h1:.4f} ({h1 - h0:+.4f}); leak {c1 - c0 - (h1 - h0):+.4f}; "
          f"{time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
