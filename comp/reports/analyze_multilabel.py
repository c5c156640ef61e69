"""``comp analyze --exp E`` for a multi-label run (data.task multilabel): one HTML page from ``runs/E/oof.csv``.

- per-class precision / recall / F1 at 0.5, ROC AUC and average precision (``per_class.csv``), and the
  macro / micro / samples F1, mAP and mean column-wise AUC of the whole OOF;
- the most confidently missed labels (true labels with the lowest probability) and the most confidently false
  labels (absent labels with the highest), each image with the Grad-CAM of that label, from the model of the fold
  that held the image out (``cam_missed_<k>.png``, ``cam_false_<k>.png``);
- the training curves of every fold.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from comp.config import Config
from comp.data.competition import load_train
from comp.files import recipe_path, write_csv, write_text
from comp.reports.oof_run import curves_section, fold_models, make_cams, oof_arrays, read_run_oof
from comp.reports.page import Img, Report, report_dir, thumb_src

THRESHOLD = 0.5  # a label is predicted at this sigmoid probability (comp ensemble tunes per-class thresholds)
GALLERY = 12  # most confidently missed / false labels shown, each with its Grad-CAM


def per_class_table(classes: list[str], y: np.ndarray, probs: np.ndarray, threshold: float = THRESHOLD
                    ) -> pd.DataFrame:
    """class, precision, recall, f1 (at ``threshold``), roc_auc, average_precision, support, predicted."""
    from sklearn.metrics import average_precision_score, precision_recall_fscore_support, roc_auc_score

    bits = (probs >= threshold).astype(int)
    p, r, f, s = precision_recall_fscore_support(y, bits, average=None, labels=range(len(classes)), zero_division=0)
    both = [0 < y[:, c].sum() < len(y) for c in range(len(classes))]  # AUC needs positives and negatives
    auc = [roc_auc_score(y[:, c], probs[:, c]) if ok else np.nan for c, ok in enumerate(both)]
    ap = [average_precision_score(y[:, c], probs[:, c]) if ok else np.nan for c, ok in enumerate(both)]
    return pd.DataFrame({"class": classes, "precision": p, "recall": r, "f1": f, "roc_auc": auc,
                         "average_precision": ap, "support": s.astype(int), "predicted": bits.sum(0)})


def overall(y: np.ndarray, probs: np.ndarray, threshold: float = THRESHOLD) -> dict[str, float]:
    """macro / micro / samples F1 at ``threshold``, exact-match rate, mAP and mean column-wise ROC AUC."""
    from sklearn.metrics import f1_score

    per = per_class_table([str(i) for i in range(y.shape[1])], y, probs, threshold)
    bits = (probs >= threshold).astype(int)
    out = {a: float(f1_score(y, bits, average=a, zero_division=0)) for a in ("macro", "micro", "samples")}
    return {"macro_f1": out["macro"], "micro_f1": out["micro"], "samples_f1": out["samples"],
            "exact_match": float((bits == y).all(1).mean()), "map": float(np.nanmean(per["average_precision"])),
            "roc_auc": float(np.nanmean(per["roc_auc"]))}


def confident_label_errors(y: np.ndarray, probs: np.ndarray, n: int, threshold: float = THRESHOLD
                           ) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """(row, class) of the ``n`` most confidently missed labels (true, lowest probability, under ``threshold``)
    and of the ``n`` most confidently false ones (absent, highest probability, at or over it)."""
    r, c = np.nonzero((y == 1) & (probs < threshold))
    miss = np.lexsort((c, r, probs[r, c]))[:n]
    fr, fc = np.nonzero((y == 0) & (probs >= threshold))
    false = np.lexsort((fc, fr, -probs[fr, fc]))[:n]
    return [(int(r[i]), int(c[i])) for i in miss], [(int(fr[i]), int(fc[i])) for i in false]


def run_analyze_multilabel(cfg: Config, exp: str, out: Path, run: Path, echo: Callable[[str], None]) -> Path:
    """Write the multi-label error analysis of ``run`` to ``out/index.html``."""
    t0 = time.time()
    oof, oof_note = read_run_oof(cfg, run)
    models = fold_models(run)
    meta0 = next(iter(models.values())).meta if models else {}
    classes, y, probs = oof_arrays(cfg, oof, meta0.get("classes"))
    folds_seen = sorted(oof["fold"].astype(int).unique().tolist())
    echo(f"analyze: {exp}: {len(oof):,} OOF rows, {len(classes)} labels (multi-label), folds {folds_seen} -> {out}")
    with report_dir(out, keep=("relabel.csv", recipe_path("relabel.csv").name, "relabel.json", "relabel")) as tmp:
        rep = Report(f"comp analyze — {exp}", f"{run} — {len(oof):,} out-of-fold predictions, {len(classes)} labels "
                     "per image (multi-label)")
        ov = rep.section("Overview", "overview")
        per = per_class_table(classes, y, probs)
        write_csv(tmp / "per_class.csv", per)
        figs = overall(y, probs)
        sec = rep.section("Per-label precision, recall, F1 and AUC", "per-class")
        sec.p(f"Each label is predicted when its sigmoid probability is at least {THRESHOLD} (comp ensemble tunes "
              "per-class thresholds, cross-validated, on top of this). ROC AUC and average precision need no "
              "threshold. Sorted by F1, worst first.")
        sec.table(per.sort_values(["f1", "class"], kind="stable"))
        sec.link("per_class.csv", "per_class.csv")
        cams = _label_errors_section(cfg, rep, tmp, oof, classes, y, probs, models, echo)
        curves_section(cfg, rep, tmp, run)
        ov.table([{"what": "experiment", "value": exp},
                  {"what": "model", "value": f"{meta0.get('model_name', '?')} at {meta0.get('input_size', '?')} px"},
                  {"what": "OOF rows", "value": f"{len(oof):,} in folds {folds_seen}"},
                  {"what": "labels per image (true / predicted)",
                   "value": f"{y.sum(1).mean():.2f} / {(probs >= THRESHOLD).sum(1).mean():.2f}"},
                  *({"what": k, "value": f"{v:.4f}"} for k, v in figs.items()),
                  {"what": "worst label (F1)", "value": f"{per['class'][per['f1'].idxmin()]} ({per['f1'].min():.3f})"},
                  {"what": "Grad-CAM overlays", "value": f"{len(cams)}"}])
        if oof_note:
            ov.note(oof_note)
        summary = {"exp": exp, "task": "multilabel", "oof_rows": len(oof), "folds": folds_seen, **figs,
                   "threshold": THRESHOLD, "classes": classes, "cams": sorted(cams),
                   "seconds": round(time.time() - t0, 2)}
        write_text(tmp / "summary.json", json.dumps(summary, indent=2, ensure_ascii=False))
        rep.write(tmp)
    echo(f"analyze: OOF macro F1 {figs['macro_f1']:.4f} at {THRESHOLD}, mAP {figs['map']:.4f}, AUC "
         f"{figs['roc_auc']:.4f}, {len(cams)} Grad-CAM overlays ({time.time() - t0:.1f} s)")
    echo(f"wrote {out / 'index.html'}")
    return out / "index.html"


def _label_errors_section(cfg: Config, rep: Report, tmp: Path, oof: pd.DataFrame, classes: list[str],
                          y: np.ndarray, probs: np.ndarray, models: dict, echo: Callable) -> list[str]:
    """The most confidently missed and false labels, each with the Grad-CAM of that label; the files made."""
    train = load_train(cfg)
    paths = oof[cfg.data.id_col].map(dict(zip(train["id"], train["path"])))
    missed, false = confident_label_errors(y, probs, GALLERY)
    rows = [{"row": i, "fold": int(oof["fold"].iloc[i]), "path": paths.iloc[i], "target": c, "kind": kind,
             "file": f"cam_{kind}_{n}.png"}
            for kind, pairs in (("missed", missed), ("false", false)) for n, (i, c) in enumerate(pairs)
            if isinstance(paths.iloc[i], str)]
    picks = pd.DataFrame(rows, columns=["row", "fold", "path", "target", "kind", "file"])
    picks["pos"] = range(len(picks))  # make_cams keys its files by pos: one per (image, label) pair
    done, notes = make_cams(cfg, models, picks, tmp, echo) if len(picks) else ({}, [])
    ids, truth = oof[cfg.data.id_col], oof[cfg.data.label_col]
    kinds = (("missed", "Most confidently missed labels", "confident-missed", "true labels, lowest probability"),
             ("false", "Most confidently false labels", "confident-false", "absent labels, highest probability"))
    for kind, title, sid, what in kinds:
        sec = rep.section(title, sid)
        sel = picks[picks["kind"] == kind]
        if sel.empty:
            sec.note(f"no {kind} labels in the OOF at {THRESHOLD}", "ok")
            continue
        sec.p(f"The {len(sel)} {what}; each pair is the model input and the Grad-CAM of that label from the model "
              "of the fold that held the image out.")
        for note in notes:
            sec.note(note)
        items = []
        for p, i, c, fold in zip(sel["pos"], sel["row"], sel["target"], sel["fold"]):
            cap = (f"{ids.iloc[i]} (fold {fold})\n{kind}: {classes[c]} p={probs[i, c]:.2f}\n"
                   f"true: {truth.iloc[i] or '(none)'}")
            src = done.get(p) or thumb_src(paths.iloc[i], int(i), tmp / "thumbs")
            items.append(Img(src, f"Grad-CAM {kind} {classes[c]} {ids.iloc[i]}", cap))
        sec.gallery(items, wide=all(p in done for p in sel["pos"]))
    return list(done.values())
