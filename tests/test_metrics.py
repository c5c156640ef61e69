"""data.metric: the factory, directions, agreement with sklearn; qwk cut points and temperature scaling are
fit on an OOF and only their cross-validated gain is trusted; wide submissions are validated cell by cell."""

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import cohen_kappa_score, f1_score, log_loss, roc_auc_score

from comp.config import ConfigError, load_config
from comp.infer.decision import (
    apply_temperature,
    apply_thresholds,
    cv_temperature,
    cv_thresholds,
    default_cuts,
    expected_grade,
    fit_temperature,
)
from comp.infer.score import SubmissionError, score_frames
from comp.metrics import METRIC_NAMES, create_metric


def _oof(n=600, c=5, seed=0, sharp=3.0):
    """Ordinal OOF: true grade y, logits peaked at y with noise, then over-sharpened by ``sharp``."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    centre = y + rng.normal(0, 0.9, n)
    logits = -((np.arange(c)[None, :] - centre[:, None]) ** 2) * sharp
    return y, logits - logits.max(1, keepdims=True)


def test_factory_names_directions_and_sklearn():
    with pytest.raises(ValueError, match=r"Unknown metric 'f2', expected one of \('macro_f1', 'accuracy', 'log_loss'"):
        create_metric("f2")
    assert METRIC_NAMES == ("macro_f1", "accuracy", "log_loss", "qwk", "roc_auc")
    y, s = _oof()
    p = np.exp(s) / np.exp(s).sum(1, keepdims=True)
    classes = [str(k) for k in range(5)]
    assert create_metric("macro_f1")(y, p, classes) == pytest.approx(f1_score(y, p.argmax(1), average="macro"))
    assert create_metric("log_loss")(y, p, classes) == pytest.approx(log_loss(y, p), rel=1e-6)
    assert create_metric("qwk")(y, p, classes) == pytest.approx(cohen_kappa_score(y, p.argmax(1), weights="quadratic"))
    assert create_metric("roc_auc")(y, p, classes) == pytest.approx(roc_auc_score(y, p, multi_class="ovr"))
    ll = create_metric("log_loss")
    assert not ll.greater_is_better and ll.better(0.3, 0.5) and not ll.better(0.5, 0.3) and ll.better(0.9, None)
    assert create_metric("qwk").better(0.5, 0.3)
    with pytest.raises(ValueError, match="class 'cat' is not a number"):
        create_metric("qwk", ["0", "cat"])
    with pytest.raises(ValueError, match="scores probabilities"):
        create_metric("roc_auc").from_labels(y, y, classes)


def test_metric_key_is_validated(tmp_path):
    (tmp_path / "comp.yaml").write_text("data: {metric: f1}\n")
    with pytest.raises(ConfigError, match="data.metric: 'f1' is not one of 'macro_f1', 'accuracy'"):
        load_config(tmp_path / "comp.yaml")


def test_qwk_thresholds_beat_argmax_cross_validated():
    y, s = _oof(n=900, seed=1)
    p = np.exp(s) / np.exp(s).sum(1, keepdims=True)
    values = np.arange(5.0)
    # midpoint cuts on the expected grade are rounding; the fitted cuts keep their order
    assert (apply_thresholds(expected_grade(np.eye(5), values), default_cuts(values), values) == np.arange(5)).all()
    rep = cv_thresholds(p, y, values, n_splits=4, seed=0)
    assert np.all(np.diff(rep.params) > 0) and len(rep.params) == 4
    assert rep.in_sample >= rep.cv - 1e-9  # in-sample is the optimistic one
    assert rep.cv > rep.plain and rep.cv_gain > 0  # expected grade + tuned cuts beat argmax on ordinal noise


def test_temperature_undoes_over_confidence():
    y, s = _oof(n=900, seed=2, sharp=3.0)
    t = fit_temperature(s, y)
    assert t > 1.2  # over-sharpened logits get softened
    assert np.allclose(apply_temperature(s, t).sum(1), 1)
    rep = cv_temperature(s, y, n_splits=4, seed=0)
    assert rep.cv < rep.plain and rep.cv_gain > 0 and not rep.greater_is_better
    assert rep.params[0] == pytest.approx(t)


def test_wide_submission_is_validated_and_scored():
    ids = [f"i{k}" for k in range(6)]
    sol = pd.DataFrame({"id": ids, "label": ["a", "b", "c", "a", "b", "c"]})
    p = np.array([[.8, .1, .1], [.1, .8, .1], [.1, .1, .8], [.6, .3, .1], [.2, .2, .6], [.1, .1, .8]])
    sub = pd.DataFrame({"id": ids, "c": p[:, 2], "a": p[:, 0], "b": p[:, 1]})  # any column order
    res = score_frames(sub, sol, metric="log_loss")
    y = np.array([0, 1, 2, 0, 1, 2])
    assert res["shape"] == "wide" and res["score"] == pytest.approx(log_loss(y, p))
    assert res["accuracy"] == pytest.approx(5 / 6) and res["roc_auc"] == pytest.approx(
        roc_auc_score(y, p, multi_class="ovr"))
    bad = sub.astype(str)  # as read from a csv
    bad.loc[1, "a"] = "0.5"  # row sums to 1.4
    bad.loc[3, "b"] = "x"
    with pytest.raises(SubmissionError, match=r"(?s)non-number probability: line 5 'i3'.*do not sum to 1.*line 3 'i1'"):
        score_frames(bad, sol, metric="log_loss")
    with pytest.raises(SubmissionError, match=r"classes without a column: \['c'\]; columns that are not classes: "
                                              r"\['z'\]"):
        score_frames(sub.rename(columns={"c": "z"}), sol)
    # a label submission can't be scored by a probability metric, and says so
    with pytest.raises(SubmissionError, match="can't score roc_auc"):
        score_frames(sol.copy(), sol, metric="roc_auc")
