"""Label shift (comp.infer.shift): a long-tailed training set, a balanced test set, a real model (scikit-learn's
logistic regression on the digits); the estimated test prior and the reweighted CV are checked against the test's
own labels."""

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict

from comp.infer.decision import apply_bias, cv_bias, macro_f1
from comp.infer.shift import estimate_shift


def long_tail_split(imbalance: float = 10.0, seed: int = 0):
    """Digits pooled 2x2 (a weaker model, so decisions matter): a long-tailed train set, a balanced test set."""
    x, y = load_digits(return_X_y=True)
    x = x.reshape(-1, 8, 8).reshape(-1, 4, 2, 4, 2).mean((2, 4)).reshape(len(x), -1)
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in range(10):
        rows = rng.permutation(np.flatnonzero(y == c))
        test += list(rows[:60])
        keep = int(round(len(rows[60:]) * imbalance ** (-c / 9)))
        train += list(rows[60:60 + max(10, keep)])
    return x[train], y[train], x[test], y[test]


def oof_and_test(xtr, ytr, xte):
    model = LogisticRegression(C=0.05, max_iter=2000)
    oof = cross_val_predict(model, xtr, ytr, cv=StratifiedKFold(5, shuffle=True, random_state=0),
                            method="predict_log_proba")
    return oof, model.fit(xtr, ytr).predict_log_proba(xte)


def test_a_balanced_test_set_is_found_and_the_reweighted_cv_predicts_its_score():
    xtr, ytr, xte, yte = long_tail_split()
    oof, test = oof_and_test(xtr, ytr, xte)
    sh = estimate_shift(oof, ytr, test)
    truth = np.bincount(yte, minlength=10) / len(yte)
    assert sh.applied and sh.tv > 0.2 > 2 * sh.noise  # train.csv's prior is far from the test's
    assert 0.5 * np.abs(sh.test_prior - truth).sum() < 0.08  # and the estimate is near it, from no test label
    assert abs(sh.test_prior.sum() - 1) < 1e-9 and (sh.weight >= 0).all()

    plain, shifted = cv_bias(oof, ytr, seed=0), cv_bias(oof, ytr, seed=0, class_weight=sh.weight)
    test_plain = macro_f1(yte, apply_bias(test, plain.bias), 10)
    test_shifted = macro_f1(yte, apply_bias(test, shifted.bias), 10)
    # Biases tuned for the estimated prior score better on the balanced test than biases tuned for train.csv's,
    assert test_shifted > test_plain + 0.01
    # and the reweighted CV forecasts what they score there.
    assert abs(shifted.cv_f1 - test_shifted) < 0.03


def test_no_shift_is_left_alone():
    """Train and test drawn alike: the estimate stays within noise and auto does not apply it."""
    x, y = load_digits(return_X_y=True)
    rng = np.random.default_rng(1)
    rows = rng.permutation(len(y))
    tr, te = rows[:1200], rows[1200:]
    oof, test = oof_and_test(x[tr], y[tr], x[te])
    sh = estimate_shift(oof, y[tr], test, mode="auto")
    assert not sh.applied and sh.tv < 2 * sh.noise
    assert estimate_shift(oof, y[tr], test, mode="on").applied


def pixel_member(workdir, cfg, exp: str) -> None:
    """runs/EXP/oof.csv and test.csv as comp predict leaves them, from a real model: logistic regression on the
    competition's own pixels (5-fold OOF, then fit on every row for the test)."""
    import pandas as pd
    from PIL import Image

    from comp.data.competition import class_names, load_test, load_train

    train, test = load_train(cfg), load_test(cfg)
    classes = class_names(train["label"])
    pix = lambda paths: np.stack([np.asarray(Image.open(p).convert("L"), np.float32).ravel() / 255  # noqa: E731
                                  for p in paths])
    xtr, xte = pix(train["path"]), pix(test["path"])
    ytr = pd.Categorical(train["label"], categories=classes).codes
    folds = np.arange(len(ytr)) % 5
    model = LogisticRegression(C=0.01, max_iter=500)
    oof = np.zeros((len(ytr), len(classes)))
    for f in range(5):
        oof[folds == f] = model.fit(xtr[folds != f], ytr[folds != f]).predict_proba(xtr[folds == f])
    run = workdir / "runs" / exp
    run.mkdir(parents=True, exist_ok=True)
    pd.concat([pd.DataFrame({"image_id": train["id"], "fold": folds, "label": train["label"]}),
               pd.DataFrame(oof, columns=classes)], axis=1).to_csv(run / "oof.csv", index=False)
    pd.concat([pd.DataFrame({"image_id": test["id"]}),
               pd.DataFrame(model.fit(xtr, ytr).predict_proba(xte), columns=classes)], axis=1
              ).to_csv(run / "test.csv", index=False)


@pytest.mark.slow
def test_comp_ensemble_label_shift_on_a_long_tailed_competition(tmp_path, imbalanced_competition, monkeypatch):
    """comp sample's long tail (8x) with its balanced hold-out: --label-shift auto finds the shift, scores better on
    the hold-out, and its ledger CV forecasts that score."""
    import json

    from click.testing import CliRunner
    from conftest import write_config

    from comp.cli import cli
    from comp.config import load_config
    from comp.infer import ledger
    from comp.infer.score import score_files

    write_config(tmp_path, imbalanced_competition)
    monkeypatch.chdir(tmp_path)
    pixel_member(tmp_path, load_config(tmp_path / "comp.yaml"), "lr")
    got = {}
    for mode in ("off", "auto"):
        r = CliRunner().invoke(cli, ["ensemble", "--exp", "lr", "--tune-bias", "--label-shift", mode,
                                     "--name", mode])
        assert r.exit_code == 0, r.output
        got[mode] = score_files(tmp_path / "submissions" / f"{mode}.csv", imbalanced_competition / "solution.csv",
                                imbalanced_competition / "sample_submission.csv")["macro_f1"]
    assert "label shift (black-box shift estimation" in r.output and "applied" in r.output
    rows = ledger.read(tmp_path / "submissions" / "ledger.csv").set_index("name")
    shift = json.loads(rows.loc["auto", "options"])["label_shift"]
    assert shift["applied"] and max(shift["test_prior"].values()) < 0.2  # balanced: 0.1 each
    assert got["auto"] > got["off"] + 0.01
    assert abs(float(rows.loc["auto", "cv_macro_f1"]) - got["auto"]) < 0.03
