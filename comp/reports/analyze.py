"""``comp analyze --exp E``: error analysis of an experiment's out-of-fold predictions, as one HTML page.

Reads ``runs/E/oof.csv`` (or the finished folds' ``fold_k/oof.csv`` while the run is incomplete), the fold
models ``runs/E/fold_k/model.safetensors`` (+ ``model.json``) and ``fold_k/metrics.csv``; writes to ``out``:

- per-class precision / recall / F1 (``per_class.csv``), macro F1 and accuracy;
- ``confusion_matrix.png`` (counts and row-normalised) and the most confused class pairs;
- a gallery of the most confidently wrong OOF images (true, predicted, probability);
- Grad-CAM overlays (``cam_<class>_correct_<k>.png`` / ``cam_<class>_wrong_<k>.png``) for correct and wrong
  images of each class, each made with the model of the fold that scored the image;
- ``training_curves.png``: loss, validation macro F1 and learning rate per epoch for every fold.

Figures are PNG files beside ``index.html``; thumbnails under ``thumbs/``; file names never hold a class name
raw (:func:`comp.report.safe_name`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from comp import runs
from comp.config import Config
from comp.data.competition import DataError, load_train
from comp.files import recipe_path, write_csv, write_text
from comp.reports.analyze_multilabel import run_analyze_multilabel
from comp.reports.oof_run import curves_section, fold_models, make_cams, oof_arrays, read_run_oof
from comp.reports.page import (
    Img,
    Report,
    pyplot,
    report_dir,
    safe_name,
    save_figure,
    thumb_src,
)

GALLERY = 24  # most confidently wrong images shown
TOP_PAIRS = 20  # most confused class pairs listed
CAM_PER_CLASS = 2  # correct and wrong images per class with Grad-CAM
MAX_CAM_CLASSES = 20  # with more classes, the lowest-F1 ones get Grad-CAM


# ---------------------------------------------------------------- reading the run


# ---------------------------------------------------------------- figures


def confusion_figure(cm: np.ndarray, classes: list[str], path: Path) -> Path:
    plt = pyplot()
    k = len(classes)
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    side = max(4.5, min(0.45 * k + 2, 16))
    fig, axes = plt.subplots(1, 2, figsize=(2 * side + 1, side))
    labels = [str(c)[:18] for c in classes]
    panels = ((axes[0], cm, "counts", "d"), (axes[1], norm, "row-normalised (recall on diagonal)", ".2f"))
    for ax, m, title, fmt in panels:
        im = ax.imshow(m, cmap="Blues", vmin=0)
        ax.set_title(title)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_xticks(range(k), labels, rotation=90, fontsize=7 if k > 12 else 9)
        ax.set_yticks(range(k), labels, fontsize=7 if k > 12 else 9)
        if k <= 20:
            hi = m.max() / 2 if m.max() else 1
            for i in range(k):
                for j in range(k):
                    v = m[i, j]
                    ax.text(j, i, format(v, fmt) if fmt != "d" else str(int(v)), ha="center", va="center",
                            fontsize=7, color="white" if v > hi else "black")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    return save_figure(fig, path)


# ---------------------------------------------------------------- Grad-CAM


def confident_wrong(y: np.ndarray, probs: np.ndarray, n: int) -> np.ndarray:
    """Row positions of the ``n`` wrong predictions with the highest probability on the predicted class."""
    pred, conf = probs.argmax(1), probs.max(1)
    wrong = np.flatnonzero(pred != y)
    return wrong[np.argsort(-conf[wrong], kind="stable")][:n]


def cam_picks(y: np.ndarray, probs: np.ndarray, cls: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Row positions of the ``n`` most confident correct and the ``n`` most confidently wrong images of ``cls``."""
    pred = probs.argmax(1)
    right = np.flatnonzero((y == cls) & (pred == cls))
    right = right[np.argsort(-probs[right, cls], kind="stable")][:n]
    wrong = np.flatnonzero((y == cls) & (pred != cls))
    wrong = wrong[np.argsort(-probs[wrong].max(1), kind="stable")][:n]
    return right, wrong


# ---------------------------------------------------------------- the report


@dataclass
class _Oof:
    """One run's out-of-fold predictions as arrays, row by row: true class, probabilities, prediction, image."""

    oof: pd.DataFrame
    ids: pd.Series  # the id column
    classes: list[str]
    y: np.ndarray  # true class index
    probs: np.ndarray  # (N, K)
    pred: np.ndarray
    conf: np.ndarray  # probability of the predicted class
    paths: pd.Series  # image file of each row (NaN when train.csv no longer has the id)

    @property
    def k(self) -> int:
        return len(self.classes)


def run_analyze(
    cfg: Config,
    exp: str,
    out: str | Path | None = None,
    echo: Callable[[str], None] = print,
    cam_per_class: int = CAM_PER_CLASS,
    runs_dir: str | Path = runs.RUNS_DIR,
) -> Path:
    """Write the error analysis of experiment ``exp`` to ``out/index.html`` (default reports/<exp>)."""
    t0 = time.time()
    run = Path(runs_dir) / exp
    if not run.is_dir():
        raise DataError(f"{run} not found: train the experiment first: comp train --exp {exp} --all-folds")
    out = Path(out or Path("reports") / exp)
    if cfg.data.task == "multilabel":
        return run_analyze_multilabel(cfg, exp, out, run, echo)
    oof, oof_note = read_run_oof(cfg, run)
    models = fold_models(run)
    meta0 = next(iter(models.values())).meta if models else {}
    o = _read_oof(cfg, oof, meta0.get("classes"))
    folds_seen = sorted(oof["fold"].astype(int).unique().tolist())
    echo(f"analyze: {exp}: {len(oof):,} OOF rows, {o.k} classes, folds {folds_seen} -> {out}")

    # comp relabel writes beside the analysis (reports/E/relabel.csv with a person's marks): keep it.
    with report_dir(out, keep=("relabel.csv", recipe_path("relabel.csv").name, "relabel.json", "relabel")) as tmp:
        rep = Report(f"comp analyze — {exp}", f"{run} — {len(oof):,} out-of-fold predictions, {o.k} classes")
        ov = rep.section("Overview", "overview")
        f, macro, acc = _per_class_section(rep, tmp, o)
        _confusion_sections(rep, tmp, o)
        _confident_wrong_section(rep, tmp / "thumbs", o)
        done = _gradcam_section(cfg, rep, tmp, o, models, f, cam_per_class, echo)
        curves_section(cfg, rep, tmp, run)

        ov.table([
            {"what": "experiment", "value": exp},
            {"what": "model", "value": f"{meta0.get('model_name', '?')} at {meta0.get('input_size', '?')} px"},
            {"what": "OOF rows", "value": f"{len(oof):,} in folds {folds_seen}"},
            {"what": "OOF macro F1", "value": f"{macro:.4f}"},
            {"what": "OOF accuracy", "value": f"{acc:.4f}"},
            {"what": "worst class (F1)", "value": f"{o.classes[int(np.argmin(f))]} ({f.min():.3f})"},
            {"what": "wrong predictions", "value": f"{int((o.pred != o.y).sum()):,}"},
            {"what": "Grad-CAM overlays", "value": f"{len(done)}"},
        ])
        if oof_note:
            ov.note(oof_note)
        summary = {"exp": exp, "oof_rows": len(oof), "folds": folds_seen, "macro_f1": macro, "accuracy": acc,
                   "classes": o.classes, "cams": sorted(done.values()), "seconds": round(time.time() - t0, 2)}
        write_text(tmp / "summary.json", json.dumps(summary, indent=2, ensure_ascii=False))
        rep.write(tmp)
    echo(f"analyze: OOF macro F1 {macro:.4f}, accuracy {acc:.4f}, {len(done)} Grad-CAM overlays "
         f"({time.time() - t0:.1f} s)")
    echo(f"wrote {out / 'index.html'}")
    return out / "index.html"


def _read_oof(cfg: Config, oof: pd.DataFrame, classes: list[str] | None) -> _Oof:
    """The OOF table as arrays (see :func:`oof_arrays`), with each row's image path from train.csv."""
    classes, y, probs = oof_arrays(cfg, oof, classes)
    train = load_train(cfg)
    paths = dict(zip(train["id"], train["path"]))
    ids = oof[cfg.data.id_col]
    return _Oof(oof, ids, classes, y, probs, probs.argmax(1), probs.max(1), ids.map(paths))


def _per_class_section(rep: Report, tmp: Path, o: _Oof) -> tuple[np.ndarray, float, float]:
    """Precision, recall and F1 per class (per_class.csv): (F1 per class, macro F1, accuracy)."""
    from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

    y, pred, k = o.y, o.pred, o.k
    p, r, f, s = precision_recall_fscore_support(y, pred, labels=range(k), zero_division=0)
    per = pd.DataFrame({"class": o.classes, "precision": p, "recall": r, "f1": f, "support": s.astype(int),
                        "predicted": np.bincount(pred, minlength=k)})
    write_csv(tmp / "per_class.csv", per)
    macro = float(f1_score(y, pred, average="macro", zero_division=0))  # as comp score: classes present
    acc = float(accuracy_score(y, pred))
    sec = rep.section("Per-class precision, recall and F1", "per-class")
    sec.p(f"macro F1 {macro:.4f} (the mean of the f1 column; every class counts the same), accuracy {acc:.4f}. "
          "Sorted by F1, worst first.")
    sec.table(per.sort_values(["f1", "class"], kind="stable"))
    sec.link("per_class.csv", "per_class.csv")
    return f, macro, acc


def _confusion_sections(rep: Report, tmp: Path, o: _Oof) -> None:
    """The confusion matrix (figure and csv) and the most confused class pairs."""
    from sklearn.metrics import confusion_matrix

    y, pred, classes, k = o.y, o.pred, o.classes, o.k
    cm = confusion_matrix(y, pred, labels=range(k))
    confusion_figure(cm, classes, tmp / "confusion_matrix.png")
    write_csv(tmp / "confusion_matrix.csv", pd.DataFrame(cm, index=classes, columns=classes)
              .rename_axis("true \\ predicted").reset_index())
    sec = rep.section("Confusion matrix", "confusion")
    sec.image("confusion_matrix.png", "confusion matrix", "left: counts; right: each row divided by its "
              "class's support (the diagonal is recall)")
    sec.link("confusion_matrix.csv", "counts as csv: confusion_matrix.csv")
    sec = rep.section("Most confused class pairs", "confused-pairs")
    off = [(cm[i, j], i, j) for i in range(k) for j in range(k) if i != j and cm[i, j] > 0]
    off.sort(key=lambda t: (-t[0], t[1], t[2]))
    if off:
        rows = []
        for n, i, j in off[:TOP_PAIRS]:
            m = (y == i) & (pred == j)
            rows.append({"true": classes[i], "predicted as": classes[j], "images": int(n),
                         "share of true class": n / max(1, cm[i].sum()),
                         "mean confidence": float(o.conf[m].mean()),
                         "reverse (predicted as true)": int(cm[j, i])})
        sec.table(rows)
    else:
        sec.note("no mistakes in the OOF", "ok")


def _confident_wrong_section(rep: Report, thumbs: Path, o: _Oof) -> None:
    """A gallery of the wrong predictions with the highest probability on the predicted class."""
    sec = rep.section("Most confidently wrong", "confident-wrong")
    items = []
    for i in confident_wrong(o.y, o.probs, GALLERY):
        src = thumb_src(o.paths.iloc[i], i, thumbs)
        items.append(Img(src, f"wrong {o.ids.iloc[i]}",
                         f"{o.ids.iloc[i]} (fold {int(o.oof['fold'].iloc[i])})\ntrue: {o.classes[o.y[i]]} "
                         f"(p={o.probs[i, o.y[i]]:.2f})\npredicted: {o.classes[o.pred[i]]} (p={o.conf[i]:.2f})"))
    if items:
        sec.p(f"The {len(items)} wrong predictions with the highest probability on the predicted class: often "
              "label noise, sometimes a real gap between classes.")
        sec.gallery(items)
    else:
        sec.note("no mistakes in the OOF", "ok")


def _gradcam_section(cfg: Config, rep: Report, tmp: Path, o: _Oof, models: dict, f: np.ndarray,
                     cam_per_class: int, echo: Callable) -> dict:
    """Grad-CAM overlays of correct and wrong images per class (the lowest-F1 classes when there are many).

    Returns {row position: overlay file written}.
    """
    sec = rep.section("Grad-CAM: where the model looks", "gradcam")
    cam_classes = list(range(o.k))
    if o.k > MAX_CAM_CLASSES:
        cam_classes = sorted(np.argsort(f, kind="stable")[:MAX_CAM_CLASSES].tolist())
        sec.note(f"{o.k} classes: showing the {MAX_CAM_CLASSES} with the lowest F1")
    picks_df = _cam_rows(o, cam_classes, cam_per_class)
    done, notes = make_cams(cfg, models, picks_df, tmp, echo) if len(picks_df) else ({}, [])
    for note in notes:
        sec.note(note)
    if done:
        sec.p("Each pair is the model input and its Grad-CAM for the predicted class, from the model of the "
              "fold that held the image out. 'wrong' images belong to the class but were predicted as another.")
    for c in cam_classes:
        for kind in ("correct", "wrong"):
            sel = picks_df[(picks_df["cls"] == c) & (picks_df["kind"] == kind) & picks_df["pos"].isin(done)]
            if sel.empty:
                continue
            sec.gallery([Img(done[i], f"Grad-CAM {kind} {o.ids.iloc[i]}",
                             f"{o.ids.iloc[i]}\npredicted {o.classes[o.pred[i]]} p={o.conf[i]:.2f}")
                         for i in sel["pos"]], label=f"{o.classes[c]} — {kind}", wide=True)
    return done


def _cam_rows(o: _Oof, cam_classes: list[int], cam_per_class: int) -> pd.DataFrame:
    """The images to explain (columns pos, fold, path, target, cls, kind, file): those with a file on disk."""
    picks = []
    for c in cam_classes:
        right, wrong_c = cam_picks(o.y, o.probs, c, cam_per_class)
        for kind, rows_ in (("correct", right), ("wrong", wrong_c)):
            for n, i in enumerate(rows_):
                if isinstance(o.paths.iloc[i], str):
                    picks.append({"pos": int(i), "fold": int(o.oof["fold"].iloc[i]), "path": o.paths.iloc[i],
                                  "target": int(o.pred[i]), "cls": c, "kind": kind,
                                  "file": f"cam_{safe_name(o.classes[c], c)}_{kind}_{n}.png"})
    return pd.DataFrame(picks, columns=["pos", "fold", "path", "target", "cls", "kind", "file"])
