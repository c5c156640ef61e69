"""Relabel leak with near-duplicates across folds (docs/leaks.md).

    python benchmarks/relabel_leak.py N NOISE EPOCHS SIZE [LR] [WORKDIR] [SEED]   # from the repo root

N comp-sample images, each twice (the copy shifted 1 px) in two different folds of 3, every copy's label flipped
with probability NOISE (drawn from SEED), no group column; a noisy baseline, then every `comp relabel` suggestion
accepted two ways:
    leaky  train.csv rewritten with relabel.csv's suggestions (what a notebook does, and comp before issue 17):
           a fold-j suggestion came from the fold-j model, which trained on fold k's labels
    comp   data.relabel with every row accepted: fold k takes only the suggestions of pair models that never saw it
Every CV is scored on the noisy labels as given. Prints CV and hold-out macro F1 of each and the leak (CV rise minus
hold-out rise).
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
from comp.train.session import train_folds  # noqa: E402

PAIRS = [(0, 1), (0, 2), (1, 2)]


def build(work: Path, src: Path, n: int, noise: float, seed: int) -> None:
    root = work / "data"
    (root / "train_images").mkdir(parents=True)
    train = pd.read_csv(src / "train.csv", dtype=str).head(n)
    classes = sorted(train["label"].unique())
    rng = np.random.default_rng(seed)
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
    write_config(work, root, train={"seed": seed})
    (work / "folds").mkdir()
    df.to_csv(work / "folds" / "folds.csv", index=False)


def holdout(work: Path, exp: str, recipe: list[str], solution: Path) -> float:
    predict(load_config(work / "comp.yaml", exp=exp, overrides=recipe), echo=lambda s: None, progress=False)
    t = pd.read_csv(work / "runs" / exp / "test.csv", dtype={"image_id": str})
    sol = pd.read_csv(solution, dtype=str).set_index("image_id").loc[t["image_id"]]
    cl = [c for c in t.columns if c != "image_id"]
    return f1_score(sol["label"], np.asarray(cl)[t[cl].to_numpy().argmax(1)], average="macro")


def leaky(work: Path, rl: pd.DataFrame, recipe: list[str], solution: Path) -> tuple[float, float]:
    """A copy of the competition whose train.csv holds relabel.csv's suggestions; CV against the noisy labels."""
    lw = work / "leaky"
    shutil.copytree(work / "data", lw / "data")
    shutil.copytree(work / "folds", lw / "folds")
    shutil.copy(work / "comp.yaml", lw / "comp.yaml")
    cfg_text = (lw / "comp.yaml").read_text().replace(str(work / "data"), str(lw / "data"))
    (lw / "comp.yaml").write_text(cfg_text)
    train = pd.read_csv(work / "data" / "train.csv", dtype=str)
    given = train.set_index("image_id")["label"]
    train["label"] = train["image_id"].map(rl.set_index("id")["suggested"]).fillna(train["label"])
    train.to_csv(lw / "data" / "train.csv", index=False)
    folds = pd.read_csv(work / "folds" / "folds.csv", dtype=str)
    folds["label"] = train.set_index("image_id")["label"].loc[folds["image_id"]].to_numpy()
    folds.to_csv(lw / "folds" / "folds.csv", index=False)
    here = os.getcwd()
    os.chdir(lw)
    try:
        train_folds(load_config(lw / "comp.yaml", exp="leaky", overrides=recipe), echo=lambda s: None)
        oof = pd.read_csv(lw / "runs" / "leaky" / "oof.csv", dtype={"image_id": str})
        cl = sorted(given.unique())
        cv = f1_score(given.loc[oof["image_id"]], np.asarray(cl)[oof[cl].to_numpy().argmax(1)], average="macro")
        return cv, holdout(lw, "leaky", recipe, solution)
    finally:
        os.chdir(here)


def main() -> None:
    n, noise, epochs, size = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    lr = sys.argv[5] if len(sys.argv) > 5 else "0.01"
    work = Path(sys.argv[6] if len(sys.argv) > 6 else "/tmp/relabel_leak").resolve()
    seed = int(sys.argv[7]) if len(sys.argv) > 7 else 0
    shutil.rmtree(work, ignore_errors=True)
    src = work.parent / f"{work.name}_src"
    if not src.exists():
        make_sample(src, n_train=max(600, n), n_test=500, imbalance=1.0, seed=0)
    build(work, src, n, noise, seed)
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
    c2, h2 = leaky(work, rl, recipe, src / "solution.csv")
    c0, c1 = cv0["cv_macro_f1"], cv1["cv_macro_f1"]
    print(f"N={n} noise={noise} epochs={epochs} size={size} seed={seed}: {len(rl)} suspects accepted; "
          f"{time.time() - t0:.0f} s")
    print(f"{'run':<8} {'CV':>7} {'hold-out':>9} {'CV rise':>8} {'hold-out rise':>14} {'leak':>7}")
    print(f"{'noisy':<8} {c0:>7.4f} {h0:>9.4f}")
    for name, c, h in (("leaky", c2, h2), ("comp", c1, h1)):
        print(f"{name:<8} {c:>7.4f} {h:>9.4f} {c - c0:>+8.4f} {h - h0:>+14.4f} {c - c0 - (h - h0):>+7.4f}")


if __name__ == "__main__":
    main()
