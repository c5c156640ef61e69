"""The one prepared GPU check (benchmarks/gpu.sh): one table, at most 8 minutes on one GPU, no network.

    bash benchmarks/gpu.sh              # on a machine with a GPU
    bash benchmarks/gpu.sh --dry-run    # CPU, tiny sizes, end to end in well under 2 minutes (CI runs it)

Rows:
  train           training images/s end to end / compute-only, resnet50 at 224 px, bf16, channels_last, the
                  device-batch augmentation (benchmarks/train_throughput.py, fold 0 of a Fashion-MNIST sample)
  train+compile   the same with train.compile
  predict TTA     comp predict with identity+hflip / the same forward passes on device tensors
  fine-tune       `comp train --fold 0` of tf_efficientnet_lite0 with its real ImageNet weights
                  (scripts/lite0_weights.py into a private hub cache, HF_HUB_OFFLINE=1) at 224 px on a
                  `comp sample --kind photo` competition: training images/s end to end, fold 0's macro F1 and its
                  hold-out macro F1, wall time
  comp auto       `comp auto --budget 4m` on a Fashion-MNIST sample: honest CV and hold-out macro F1, wall time
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

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

FULL = dict(model="resnet50", size=224, batch=128, precision="bf16", n_train=5120, epochs=3, compile="off,on",
            predict_n=2000, auto_budget="4m", auto_n=5000, auto_models=None, ft_n=3000, ft_size=224, ft_epochs=3)
DRY = dict(model="test_resnet", size=32, batch=32, precision="auto", n_train=200, epochs=2, compile="off",
           predict_n=100, auto_budget="40s", auto_n=300, auto_models="test_resnet", ft_n=60, ft_size=64, ft_epochs=1)


def _env() -> dict:
    return dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
                NO_ALBUMENTATIONS_UPDATE="1")


def train_rows(p: dict, work: Path) -> list[tuple]:
    """train_throughput.py's light:device run, compile off (and on): e2e and compute-only images/s."""
    cmd = [sys.executable, str(HERE / "train_throughput.py"), "--runs", "light:device", "--model", p["model"],
           "--size", str(p["size"]), "--batch-size", str(p["batch"]), "--precision", p["precision"],
           "--n-train", str(p["n_train"]), "--epochs", str(p["epochs"]), "--compile", p["compile"],
           "--workdir", str(work / "train"), "--channels-last"]
    out = subprocess.run(cmd, capture_output=True, text=True, env=_env())
    rows = []
    for line in out.stdout.splitlines():
        f = line.split()
        if len(f) >= 5 and f[0] == "light:device" and f[1] in ("off", "on"):
            e2e, comp = float(f[2]), float(f[3])
            rows.append(("train" + ("+compile" if f[1] == "on" else ""), f"{e2e:.0f}", f"{comp:.0f}",
                         f"{e2e / comp:.2f}", f"{p['model']} {p['size']}px {p['precision']} channels_last"))
    if not rows:
        rows.append(("train", "failed", "", "", (out.stdout + out.stderr)[-300:].replace("\n", " ")))
    if "on" not in p["compile"]:
        rows.append(("train+compile", "-", "-", "-", "skipped in --dry-run (inductor on CPU takes minutes)"))
    return rows


def predict_row(p: dict, work: Path) -> tuple:
    """comp predict (identity+hflip) images/s over the same model's forward passes on device tensors."""
    import numpy as np
    import torch

    from comp.config import load_config
    from comp.data.cache import load_images
    from comp.data.competition import class_names, load_test, load_train
    from comp.data.sample import make_sample
    from comp.infer.models import find_fold_models, load_model
    from comp.infer.predict import predict
    from comp.train.model import create_model, normalization, save_checkpoint

    d = work / "predict"
    make_sample(d / "data", n_train=100, n_test=p["predict_n"], seed=0)
    (d / "comp.yaml").write_text(f"data: {{root: data, id_has_ext: false, ext: .png}}\nmodel: {{name: {p['model']}}}\n"
                                 f"input: {{size: {p['size']}}}\ninfer: {{batch_size: {p['batch']}}}\n")
    here = os.getcwd()
    os.chdir(d)
    try:
        cfg = load_config("comp.yaml", exp="bench")
        classes = class_names(load_train(cfg)["label"])
        model = create_model(cfg, len(classes)).eval()
        mean, std = normalization(cfg, model)
        save_checkpoint("runs/bench/fold_0/model.safetensors", model,
                        {"classes": classes, "input_size": p["size"], "resize": "stretch", "mean": mean, "std": std,
                         "model_name": p["model"], "fold": 0, "exp": "bench"})
        dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        model = load_model(cfg, find_fold_models(Path("runs/bench"))[0], dev)
        images = load_images(load_test(cfg)["path"].tolist(), p["size"], progress=False)
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255).to(dev)
        quiet = {"echo": lambda s: None, "progress": False}
        predict(cfg, tta=["identity", "hflip"], overwrite=True, **quiet)  # warm-up, decode cache
        e2e = predict(cfg, tta=["identity", "hflip"], overwrite=True, **quiet).attrs["timing"].images_per_s

        def compute() -> float:
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            with torch.inference_mode(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
                for b in x.split(p["batch"]):
                    for v in (b, b.flip(3)):
                        model(v).float().softmax(1)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            return 2 * len(x) / (time.perf_counter() - t)

        compute()
        c = float(np.median([compute() for _ in range(3)]))
    finally:
        os.chdir(here)
    return ("predict TTA", f"{e2e:.0f}", f"{c:.0f}", f"{e2e / c:.2f}", f"identity+hflip, {len(x)} images, "
            f"{p['model']} {p['size']}px")


def finetune_row(p: dict, work: Path) -> tuple:
    """comp train --fold 0 of pretrained tf_efficientnet_lite0 (real ImageNet weights, offline) on photos."""
    d = work / "finetune"
    env = dict(_env(), HF_HOME=str(work / "hf"), HF_HUB_OFFLINE="1")
    py = [sys.executable, "-m", "comp"]
    d.mkdir(parents=True, exist_ok=True)
    got = subprocess.run([sys.executable, str(ROOT / "scripts" / "lite0_weights.py")], env=env, capture_output=True,
                         text=True)
    if got.returncode:
        return ("fine-tune", "failed", "", "", (got.stdout + got.stderr)[-300:].replace("\n", " "))
    for args in (["sample", "data", "--kind", "photo", "--n-train", str(p["ft_n"]), "--n-test", str(p["ft_n"] // 3)],
                 ["init", "data"], ["folds", "--n-splits", "3"]):
        subprocess.run([*py, *args], cwd=d, env=env, check=True, capture_output=True)
    sets = ["model.name=tf_efficientnet_lite0", f"input.size={p['ft_size']}", f"train.epochs={p['ft_epochs']}",
            "infer.tta=[identity,hflip]"]
    t = time.perf_counter()
    out = subprocess.run([*py, "train", "--exp", "ft", "--fold", "0", *(a for s in sets for a in ("--set", s))],
                         cwd=d, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t
    (work / "finetune.log").write_text(out.stdout + out.stderr)
    if out.returncode or "pretrained: from the local hub cache" not in out.stdout:
        return ("fine-tune", "failed", "", "", (out.stdout + out.stderr)[-300:].replace("\n", " "))
    import pandas as pd

    m = pd.read_csv(d / "runs" / "ft" / "fold_0" / "metrics.csv")
    subprocess.run([*py, "predict", "--exp", "ft", "--fold", "0"], cwd=d, env=env, capture_output=True)
    hold = _holdout(d, d / "runs" / "ft" / "test_fold0.csv")
    return ("fine-tune", f"{m['images_per_s'].iloc[-1]:.0f} img/s", f"F1 {m['val_macro_f1'].max():.3f}",
            f"{wall:.0f}s", f"tf_efficientnet_lite0 {p['ft_size']}px pretrained, {p['ft_epochs']} epochs, fold 0 of "
            f"{p['ft_n']} photos; hold-out F1 {hold}")


def _holdout(d: Path, test_csv: Path) -> str:
    import pandas as pd
    from sklearn.metrics import f1_score

    if not test_csv.exists():
        return "-"
    probs = pd.read_csv(test_csv, dtype={"image_id": str}).set_index("image_id")
    sol = pd.read_csv(d / "data" / "solution.csv", dtype=str).set_index("image_id")
    return f"{f1_score(sol['label'], probs.loc[sol.index].idxmax(axis=1), average='macro'):.3f}"


def auto_row(p: dict, work: Path) -> tuple:
    """comp auto --budget on a Fashion-MNIST sample (10x imbalance): honest CV, hold-out macro F1, wall time."""
    d = work / "auto"
    env = _env()
    py = [sys.executable, "-m", "comp"]
    d.mkdir(parents=True, exist_ok=True)
    subprocess.run([*py, "sample", "data", "--n-train", str(p["auto_n"]), "--n-test", str(p["auto_n"] // 5),
                    "--imbalance", "10"], cwd=d, env=env, check=True, capture_output=True)
    subprocess.run([*py, "init", "data"], cwd=d, env=env, check=True, capture_output=True)
    cmd = [*py, "auto", "--budget", p["auto_budget"]] + (["--models", p["auto_models"]] if p["auto_models"] else [])
    t = time.perf_counter()
    out = subprocess.run(cmd, cwd=d, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t
    (work / "auto.log").write_text(out.stdout + out.stderr)
    if out.returncode:
        return ("comp auto", "failed", "", "", (out.stdout + out.stderr)[-300:].replace("\n", " "))
    cv = json.loads((d / "runs" / "auto" / "plan.json").read_text())["choices"]["cv"]
    score = subprocess.run([*py, "score", "submissions/auto.csv", "--solution", "data/solution.csv", "--json"],
                           cwd=d, env=env, capture_output=True, text=True)
    hold = json.loads(score.stdout.strip().splitlines()[-1]).get("macro_f1") if score.returncode == 0 else None
    return ("comp auto", f"CV {cv['honest_macro_f1']:.4f}", f"hold-out {hold:.4f}" if hold is not None else "-",
            f"{wall:.0f}s", f"--budget {p['auto_budget']}, {p['auto_n']} images, CV over folds {cv['honest_folds']}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes (CI)")
    ap.add_argument("--keep", help="keep the work folder here")
    args = ap.parse_args()
    p = DRY if args.dry_run else FULL
    import torch

    dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"
    if not args.dry_run and not torch.cuda.is_available():
        sys.exit("no GPU visible to torch: run `bash benchmarks/gpu.sh --dry-run` for the CPU check")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.keep or tmp).resolve()
        work.mkdir(parents=True, exist_ok=True)
        rows = train_rows(p, work) + [predict_row(p, work), finetune_row(p, work), auto_row(p, work)]
    print(f"\ncomp GPU check on {dev} (torch {torch.__version__}){' --dry-run' if args.dry_run else ''}, "
          f"{time.perf_counter() - t0:.0f}s")
    print(f"{'row':<14} {'end to end':>14} {'compute-only':>14} {'ratio':>6}  setting")
    for r in rows:
        print(f"{r[0]:<14} {r[1]:>14} {r[2]:>14} {r[3]:>6}  {r[4]}")
    if any(r[1] == "failed" for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
