"""Multi-label competitions (data.task multilabel) on real mosaics of Fashion-MNIST (or digits) items: the
sample's three layouts, detection, folds, metrics against scikit-learn, honest thresholds, training to a scored
submission, and the OOF under two processes."""

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import average_precision_score, f1_score, fbeta_score, roc_auc_score

from comp.config import ConfigError, load_config
from comp.data.competition import DataError
from comp.data.init import detect, init_competition
from comp.data.sample_multilabel import make_multilabel_sample
from comp.infer.multilabel import Rule, cv_thresholds
from comp.metrics import MULTILABEL_METRICS, multilabel_metric
from comp.tasks import task_of
from comp.tasks.labels import multi_hot, multilabel_folds, split_labels
from comp.tasks.multilabel_losses import create_multilabel_loss, pos_weight, rarest_label_weights
from comp.tasks.thresholds import decide, fbeta

TINY = ["model.name=test_resnet", "input.size=32", "train.epochs=2", "train.batch_size=32", "train.lr=3e-3",
        "folds.n_splits=3"]


def _csv(path):
    return pd.read_csv(path, dtype=str, keep_default_na=False)


@pytest.fixture(scope="module")
def layouts(tmp_path_factory):
    root = tmp_path_factory.mktemp("ml")
    return {lay: make_multilabel_sample(root / lay, lay, n_train=180, n_test=60, seed=1).out
            for lay in ("hpa", "planet", "ranzcr")}


def test_sample_layouts(layouts):
    hpa = _csv(layouts["hpa"] / "train.csv")
    assert list(hpa.columns) == ["Id", "Target"] and len(hpa) == 180
    n = hpa["Target"].map(lambda v: len(v.split()))
    assert n.min() >= 1 and n.max() <= 3 and n.nunique() == 3
    assert all(t.isdigit() for v in hpa["Target"] for t in v.split())
    assert list(_csv(layouts["hpa"] / "sample_submission.csv").columns) == ["Id", "Predicted"]
    sol = _csv(layouts["hpa"] / "solution.csv")
    assert list(sol.columns) == ["Id", "Predicted"] and len(sol) == 60
    planet = _csv(layouts["planet"] / "train_v2.csv")
    assert list(planet.columns) == ["image_name", "tags"] and not any(t.isdigit() for t in planet["tags"][0].split())
    ranzcr = _csv(layouts["ranzcr"] / "train.csv")
    classes = list(_csv(layouts["ranzcr"] / "sample_submission.csv").columns[1:])
    assert list(ranzcr.columns) == ["StudyInstanceUID", *classes, "PatientID"]
    assert (ranzcr[classes].astype(int).sum(1) != 1).any()
    from PIL import Image

    with Image.open(layouts["hpa"] / "train" / f"{hpa['Id'][0]}.png") as im:
        assert im.size in ((56, 56), (16, 16))  # 2x2 tiles of 28 px (8 px digits without Fashion-MNIST)


def test_init_detects_each_layout(layouts, tmp_path):
    hpa, why = detect(layouts["hpa"])
    assert hpa["task"] == "multilabel" and hpa["label_sep"] == " " and hpa["label_col"] == "Target"
    assert any("task: multilabel" in w for w in why)
    planet, _ = detect(layouts["planet"])
    assert planet["task"] == "multilabel" and planet["label_col"] == "tags" and planet["train_dir"] == "train-jpg"
    ranzcr, why = detect(layouts["ranzcr"])
    assert ranzcr["task"] == "multilabel" and len(ranzcr["label_cols"]) == 10 and ranzcr["metric"] == "roc_auc"
    assert any("other than exactly one 1" in w for w in why)
    # --task multiclass overrides: every combination is then one class, as before this feature
    forced, _ = detect(layouts["hpa"], task="multiclass")
    assert "task" not in forced
    cfg = init_competition(layouts["planet"], tmp_path / "c.yaml", echo=lambda s: None)
    assert cfg.data.task == "multilabel" and cfg.data.label_sep == " "


def test_init_stops_when_it_cannot_tell(tmp_path, layouts):
    d = tmp_path / "amb"
    d.mkdir()
    (d / "train").symlink_to(layouts["hpa"] / "train")
    ids = _csv(layouts["hpa"] / "train.csv")["Id"][:40]
    # 'Ankle' is shared, but 'boot' and 'shoe' are found in no other cell: names that hold a space, one class each
    labels = (["Ankle boot", "Ankle shoe", "Bag"] * 14)[:40]
    pd.DataFrame({"Id": ids, "label": labels}).to_csv(d / "train.csv", index=False)
    data, why = detect(d)
    assert "task" not in data and any("task: single-label" in w and "'Ankle boot'" in w for w in why), why
    # every word is found in two cells, none alone, as many cells as words: multi-label or three two-word names
    labels = (["red cat", "red dog", "cat dog"] * 14)[:40]
    pd.DataFrame({"Id": ids, "label": labels}).to_csv(d / "train.csv", index=False)
    with pytest.raises(DataError, match="--task multiclass|multilabel"):
        detect(d)
    data, _ = detect(d, task="multiclass")
    assert "task" not in data


def test_multilabel_metric_needs_the_task(tmp_path):
    (tmp_path / "c.yaml").write_text("data: {metric: f2}\n")
    with pytest.raises(ConfigError, match="data.task: multilabel"):
        load_config(tmp_path / "c.yaml")
    (tmp_path / "c.yaml").write_text("data: {task: multilabel, metric: qwk}\n")
    with pytest.raises(ConfigError, match="data.metric"):
        load_config(tmp_path / "c.yaml")


def test_folds_balanced_and_grouped(layouts):
    train = _csv(layouts["ranzcr"] / "train.csv")
    classes = list(train.columns[1:-1])
    y = train[classes].astype(int).to_numpy()
    fold = multilabel_folds(y, 3, 0)
    per = np.stack([y[fold == k].sum(0) for k in range(3)])
    assert (per.max(0) - per.min(0)).max() <= 2  # every label spread evenly (iterative stratification)
    gfold = multilabel_folds(y, 3, 0, groups=train["PatientID"])
    assert (pd.Series(gfold).groupby(train["PatientID"]).nunique() == 1).all()  # a patient in one fold
    gper = np.stack([y[gfold == k].sum(0) for k in range(3)])
    assert (gper.max(0) - gper.min(0)).max() <= 6


def test_metrics_equal_sklearn():
    rng = np.random.default_rng(0)
    y = (rng.random((200, 6)) < 0.3).astype(int)
    p = np.clip(y * 0.4 + rng.random((200, 6)) * 0.6, 0, 1)
    b = (p >= 0.5).astype(int)
    want = {"macro_f1": f1_score(y, b, average="macro", zero_division=0),
            "micro_f1": f1_score(y, b, average="micro", zero_division=0),
            "samples_f1": f1_score(y, b, average="samples", zero_division=0),
            "f2": fbeta_score(y, b, beta=2, average="samples", zero_division=0),
            "map": average_precision_score(y, p, average="macro"),
            "roc_auc": roc_auc_score(y, p, average="macro")}
    for name, value in want.items():
        assert MULTILABEL_METRICS[name](y, p, []) == pytest.approx(value, abs=1e-12), name
    for avg, beta in (("macro", 1), ("micro", 1), ("samples", 1), ("samples", 2)):
        assert fbeta(y, b, avg, beta) == pytest.approx(fbeta_score(y, b, beta=beta, average=avg, zero_division=0))
    cv = task_of("multilabel").cv(y, p, list("abcdef"), "f2")
    assert cv.score == pytest.approx(want["f2"]) and cv.macro_f1 == pytest.approx(want["macro_f1"])


def test_decisions_at_least_one_and_top_k():
    p = np.array([[0.1, 0.2, 0.3], [0.9, 0.8, 0.7]])
    assert decide(p, 0.5).tolist() == [[0, 0, 0], [1, 1, 1]]
    assert decide(p, 0.5, at_least_one=True, top_k=2).tolist() == [[0, 0, 1], [1, 1, 0]]


def test_thresholds_cross_validated_against_an_honest_control():
    from comp.tasks.thresholds import fit_thresholds

    rng = np.random.default_rng(3)

    def draw(n):  # weak, badly calibrated signal: the best thresholds are not 0.5, and hard to pin down
        y = (rng.random((n, 8)) < 0.15).astype(int)
        return np.clip(0.12 * y + 0.5 * rng.random((n, 8)), 0, 1), y

    rule = Rule(np.full(8, 0.5))
    gaps_in, gaps_cv = [], []
    for _ in range(4):
        p, y = draw(160)
        r = cv_thresholds(p, y, "macro_f1", rule, seed=0)
        fresh_p, fresh_y = draw(4000)  # the honest control: thresholds fit on (p, y), scored on new rows
        fresh = MULTILABEL_METRICS["macro_f1"].from_labels(fresh_y, rule(fresh_p, r.thresholds), [])
        gaps_in.append(r.in_sample - fresh)
        gaps_cv.append(r.cv - fresh)
        assert np.array_equal(r.thresholds, fit_thresholds(p, y, "macro_f1", rule))
    assert np.mean(gaps_in) > 0.03  # fit in-sample flatters itself
    assert abs(np.mean(gaps_cv)) < np.mean(gaps_in) / 2  # the nested figure does not
    # every probability too low: thresholds help a lot, the nested gain says so, and they are applied
    y = (rng.random((300, 5)) < 0.2).astype(int)
    low = np.clip(0.35 * y + 0.3 * rng.random((300, 5)), 0, 1)
    s = cv_thresholds(low, y, "macro_f1", Rule(np.full(5, 0.5)), seed=0)
    assert s.applied and s.gain > 0.3 and s.cv > 0.95
    # pure noise scored by micro F1 at a 50% label rate: 0.5 is already best, nothing is gained honestly
    y = (rng.random((200, 4)) < 0.5).astype(int)
    n = cv_thresholds(rng.random((200, 4)), y, "micro_f1", Rule(np.full(4, 0.5)), seed=0)
    assert n.in_sample > n.cv


def test_losses_and_sampler():
    from comp.config import TrainConfig

    logits = torch.randn(8, 4, requires_grad=True)
    target = (torch.rand(8, 4) < 0.4).float()
    for name in ("bce", "asl", "focal", "soft_f1", "bce+soft_f1", "ce"):
        loss = create_multilabel_loss(TrainConfig(loss=name), np.array([3, 1, 2, 2]), 8)(logits, target)
        loss.backward()
        assert torch.isfinite(loss) and logits.grad.abs().sum() > 0
    bce = create_multilabel_loss(TrainConfig(loss="bce"))(logits, target)
    want = torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
    assert bce.item() == pytest.approx(want.item(), rel=1e-5)
    assert pos_weight("balanced", np.array([2, 8]), 10).tolist() == pytest.approx([4.0, 0.25])
    with pytest.raises(ConfigError, match="multilabel"):
        create_multilabel_loss(TrainConfig(loss="ce+soft_f1"))
    w = rarest_label_weights(np.array([[1, 0], [1, 0], [1, 1], [0, 0]]))
    assert w[2] == pytest.approx(1.0) and w[0] == pytest.approx(1 / 3)


def test_mixup_mixes_multi_hot_targets():
    from comp.config import AugmentConfig
    from comp.train.augment import build_mixup

    mix = build_mixup(AugmentConfig(mixup=0.4), 3, 0.0, multi_label=True)
    x, y = torch.rand(4, 3, 8, 8), torch.tensor([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1]]).float()
    _, t = mix(x, y)
    assert t.shape == (4, 3) and ((t >= 0) & (t <= 1)).all() and not torch.equal(t, y)


def _comp(*args, cwd, timeout=600):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", NO_ALBUMENTATIONS_UPDATE="1")
    r = subprocess.run([sys.executable, "-m", "comp", *args], cwd=cwd, env=env, capture_output=True, text=True,
                       timeout=timeout)
    assert r.returncode == 0, f"comp {' '.join(args)}\n{r.stdout[-3000:]}\n{r.stderr[-4000:]}"
    return r.stdout


def _sets(extra=()):
    return [a for s in [*TINY, *extra] for a in ("--set", s)]


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["hpa", "ranzcr"])
def test_train_predict_ensemble_score(layouts, tmp_path, layout):
    src = layouts[layout]
    _comp("init", str(src), cwd=tmp_path)
    _comp("folds", "--n-splits", "3", cwd=tmp_path)
    folds = _csv(tmp_path / "folds" / "folds.csv")
    _comp("train", "--exp", "m", "--all-folds", *_sets(["augment.mixup=0.2"]), cwd=tmp_path)
    cfg = load_config(tmp_path / "comp.yaml")
    oof = _csv(tmp_path / "runs" / "m" / "oof.csv")
    idc = cfg.data.id_col
    assert oof[idc].tolist() == folds[idc].tolist() and oof[cfg.data.label_col].tolist() == folds[
        cfg.data.label_col].tolist()
    classes = [c for c in oof.columns if c not in (idc, "fold", cfg.data.label_col)]
    p = oof[classes].astype(float).to_numpy()
    assert ((p >= 0) & (p <= 1)).all() and np.abs(p.sum(1) - 1).max() > 0.05  # sigmoid, not softmax
    _comp("predict", "--exp", "m", cwd=tmp_path)
    out = _comp("ensemble", "--exp", "m", "--name", "s", cwd=tmp_path)
    sub, sample = _csv(tmp_path / "submissions" / "s.csv"), _csv(src / next(
        n for n in ("sample_submission.csv", "sample_submission_v2.csv") if (src / n).exists()))
    assert list(sub.columns) == list(sample.columns) and sub[idc].tolist() == sample[idc].tolist()
    sol = _csv(src / "solution.csv")
    scored = _comp("score", "submissions/s.csv", "--solution", str(src / "solution.csv"), "--json", cwd=tmp_path)
    import json

    result = json.loads(scored)
    if layout == "hpa":
        cls = sorted({c for v in sol["Predicted"] for c in v.split()} | {c for v in sub["Predicted"] for c in
                                                                          v.split()}, key=int)
        y, b = (multi_hot(f["Predicted"].tolist(), cls, " ") for f in (sol, sub))
        assert result["macro_f1"] == pytest.approx(f1_score(y, b, average="macro", zero_division=0))
        assert "thresholds (macro_f1)" in out
    else:
        cols = list(sample.columns[1:])
        assert result["roc_auc"] == pytest.approx(roc_auc_score(sol[cols].astype(int), sub[cols].astype(float)))
        assert result["score"] == result["roc_auc"] > 0.6
    row = _csv(tmp_path / "submissions" / "ledger.csv").iloc[-1]
    assert row["metric"] == cfg.data.metric and '"task": "multilabel"' in row["options"]


@pytest.mark.slow
def test_oof_exactly_once_under_two_processes(layouts, tmp_path):
    _comp("init", str(layouts["planet"]), cwd=tmp_path)
    _comp("folds", "--n-splits", "3", cwd=tmp_path)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", NO_ALBUMENTATIONS_UPDATE="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "comp",
           "train", "--exp", "ddp", "--fold", "1", *_sets(["train.epochs=1", "infer.batch_size=7"])]
    r = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-4000:]
    assert "processes 2" in r.stdout
    folds = _csv(tmp_path / "folds" / "folds.csv")
    oof = _csv(tmp_path / "runs" / "ddp" / "fold_1" / "oof.csv")
    want = folds[folds["fold"] == "1"]
    assert sorted(oof["image_name"]) == sorted(want["image_name"]) and oof["image_name"].is_unique
    assert dict(zip(oof["image_name"], oof["tags"])) == dict(zip(want["image_name"], want["tags"]))
    assert all(split_labels(v, " ") for v in oof["tags"])


def test_score_equals_sklearn_for_both_shapes(tmp_path):
    from comp.infer.multilabel_score import score_any
    from comp.infer.score import SubmissionError

    rng = np.random.default_rng(5)
    classes = ["Ankle boot", "Bag", "T-shirt/top", "Coat"]
    ids = [f"te_{i}" for i in range(80)]
    y = (rng.random((80, 4)) < 0.35).astype(int)
    p = np.clip(0.5 * y + 0.5 * rng.random((80, 4)), 0, 1)
    sol = pd.DataFrame(y, columns=classes)
    sol.insert(0, "id", ids)
    sol.to_csv(tmp_path / "sol.csv", index=False)
    sub = pd.DataFrame(p, columns=classes)
    sub.insert(0, "id", ids)
    sub.iloc[::-1].to_csv(tmp_path / "sub.csv", index=False)  # any row order
    r = score_any(tmp_path / "sub.csv", tmp_path / "sol.csv", metric="roc_auc")
    b = (p >= 0.5).astype(int)
    assert r["task"] == "multilabel" and r["shape"] == "wide"
    assert r["score"] == pytest.approx(roc_auc_score(y, p, average="macro"))
    assert r["map"] == pytest.approx(average_precision_score(y, p, average="macro"))
    assert r["samples_f1"] == pytest.approx(f1_score(y, b, average="samples", zero_division=0))
    # the label shape, HPA's indices: the empty cell is an image with no label
    names = [str(i) for i in range(4)]
    cells = lambda m: [" ".join(n for n, v in zip(names, row) if v) for row in m]  # noqa: E731
    pd.DataFrame({"Id": ids, "Predicted": cells(y)}).to_csv(tmp_path / "sol2.csv", index=False)
    pd.DataFrame({"Id": ids, "Predicted": cells(b)}).to_csv(tmp_path / "sub2.csv", index=False)
    r = score_any(tmp_path / "sub2.csv", tmp_path / "sol2.csv", metric="f2")
    assert r["shape"] == "label" and r["map"] is None
    assert r["score"] == pytest.approx(fbeta_score(y, b, beta=2, average="samples", zero_division=0))
    assert r["macro_f1"] == pytest.approx(f1_score(y, b, average="macro", zero_division=0))
    assert r["micro_f1"] == pytest.approx(f1_score(y, b, average="micro", zero_division=0))
    with pytest.raises(SubmissionError, match="needs probabilities"):
        score_any(tmp_path / "sub2.csv", tmp_path / "sol2.csv", metric="roc_auc")
    bad = pd.DataFrame({"Id": ids[1:], "Predicted": cells(b)[1:]})
    bad.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(SubmissionError, match="missing"):
        score_any(tmp_path / "bad.csv", tmp_path / "sol2.csv")


def test_blend_weights_and_thresholds_nested():
    from comp.infer.multilabel import MLInputs, fit_blend

    rng = np.random.default_rng(7)
    y = (rng.random((240, 5)) < 0.3).astype(int)
    good = np.clip(0.3 * y + 0.45 * rng.random((240, 5)), 0, 1)  # informative, every probability too low
    noise = rng.random((240, 5))
    inp = MLInputs(["good", "noise"], list("abcde"), y, [good, noise], [good[:10], noise[:10]], [], pd.DataFrame(),
                   "id", "label", "label", " ")
    fit = fit_blend(inp, "macro_f1", Rule(np.full(5, 0.5)), None, True, 5, 0)
    assert fit.weights.sum() == pytest.approx(1) and fit.weights[0] > fit.weights[1]
    r = fit.report
    assert r.applied and r.cv > r.plain and r.in_sample >= r.cv
    assert fit.cv == r.cv and fit.held.shape == y.shape
    assert fit.member_score["good"] > fit.member_score["noise"]


def test_ensemble_cv_leaves_out_the_folds_a_search_chose_on(layouts, tmp_path, monkeypatch):
    """The biggest chance to leak: a member whose OOF is perfect on fold 0, the fold its search chose it on
    (runs/E/config.yaml search.folds), and noise elsewhere. comp ensemble's multi-label CV scores only the folds
    no search saw (as the single-label one does), so it stays at the noise level; the all-folds figure is in the
    ledger, labelled optimistic."""
    from comp.infer.multilabel import ensemble_multilabel

    monkeypatch.chdir(tmp_path)
    init_competition(layouts["hpa"], tmp_path / "comp.yaml", echo=lambda s: None)
    cfg = load_config(tmp_path / "comp.yaml")
    train, test = _csv(layouts["hpa"] / "train.csv"), _csv(layouts["hpa"] / "sample_submission.csv")
    classes = sorted({c for v in train["Target"] for c in v.split()}, key=int)
    y = multi_hot(train["Target"].tolist(), classes, " ")
    rng = np.random.default_rng(0)
    fold = np.arange(len(train)) % 2
    probs = np.where(fold[:, None] == 0, y, rng.random(y.shape))  # perfect where the search chose, noise elsewhere
    run = tmp_path / "runs" / "e"
    run.mkdir(parents=True)
    pd.DataFrame({"Id": train["Id"], "Target": train["Target"], **{c: probs[:, j] for j, c in enumerate(classes)},
                  "fold": fold}).to_csv(run / "oof.csv", index=False)
    pd.DataFrame({"Id": test["Id"], **{c: rng.random(len(test)) for c in classes}}).to_csv(run / "test.csv",
                                                                                          index=False)
    said = []
    before = ensemble_multilabel(cfg, ["e"], None, "before", False, echo=said.append)["cv_score"]
    # no search recorded: every row is scored, fold 0's perfect rows with them
    (run / "config.yaml").write_text("search:\n  folds: [0]\n")
    res = ensemble_multilabel(cfg, ["e"], None, "after", False, echo=said.append)
    noise = multilabel_metric("macro_f1").from_labels(y[fold == 1], (probs[fold == 1] >= 0.5).astype(int), [])
    assert res["cv_score"] < before - 0.1 and res["cv_score"] <= noise + 0.1, (res["cv_score"], before, noise)
    assert any("CV over the folds no search saw ([1]" in s for s in said)
    opts = json.loads(_csv(tmp_path / "submissions" / "ledger.csv").iloc[-1]["options"])
    assert opts["search_folds"] == {"e": [0]} and opts["cv_all_folds_optimistic"] > res["cv_score"] + 0.2
