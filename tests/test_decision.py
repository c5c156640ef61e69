import numpy as np
import pandas as pd
import pytest
from conftest import write_config
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict

from comp.config import load_config
from comp.data.cache import load_images
from comp.data.competition import class_names, load_test, load_train
from comp.infer import ledger
from comp.infer.decision import apply_bias, cv_bias, fit_bias, macro_f1
from comp.infer.ensemble import ensemble
from comp.infer.score import score_files


def test_macro_f1_matches_sklearn():
    rng = np.random.default_rng(0)
    for n_classes in (2, 5, 12):
        y = rng.integers(0, n_classes, 300)
        p = np.where(rng.random(300) < 0.6, y, rng.integers(0, n_classes, 300))
        p[p == 1] = 0  # a class never predicted
        assert macro_f1(y, p, n_classes) == pytest.approx(f1_score(y, p, average="macro"), abs=1e-12)


def test_fit_bias_undoes_a_shifted_class():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 4, 3000)
    logits = rng.normal(size=(3000, 4))
    logits[np.arange(3000), y] += 2.0
    scores = logits.copy()
    scores[:, 2] -= 1.5  # a model that under-predicts class 2
    bias = fit_bias(scores, y)
    assert bias[2] - np.delete(bias, 2).mean() == pytest.approx(1.5, abs=0.35)
    assert macro_f1(y, apply_bias(scores, bias), 4) > macro_f1(y, scores.argmax(1), 4) + 0.03
    assert abs(bias.sum()) < 1e-9  # centred


@pytest.fixture
def imbalanced_real(imbalanced_competition, tmp_path, monkeypatch):
    """A real model's OOF and test probabilities on the imbalanced Fashion-MNIST sample: a strongly
    regularised logistic regression on 10x10 pixels, which (like any accuracy-trained model) under-predicts
    the rare classes."""
    write_config(tmp_path, imbalanced_competition)
    monkeypatch.chdir(tmp_path)
    cfg = load_config(tmp_path / "comp.yaml")
    train, test = load_train(cfg), load_test(cfg)
    classes = class_names(train["label"])
    y = pd.Categorical(train["label"], categories=classes).codes

    def features(paths):
        return load_images(paths, 10, progress=False)[..., 0].reshape(len(paths), -1) / 255.0

    x, xt = features(train["path"].tolist()), features(test["path"].tolist())
    lr = LogisticRegression(C=0.03, max_iter=200)
    oof = cross_val_predict(lr, x, y, cv=StratifiedKFold(5, shuffle=True, random_state=0), method="predict_proba")
    test_p = lr.fit(x, y).predict_proba(xt)
    run = tmp_path / "runs" / "lr"
    run.mkdir(parents=True)
    frame = pd.DataFrame({"image_id": train["id"], "fold": 0, "label": train["label"]})
    pd.concat([frame, pd.DataFrame(oof, columns=classes)], axis=1).to_csv(run / "oof.csv", index=False)
    pd.concat([test[["id"]].rename(columns={"id": "image_id"}), pd.DataFrame(test_p, columns=classes)],
              axis=1).to_csv(run / "test.csv", index=False)
    return cfg, y, oof


def test_bias_tuning_raises_macro_f1_on_imbalanced_real_sample(imbalanced_real):
    _, y, oof = imbalanced_real
    assert np.bincount(y).max() / np.bincount(y).min() >= 5
    report = cv_bias(np.log(oof), y, n_splits=5)
    assert report.in_sample_f1 > report.argmax_f1 + 0.05
    assert report.cv_f1 > report.argmax_f1 + 0.02  # the honest estimate still gains
    assert report.cv_f1 <= report.in_sample_f1 + 0.01  # in-sample is the optimistic one
    assert len(report.fold_biases) == 5


def test_ensemble_tune_bias_reports_cv_and_helps_hold_out(imbalanced_real):
    cfg = imbalanced_real[0]
    lines = []
    ensemble(cfg, ["lr"], name="plain", echo=lines.append)
    tuned = ensemble(cfg, ["lr"], name="tuned", tune_bias=True, echo=lines.append)
    report = tuned["bias_report"]
    text = "\n".join(lines)
    assert (f"argmax {report.argmax_f1:.4f} | tuned in-sample {report.in_sample_f1:.4f} "
            f"| cross-validated {report.cv_f1:.4f}") in text
    assert tuned["cv_macro_f1"] == report.cv_f1  # what was submitted is logged with its honest estimate
    rows = ledger.read()
    assert rows["name"].tolist() == ["plain", "tuned"]
    assert float(rows.iloc[1]["cv_macro_f1"]) == pytest.approx(report.cv_f1, abs=1e-5)
    root = cfg.root
    held = [score_files(f"submissions/{n}.csv", root / "solution.csv", root / "sample_submission.csv")["macro_f1"]
            for n in ("plain", "tuned")]
    assert held[1] > held[0]  # the tuned biases help on the hidden test as well
