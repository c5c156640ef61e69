"""``comp eda`` sections of a multi-label competition (data.task multilabel): images per label (and per fold),
the labels-per-image histogram and the label co-occurrence matrix, as PNGs in the page and csv beside it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from comp.files import write_csv
from comp.reports.page import Section, pyplot, save_figure
from comp.tasks.labels import multi_hot

MAX_COOC = 40  # labels shown in the co-occurrence figure (the commonest); the csv has them all


def labels_per_image_figure(n_labels: np.ndarray, path: Path) -> Path:
    plt = pyplot()
    counts = np.bincount(n_labels.astype(int))
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.bar(range(len(counts)), counts, color="#4c72b0")
    for k, v in enumerate(counts):
        if v:
            ax.text(k, v, str(int(v)), ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(counts)))
    ax.set_xlabel("labels on the image")
    ax.set_ylabel("images")
    ax.set_title("labels per image")
    return save_figure(fig, path)


def cooccurrence_figure(cooc: np.ndarray, classes: list[str], path: Path) -> Path:
    """Row-normalised co-occurrence: cell (i, j) = share of the images with label i that also have label j."""
    plt = pyplot()
    k = len(classes)
    share = cooc / np.maximum(np.diag(cooc)[:, None], 1)
    side = max(4.5, min(0.4 * k + 2, 16))
    fig, ax = plt.subplots(figsize=(side + 1, side))
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    labels = [str(c)[:18] for c in classes]
    ax.set_xticks(range(k), labels, rotation=90, fontsize=7 if k > 12 else 9)
    ax.set_yticks(range(k), labels, fontsize=7 if k > 12 else 9)
    ax.set_xlabel("also has")
    ax.set_ylabel("images with")
    ax.set_title("label co-occurrence (row: share of that label's images; diagonal = 1)")
    if k <= 15:
        for i in range(k):
            for j in range(k):
                ax.text(j, i, str(int(cooc[i, j])), ha="center", va="center", fontsize=7,
                        color="white" if share[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    return save_figure(fig, path)


def label_sections(rep, tmp: Path, t: pd.DataFrame, classes: list[str], sep: str, bar_counts,
                   fold_note: str) -> tuple[pd.Series, float, Section]:
    """The label sections of the page: (images per label, largest first; largest/smallest ratio; the section).

    ``t`` has columns label (the label strings) and fold (NaN without a folds file); ``bar_counts(counts, path,
    title)`` draws the bars as the multi-class page does."""
    y = multi_hot(t["label"].astype(str).tolist(), classes, sep, where="train.csv").astype(np.int64)
    counts = pd.Series(y.sum(0), index=classes)
    counts = counts.reindex(sorted(classes, key=lambda c: (-counts[c], classes.index(c))))
    sec = rep.section("Images per label", "class-counts")
    bar_counts(counts, tmp / "class_counts.png", "images per label")
    sec.image("class_counts.png", "images per label")
    sec.table(pd.DataFrame({"label": counts.index, "images": counts.to_numpy(),
                            "share of images": (counts / max(1, len(t))).round(4).to_numpy()}))
    ratio = float(counts.iloc[0] / max(1, counts.iloc[-1]))
    if ratio >= 3:
        sec.note(f"imbalanced: the commonest label is on {ratio:.1f}x the images of the rarest; consider "
                 "train.class_weights (a pos_weight per label), train.loss: asl, or train.sampler: balanced")
    if t["fold"].notna().any():
        ct = pd.DataFrame(y, columns=classes).groupby(t["fold"].astype("Int64").to_numpy()).sum().T
        sec.p("Images per label in each fold (iterative stratification keeps the columns alike):")
        sec.table(ct.reindex(counts.index).reset_index().rename(columns={"index": "label"}).rename(columns=str))
    if fold_note:
        sec.note(fold_note)

    n_labels = y.sum(1)
    per = rep.section("Labels per image", "labels-per-image")
    labels_per_image_figure(n_labels, tmp / "labels_per_image.png")
    per.image("labels_per_image.png", "labels per image histogram")
    hist = np.bincount(n_labels, minlength=1)
    write_csv(tmp / "labels_per_image.csv", pd.DataFrame({"labels": range(len(hist)), "images": hist}))
    per.p(f"mean {n_labels.mean():.2f} labels per image, at most {int(n_labels.max())}; "
          f"{int((n_labels == 0).sum()):,} images with no label.")
    per.link("labels_per_image.csv", "labels_per_image.csv")

    cooc = y.T @ y
    co = rep.section("Label co-occurrence", "cooccurrence")
    shown = [classes.index(c) for c in counts.index[:MAX_COOC]]
    cooccurrence_figure(cooc[np.ix_(shown, shown)], [classes[i] for i in shown], tmp / "cooccurrence.png")
    co.image("cooccurrence.png", "label co-occurrence matrix")
    write_csv(tmp / "cooccurrence.csv", pd.DataFrame(cooc, index=classes, columns=classes).rename_axis("label")
              .reset_index())
    pairs = [(int(cooc[i, j]), classes[i], classes[j]) for i in range(len(classes)) for j in range(i + 1, len(classes))
             if cooc[i, j]]
    pairs.sort(key=lambda p: -p[0])
    if pairs:
        co.p("Label pairs seen together most often:")
        co.table([{"label": a, "with": b, "images": n} for n, a, b in pairs[:15]])
    if len(classes) > MAX_COOC:
        co.note(f"{len(classes)} labels: the figure shows the {MAX_COOC} commonest; cooccurrence.csv has all")
    co.link("cooccurrence.csv", "counts as csv: cooccurrence.csv")
    return counts, ratio, sec
