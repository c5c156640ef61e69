"""The rest of comp on one real multi-label run (the HPA-style mosaic sample, 2 folds of test_resnet at 32 px for
1 epoch, trained in-process once for the module): comp eda's label sections, comp analyze's per-label table and
Grad-CAM per label, the app, export to onnxruntime, pseudo, relabel and tune."""

import json
import os
import re

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score, precision_recall_fscore_support, roc_auc_score

from comp.config import load_config
from comp.data.folds import make_folds
from comp.data.init import init_competition
from comp.data.multilabel import multi_hot
from comp.data.sample_multilabel import make_multilabel_sample
from comp.train.loop import train_folds

QUIET = {"echo": lambda s: None}
TINY = ["model.name=test_resnet", "input.size=32", "train.epochs=1", "train.batch_size=32", "train.lr=3e-3"]


def _csv(path):
    return pd.read_csv(path, dtype=str, keep_default_na=False)


@pytest.fixture(scope="module")
def ml_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("mltools")
    src = make_multilabel_sample(work / "hpa", "hpa", n_train=120, n_test=24, seed=3).out
    old = os.getcwd()
    os.chdir(work)
    try:
        init_competition(src, "comp.yaml", **QUIET)
        make_folds(load_config("comp.yaml"), n_splits=2, **QUIET)
        cfg = load_config("comp.yaml", exp="m", overrides=TINY)
        train_folds(cfg, **QUIET)
    finally:
        os.chdir(old)
    oof = _csv(work / "runs" / "m" / "oof.csv")
    classes = [c for c in oof.columns if c not in ("Id", "fold", "Target")]
    return {"work": work, "src": src, "cfg": cfg, "oof": oof, "classes": classes,
            "y": multi_hot(oof["Target"].tolist(), classes, " "), "p": oof[classes].astype(float).to_numpy()}


@pytest.fixture
def in_ml(ml_run, monkeypatch):
    monkeypatch.chdir(ml_run["work"])
    return ml_run


def test_eda_labels_per_image_and_cooccurrence(in_ml):
    from comp.reports.eda import run_eda

    page = run_eda(load_config("comp.yaml"), out="reports/eda", progress=False, workers=1, **QUIET)
    folder = page.parent
    html = page.read_text(encoding="utf-8")
    for sid in ("class-counts", "labels-per-image", "cooccurrence"):
        assert f'<section id="{sid}">' in html, sid
    assert 'src="labels_per_image.png"' in html and 'src="cooccurrence.png"' in html
    assert (folder / "labels_per_image.png").stat().st_size > 1000 and (folder / "cooccurrence.png").exists()
    train = _csv(in_ml["src"] / "train.csv")
    classes = in_ml["classes"]
    y = multi_hot(train["Target"].tolist(), classes, " ").astype(int)
    co = pd.read_csv(folder / "cooccurrence.csv", dtype={"label": str}).set_index("label")
    np.testing.assert_array_equal(co.loc[classes, classes].to_numpy(), y.T @ y)
    hist = pd.read_csv(folder / "labels_per_image.csv")
    assert dict(zip(hist["labels"], hist["images"])) == {k: int(v) for k, v in
                                                          enumerate(np.bincount(y.sum(1))) if v or k == 0}
    assert y.sum(1).min() >= 1 and hist["images"].sum() == len(train)


def test_analyze_per_label_metrics_and_gradcam_per_label(in_ml):
    from comp.reports.analyze import run_analyze

    page = run_analyze(load_config("comp.yaml", exp="m"), "m", out="reports/m", **QUIET)
    folder = page.parent
    y, p, classes = in_ml["y"], in_ml["p"], in_ml["classes"]
    per = pd.read_csv(folder / "per_class.csv", dtype={"class": str})
    pr, rc, f1, _ = precision_recall_fscore_support(y, p >= 0.5, average=None, zero_division=0)
    assert per["class"].tolist() == classes
    np.testing.assert_allclose(per[["precision", "recall", "f1"]].to_numpy(), np.stack([pr, rc, f1], 1), atol=1e-9)
    np.testing.assert_allclose(per["roc_auc"], [roc_auc_score(y[:, c], p[:, c]) for c in range(len(classes))])
    summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
    assert summary["task"] == "multilabel"
    assert summary["macro_f1"] == pytest.approx(f1_score(y, p >= 0.5, average="macro", zero_division=0))
    html = page.read_text(encoding="utf-8")
    for sid in ("per-class", "confident-missed", "confident-false", "curves"):
        assert f'<section id="{sid}">' in html, sid
    cams = summary["cams"]
    assert cams and all(re.fullmatch(r"cam_(missed|false)_\d+\.png", c) for c in cams)
    assert all((folder / c).is_file() and f'src="{c}"' in html for c in cams)
    # the most confidently missed label (true, lowest probability) leads its gallery, named with its label
    miss = np.argwhere((y == 1) & (p < 0.5))
    r, c = miss[np.argmin(p[miss[:, 0], miss[:, 1]])]
    missed = re.search(r'<section id="confident-missed">(.*?)</section>', html, re.DOTALL).group(1)
    first = missed[missed.index("cam_missed_0.png"):]
    first = first[:first.index("</div>")]
    assert in_ml["oof"]["Id"][r] in first and f"missed: {classes[c]} p={p[r, c]:.2f}" in first
