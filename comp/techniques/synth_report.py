"""The quality of ``comp synth``'s images, measured -> ``reports/E/synth/index.html`` (+ quality.json).

Per fold and class:
    intended   the share of the images that the fold's own classifier (runs/E/fold_k) assigns to the class it was
               asked for (the fold-k classifier never trained on fold k, the generator neither: both saw the same
               rows)
    nn         the distance of each image to its nearest training image of the fold (RMS pixel difference in
               [0, 1] at the generator's size); beside it, the same for real validation images, the yardstick
    copies     images nearer than COPY_RMS to a training image: memorised, flagged
A grid PNG per class (a row per fold).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from comp.config import Config
from comp.data.cache import load_images
from comp.data.competition import DataError, read_csv_str
from comp.files import write_text
from comp.reports.page import Report, report_dir, safe_name
from comp.runs import run_dir
from comp.techniques.synth import synth_dir
from comp.train.rows import load_table

COPY_RMS = 0.02  # an image this close to a training image (2% RMS per pixel) is flagged as a copy
GRID_COLS = 8


def nn_distance(a: np.ndarray, b: np.ndarray, chunk: int = 256) -> np.ndarray:
    """For each image of ``a``, the RMS pixel distance in [0, 1] to its nearest image of ``b`` (uint8 NHWC)."""
    fa = a.reshape(len(a), -1).astype(np.float32) / 255
    fb = b.reshape(len(b), -1).astype(np.float32) / 255
    nb = (fb * fb).sum(1)
    out = np.empty(len(a), np.float32)
    for lo in range(0, len(a), chunk):
        x = fa[lo:lo + chunk]
        d = (x * x).sum(1)[:, None] + nb[None, :] - 2 * x @ fb.T
        out[lo:lo + chunk] = np.sqrt(np.maximum(d.min(1), 0) / fa.shape[1])
    return out


def intended_share(cfg: Config, k: int, paths: list[str], wanted: list[str], accelerator) -> np.ndarray | None:
    """Per image: did runs/E/fold_k's classifier predict its intended class? (None without that model.)"""
    from comp.infer.models import load_model, predict_images, saved_fold_models

    fm = next((m for m in saved_fold_models(run_dir(cfg.exp)) if m.fold == k), None)
    if fm is None or not len(paths):
        return None
    images = load_images(paths, fm.size, fm.resize, cache="memory", progress=False)
    model = load_model(cfg, fm, accelerator.device)
    probs = predict_images(model, images, np.arange(len(paths)), ["identity"], fm.meta["mean"], fm.meta["std"],
                           accelerator)
    return np.asarray(fm.meta["classes"], object)[probs.argmax(1)] == np.asarray(wanted, object)


def grid(images: list[np.ndarray], size: int) -> np.ndarray:
    """Rows of up to GRID_COLS images (one row per list item), 1-px gaps, upscaled x2 (nearest)."""
    h = max(1, len(images))
    canvas = np.full((h * (size + 1), GRID_COLS * (size + 1), 3), 255, np.uint8)
    for r, row in enumerate(images):
        for c, img in enumerate(row[:GRID_COLS]):
            canvas[r * (size + 1):r * (size + 1) + size, c * (size + 1):c * (size + 1) + size] = img
    return canvas.repeat(2, 0).repeat(2, 1)


def measure_fold(cfg: Config, table: pd.DataFrame, classes: list[str], k: int, fd: Path, size: int,
                 accelerator) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, float]:
    """(per-image frame, generated images, their class indices, the real validation images' median NN distance)."""
    df = read_csv_str(fd / "images.csv")
    paths = [str(fd / i) for i in df["id"]]
    y = df["class"].map({c: i for i, c in enumerate(classes)}).to_numpy()
    gen = load_images(paths, size, "stretch", cache="memory", progress=False) if paths else np.zeros(
        (0, size, size, 3), np.uint8)
    train = table[table["fold"] != k]
    real = load_images(train["path"].tolist(), size, cfg.input.resize, cfg.data.max_pixels, cache="memory",
                       progress=False)
    val = table[table["fold"] == k].sample(min(200, int((table["fold"] == k).sum())), random_state=0)
    val_imgs = load_images(val["path"].tolist(), size, cfg.input.resize, cfg.data.max_pixels, cache="memory",
                           progress=False)
    df["nn"] = nn_distance(gen, real) if len(gen) else []
    ok = intended_share(cfg, k, paths, df["class"].tolist(), accelerator)
    df["intended"] = ok if ok is not None else np.nan
    df["fold"] = k
    return df, gen, y, float(np.median(nn_distance(val_imgs, real)))


def synth_report(cfg: Config, out: str | Path | None = None, echo: Callable[[str], None] = print) -> Path:
    """Measure folds/synth/E's images and write reports/E/synth/index.html; returns the page's path."""
    from PIL import Image

    from comp.train.setup import make_accelerator

    folder = synth_dir(cfg, cfg.exp)
    if not (folder / "summary.json").exists():
        raise DataError(f"{folder}/summary.json not found; make the images first: comp synth --exp {cfg.exp}")
    table, classes = load_table(cfg, skip_bad=False, echo=lambda s: None)
    folds = sorted(int(p.name[5:]) for p in folder.glob("fold_*") if (p / "images.csv").exists())
    accelerator = make_accelerator(cfg)
    frames, gens, ys, yard = [], {}, {}, {}
    for k in folds:
        fd = folder / f"fold_{k}"
        size = json.loads((fd / "generator.json").read_text())["spec"]["size"] if (fd / "generator.json").exists() \
            else cfg.input.size
        df, gens[k], ys[k], yard[k] = measure_fold(cfg, table, classes, k, fd, size, accelerator)
        frames.append(df)
    allx = pd.concat(frames) if frames else pd.DataFrame(columns=["class", "fold", "nn", "intended"])
    per = allx.groupby("class").agg(images=("nn", "size"), intended=("intended", "mean"),
                                    nn_median=("nn", "median"), nn_min=("nn", "min"),
                                    copies=("nn", lambda s: int((s < COPY_RMS).sum()))).reset_index()
    total = {"images": len(allx), "intended": float(allx["intended"].mean()) if len(allx) else None,
             "copies": int((allx["nn"] < COPY_RMS).sum()), "nn_median": float(allx["nn"].median()) if len(allx)
             else None, "real_val_nn_median": {str(k): v for k, v in yard.items()}}
    out = Path(out or Path("reports") / cfg.exp / "synth")
    with report_dir(out) as tmp:
        rep = Report(f"comp synth — {cfg.exp}", f"{folder}: {len(allx)} images over folds {folds}")
        s = rep.section("Quality")
        no_clf = allx["intended"].isna().all() if len(allx) else True
        s.p(f"Intended class (the fold's own classifier, runs/{cfg.exp}/fold_k): "
            + ("– (no fold classifiers: comp train --exp " + cfg.exp + " --all-folds, then comp synth --resume)"
               if no_clf else f"{total['intended']:.1%}")
            + f". Copies (nearest training image closer than {COPY_RMS} RMS): {total['copies']}. Median nearest-"
              f"training-image distance: generated {total['nn_median'] or 0:.3f}, real validation images "
            + ", ".join(f"fold {k} {v:.3f}" for k, v in yard.items()) + ".")
        s.table(per.round(3))
        g = rep.section("Images per class (a row per fold)")
        for c, name in enumerate(classes):
            rows = [gens[k][ys[k] == c] for k in folds if (ys[k] == c).any()]
            if not rows:
                continue
            file = f"grid_{safe_name(name, c)}.png"
            Image.fromarray(grid(rows, rows[0].shape[1])).save(tmp / file)
            g.image(file, f"generated {name}", name)
        allx.to_csv(tmp / "images.csv", index=False)
        write_text(tmp / "quality.json", json.dumps({"total": total, "per_class": per.to_dict("records")},
                                                   indent=2, default=float, ensure_ascii=False))
        page = rep.write(tmp)
    echo(f"synth quality: {total['images']} images, intended class "
         + (f"{total['intended']:.1%}" if not no_clf else "– (no fold classifiers)")
         + f", {total['copies']} copies flagged -> {out / page.name}")
    return out / page.name
