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
from comp.data.sample_multilabel import make_multilabel_sample
from comp.tasks.labels import multi_hot
from comp.train.session import train_folds

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


def test_export_sigmoid_parity_and_onnxruntime_predict(in_ml):
    pytest.importorskip("onnxruntime")
    from comp.infer.predict import predict
    from comp.serve.onnx import export

    cfg = load_config("comp.yaml", exp="m", overrides=["infer.tta=[identity,hflip]"])
    torch_p = predict(cfg, progress=False, **QUIET).iloc[:, 1:].to_numpy(float)
    info = export(cfg, **QUIET)
    assert info["task"] == "multilabel" and "sigmoid" in info["output"]["meaning"]
    for e in info["folds"].values():
        assert e["parity_max_abs_diff"] <= 1e-4 and e["agree_labels_at_0.5"] == e["parity_images"]
    onnx_p = predict(cfg, overwrite=True, progress=False, engine="onnxruntime", **QUIET).iloc[:, 1:].to_numpy(float)
    assert np.abs(onnx_p - torch_p).max() <= 1e-4
    assert np.abs(onnx_p.sum(1) - 1).max() > 0.05  # independent sigmoids, not a softmax


def test_app_every_label_over_its_threshold_with_gradcam_per_label(in_ml):
    pytest.importorskip("gradio")
    from comp.infer import ledger
    from comp.serve.app import build_app, classify, info_markdown
    from comp.serve.ensemble import Ensemble

    path = next((in_ml["src"] / "test").glob("*.png"))
    ens = Ensemble.load("comp.yaml", ["m"])
    assert ens.decision.widget(5)[1] == "labels over their thresholds"
    assert "0.5 for every label" in ens.decision.rule.source
    rgb = ens.load_image(path)
    probs = ens.predict(rgb)
    assert np.abs(probs.sum() - 1) > 0.05 and ((probs >= 0) & (probs <= 1)).all()
    # tuned thresholds from the ledger row of exactly this experiment, as comp ensemble wrote them
    third = float(np.clip(np.sort(probs)[-3] - 1e-3, 0.05, 0.95))  # the 3 likeliest labels pass this ...
    th = {c: third for c in ens.classes}
    th[ens.classes[int(np.argmax(probs))]] = 0.99  # ... but the top one is now under its own threshold
    ledger.append("t", ["m"], [1.0], 0.5, {"task": "multilabel", "at_least_one": False, "top_k": None,
                                         "thresholds": {"plain": 0.4, "cv": 0.5, "applied": True, "values": th}})
    ens = Ensemble.load("comp.yaml", ["m"])
    assert "row 't'" in ens.decision.rule.source
    label, heat, status = classify(ens, str(path))
    want = [c for c in ens.classes if probs[ens.classes.index(c)] >= th[c]]
    assert sorted(label) == sorted(want) and len(want) >= 1 and ens.classes[int(np.argmax(probs))] not in label
    assert all(label[c] == pytest.approx(probs[ens.classes.index(c)]) for c in want)
    assert heat is not None and heat.shape[0] == min(len(want), 4) * 160 and heat.shape[1] == 320
    assert all(f"**{c}**" in status for c in want) and "row 't'" in status
    assert "Multi-label" in info_markdown(ens)
    blocks = build_app(ens, examples=True)
    assert "labels over their thresholds" in json.dumps(blocks.get_config_file())


def test_tune_searches_a_multilabel_metric_and_relabel_refuses_by_name(in_ml):
    pytest.importorskip("ray")
    from comp.config import ConfigError
    from comp.orchestrate.tune import _prepare
    from comp.techniques.pseudo import make_pseudo
    from comp.techniques.relabel import run_relabel

    (in_ml["work"] / "configs").mkdir(exist_ok=True)
    (in_ml["work"] / "configs" / "t.space.yaml").write_text("train.lr: {loguniform: [1e-4, 3e-2]}\n")
    for metric in ("f2", "map"):  # multi-label metrics: before, tune asked for them as multi-class ones
        s = _prepare("comp.yaml", f"t{metric}", "configs/t.space.yaml", 2, [0], "val_score",
                     [*TINY, f"data.metric={metric}"], False)
        assert s.mode == "max" and s.cfg.data.task == "multilabel"
    cfg = load_config("comp.yaml", exp="m")
    with pytest.raises(ConfigError, match="data.task multilabel.*comp analyze --exp m"):
        run_relabel(cfg, "m", **QUIET)
    assert make_pseudo  # multi-label pseudo-labels: test_pseudo_multilabel_thresholds_come_from_the_other_folds


def test_pseudo_multilabel_thresholds_come_from_the_other_folds(in_ml):
    """comp pseudo on a multi-label teacher: fold k's labels are the classes over thresholds fit on the teacher's OOF
    without fold k (scrambling fold k's labels changes none of them), the targets are multi-hot, and a student
    trains on them."""
    import shutil

    from comp.infer.predict import predict
    from comp.techniques import sources
    from comp.techniques.pseudo import fold_rules, make_pseudo

    cfg = load_config("comp.yaml", exp="m", overrides=TINY)
    if not (in_ml["work"] / "runs" / "m" / "test_folds.csv").exists():
        predict(cfg, overwrite=True, progress=False, **QUIET)
    classes = in_ml["classes"]
    scrambled = in_ml["work"] / "runs" / "m_scr"
    shutil.rmtree(scrambled, ignore_errors=True)
    scrambled.mkdir()
    oof = in_ml["oof"].copy()
    zero = np.flatnonzero(oof["fold"].astype(int).to_numpy() == 0)
    oof.loc[zero, "Target"] = oof.loc[zero[::-1], "Target"].to_numpy()
    oof.to_csv(scrambled / "oof.csv", index=False)
    mine = {k: r.cuts for k, r in fold_rules(cfg, "m", classes, [0, 1]).items()}
    other = {k: r.cuts for k, r in fold_rules(cfg, "m_scr", classes, [0, 1]).items()}
    assert (mine[0] == other[0]).all()  # fold 0's thresholds never read fold 0's labels

    out = make_pseudo(cfg, "m", "mp", top=0.5, overwrite=True, **QUIET)
    info = json.loads((out / "summary.json").read_text())
    assert info["task"] == "multilabel" and sorted(info["thresholds"]) == ["0", "1"]
    for k in (0, 1):
        assert info["thresholds"][str(k)] == [round(float(t), 3) for t in mine[k]]
        df = _csv(out / f"fold_{k}.csv")
        hot = df[classes].astype(float).to_numpy()
        assert set(np.unique(hot)) <= {0.0, 1.0} and len(df) == 12  # half of the 24 test images, multi-hot
    said = []
    student = load_config("comp.yaml", exp="mp", overrides=[*TINY, f"data.pseudo={out}"])
    res = train_folds(student, sources=sources(student), echo=said.append)
    assert res["cv_score"] is not None
    assert any("+ 12 pseudo-labelled test images (hard multi-label" in line for line in said)


@pytest.mark.slow
def test_app_server_answers_every_label_over_its_threshold(in_ml):
    """`comp app` on a multi-label run, as a real server on loopback: what a client gets for a test image is what
    the library decides in-process (every label at or over its threshold, with its probability), plus a Grad-CAM."""
    pytest.importorskip("gradio")
    from pathlib import Path

    from gradio_client import Client, handle_file

    from comp.serve.app import classify
    from comp.serve.ensemble import Ensemble
    from comp.serve.server import AppServer

    ens = Ensemble.load("comp.yaml", ["m"])
    paths = sorted((in_ml["src"] / "test").glob("*.png"))[:3]
    env = {"GRADIO_TEMP_DIR": str(in_ml["work"] / "gradio-tmp")}
    with AppServer(["m"], cwd=in_ml["work"], env=env) as url:
        client = Client(url, verbose=False)
        seen = 0
        for p in paths:
            want, _, _ = classify(ens, str(p))
            label, cam, status = client.predict(handle_file(str(p)), api_name="/predict")
            got = {c["label"]: c["confidence"] for c in label.get("confidences") or []}
            assert sorted(got) == sorted(want), (got, want, status)
            assert all(abs(got[c] - want[c]) < 1e-4 for c in want)
            if want:
                seen += len(want)
                assert cam and Path(cam).stat().st_size > 0
        assert seen >= 1


def test_fixed_epoch_cv_scores_a_multilabel_run_with_multilabel_metrics(in_ml):
    """Epoch honesty on a multi-label run: val_epochs.npz holds the multi-hot truth, and the fixed-epoch CV is the
    multi-label metric of that name (f2 was refused as an unknown multi-class metric, after every fold trained)."""
    from sklearn.metrics import fbeta_score

    from comp.runs import run_dir, run_task
    from comp.train.epochs import fixed_epoch_cv

    p, y = in_ml["p"], in_ml["y"]
    for metric, want in (("f2", fbeta_score(y, p >= 0.5, beta=2, average="samples", zero_division=0)),
                         ("macro_f1", f1_score(y, p >= 0.5, average="macro", zero_division=0))):
        fixed = fixed_epoch_cv(run_dir("m"), run_task(run_dir("m")).metric(metric))  # one epoch: the OOF's own
        assert fixed is not None and fixed.score == pytest.approx(want, abs=0.02), metric


def test_pseudo_refuses_a_blended_multilabel_teacher_by_name(in_ml):
    """A ledger row blending two multi-label experiments is refused as a teacher, naming its members: its weights
    would need their own fold-safe search on the multi-label metric."""
    from comp.config import ConfigError
    from comp.infer import ledger
    from comp.techniques.pseudo import make_pseudo

    ledger.append("blend2", ["m", "m2"], [0.5, 0.5], 0.5, {"task": "multilabel", "weights": "auto"})
    cfg = load_config("comp.yaml", exp="m", overrides=TINY)
    with pytest.raises(ConfigError, match=r"--from blend2: a multi-label teacher is one experiment.*pass one of m, m2"):
        make_pseudo(cfg, "blend2", "mp2", top=0.5, overwrite=True, **QUIET)
    assert not (in_ml["work"] / "folds" / "pseudo" / "mp2").exists()
