"""``comp ensemble``: blend experiments' fold-averaged probabilities into a submission and log it in the ledger.

Each member is an experiment E with ``runs/E/oof.csv`` (every train row once) and ``runs/E/test.csv`` (with
``use="full"``/``"both"``: ``runs/E/test_full.csv``/``test_both.csv`` of ``comp predict --use``, the full-data
models' test probabilities; weights, post-processing and the CV still come from the fold models' OOF, as the
full models have none, and the ledger says so: options ``use`` and ``cv_from: folds``). Weights
are fit on the OOF — ``auto`` is greedy forward selection with replacement (Caruana et al., 2004): start from
the best member, repeatedly add the member that most raises OOF macro F1, keep the best prefix; weights are
the counts, so they are non-negative and sum to 1 and a useless member gets 0. With several members the search
is cross-validated inside the OOF (``cv_weights``: refit on K-1 parts, scored on the part left out), and that
figure, not the flattering in-sample one, is the ledger's CV; both are recorded. ``tune_bias`` then fits one
additive log-score bias per class (comp.infer.decision) with an honest cross-validated estimate, and keeps them
only when that estimate beats plain argmax.

Blend methods (``method``), all giving log-scores whose argmax is the label:
  mean       log of the weighted mean of probabilities
  geometric  weighted mean of log-probabilities (renormalised)
  rank       log of the weighted mean of per-class ranks (each member's column ranked within OOF / test)
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.special import softmax
from sklearn.model_selection import StratifiedKFold

from comp.config import Config, ConfigError
from comp.data.competition import DataError, label_map, load_test, read_csv_str
from comp.errors import OutputExists
from comp.files import digest_file, record_recipe, same_recipe, write_csv
from comp.infer import ledger
from comp.infer.decision import (
    apply_temperature,
    apply_thresholds,
    cv_bias,
    cv_temperature,
    cv_thresholds,
    expected_grade,
    macro_f1,
)
from comp.infer.multilabel import ensemble_multilabel
from comp.infer.predict import USES, output_name
from comp.infer.score import SubmissionError, check_submission, check_wide
from comp.infer.shift import Shift, estimate_shift
from comp.metrics import grade_values
from comp.runs import run_dir, search_folds, untouched_rows
from comp.tasks import competition_metric
from comp.tasks.blend import EPS, METHODS, blend, rank
from comp.tasks.blend import greedy_weights as greedy_search

SUBMISSIONS_DIR = Path("submissions")
__all__ = ["EPS", "METHODS", "blend", "greedy_weights"]


@dataclass
class Member:
    exp: str
    classes: list[str]
    oof: pd.DataFrame  # index: id; columns: label + classes
    test: pd.DataFrame  # index: id; columns: classes
    note: str = ""  # why its OOF may not match its test (views)
    folds: pd.Series | None = None  # index: id; the fold each OOF row was held out in
    chosen_on: tuple = ()  # the folds a search chose this config on (runs/E/config.yaml search.folds)


def _class_cols(df: pd.DataFrame, skip: Sequence[str]) -> list[str]:
    return [c for c in df.columns if c not in skip]


def _predict_command(exp: str, use: str) -> str:
    """The `comp predict` that writes experiment ``exp``'s test probabilities of ``use``."""
    return f"comp predict --exp {exp}" + ("" if use == "folds" else f" --use {use}")


def load_member(cfg: Config, exp: str, use: str = "folds") -> Member:
    """Read ``runs/E/oof.csv`` and the test probabilities of ``use`` (``runs/E/test.csv``, ``test_full.csv`` or
    ``test_both.csv``) and check they agree on the classes."""
    if use not in USES:
        raise ConfigError(f"--use {use!r}: expected one of {', '.join(USES)}")
    d = cfg.data
    run = run_dir(exp)
    oof_path, test_path = run / "oof.csv", run / output_name(use)
    if not oof_path.exists():
        raise DataError(f"{oof_path} not found: train the experiment first (comp train --exp {exp} --all-folds)")
    if not test_path.exists():
        first = f"comp train --exp {exp} --full, then " if use != "folds" and not any(run.glob("full_s*/done.json")) \
            else ""
        raise DataError(f"{test_path} not found: predict the test first ({first}{_predict_command(exp, use)})")
    oof = read_csv_str(oof_path)
    test = read_csv_str(test_path)
    for col in (d.id_col, "fold", d.label_col):
        if col not in oof.columns:
            raise DataError(f"{oof_path}: no column '{col}'; columns are: {', '.join(oof.columns)}")
    if d.id_col not in test.columns:
        raise DataError(f"{test_path}: no column '{d.id_col}'; columns are: {', '.join(test.columns)}")
    classes = _class_cols(oof, (d.id_col, "fold", d.label_col))
    test_classes = _class_cols(test, (d.id_col,))
    if sorted(classes) != sorted(test_classes):
        raise DataError(f"{oof_path} and {test_path} have different class columns; re-run comp predict --exp {exp} "
                        "--overwrite")
    classes = sorted(classes)
    for path, df in ((oof_path, oof), (test_path, test)):
        dup = df[d.id_col][df[d.id_col].duplicated()]
        if len(dup):
            raise DataError(f"{path}: id {dup.iloc[0]!r} appears more than once")
    try:
        oof_p = oof[classes].astype(float)
        test_p = test[classes].astype(float)
    except ValueError as e:
        raise DataError(f"{run}: a probability cell is not a number ({e})") from None
    note = ""
    info_path = run / "predict.json"
    if info_path.exists():
        info = json.loads(info_path.read_text(encoding="utf-8"))
        tv = info.get("test_views") if use == "folds" else info.get("outputs", {}).get(test_path.name, {}).get("views")
        ov = info.get("oof_views", ["identity"])
        if tv and tv != ov:
            note = (f"{exp}: {test_path.name} used views {tv} but oof.csv {ov}; to fit weights on what the test sees "
                    f"run comp predict --exp {exp} --tta {','.join(tv)} --oof --overwrite")
    return Member(
        exp=exp,
        classes=classes,
        oof=pd.concat([oof[[d.label_col]], oof_p], axis=1).set_index(oof[d.id_col]),
        test=test_p.set_index(test[d.id_col]),
        note=note,
        folds=pd.Series(pd.to_numeric(oof["fold"], errors="coerce").to_numpy(), index=oof[d.id_col]),
        chosen_on=tuple(search_folds(run)),
    )


def greedy_weights(
    probs: Sequence[np.ndarray], y: np.ndarray, method: str = "mean", steps: int = 40,
    objective: Callable[[np.ndarray], float] | None = None,
) -> np.ndarray:
    """comp.tasks.blend.greedy_weights over ``method``'s blend: maximises ``objective`` of the blend's log-scores
    (default: OOF macro F1 of the argmax)."""
    c = probs[0].shape[1]
    if method == "rank":  # ranks are a fixed transform: compute once, then blend by mean
        probs, method = [rank(p) for p in probs], "mean"
    if objective is None:
        def objective(scores):
            return macro_f1(y, scores.argmax(1), c)

    return greedy_search(probs, objective, steps, combine=lambda ps, w: blend(ps, w, method))


@dataclass
class WeightsCV:
    """The greedy weight search judged honestly: fit on K-1 parts of the OOF, scored on the part it did not see."""

    in_sample: float  # data.metric (higher-is-better sign applied back) of the weights fit on all the OOF
    cv: float  # the same metric of the out-of-part blends, concatenated
    in_sample_f1: float
    cv_f1: float
    fold_weights: list


def cv_weights(
    probs: Sequence[np.ndarray], y: np.ndarray, method: str, score: Callable[[np.ndarray, np.ndarray], float],
    weights: np.ndarray, n_splits: int = 5, seed: int = 0, class_weight: np.ndarray | None = None,
) -> WeightsCV:
    """Cross-validate ``greedy_weights`` inside the OOF (as ``cv_bias`` does for biases).

    ``score(y_part, log_scores_part)`` is data.metric with higher-is-better sign; ``weights`` are the ones fit
    on all rows. Once several experiments compete, weights fit and scored on the same OOF flatter the blend.
    """
    y = np.asarray(y, np.int64)
    c = probs[0].shape[1]
    counts = np.bincount(y, minlength=c)
    n_splits = int(max(2, min(n_splits, counts[counts > 0].min())))
    held = np.empty((len(y), c))
    fold_weights = []
    for tr, va in StratifiedKFold(n_splits, shuffle=True, random_state=seed).split(probs[0], y):
        w = greedy_weights([p[tr] for p in probs], y[tr], method, objective=lambda sc, yt=y[tr]: score(yt, sc))
        # Rank blends rank within the rows they see: rank the held-out part on its own, as a test set would be.
        held[va] = blend([p[va] for p in probs], w, method)
        fold_weights.append(w)
    full = blend(probs, weights, method)
    return WeightsCV(in_sample=score(y, full), cv=score(y, held),
                     in_sample_f1=macro_f1(y, full.argmax(1), c, class_weight),
                     cv_f1=macro_f1(y, held.argmax(1), c, class_weight), fold_weights=fold_weights)


def signed_score(metric, classes: list[str], class_weight: np.ndarray | None = None
                 ) -> Callable[[np.ndarray, np.ndarray], float]:
    """data.metric of (labels, probabilities) with higher-is-better sign; macro F1 by bincount (the weight and
    bias searches call it thousands of times; sklearn's takes ~1 ms a call and gives the same value), reweighted
    to an estimated test prior by ``class_weight`` (macro F1 only: comp.infer.shift)."""
    if metric.name == "macro_f1":
        return lambda yt, p: macro_f1(yt, np.asarray(p).argmax(1), len(classes), class_weight)
    return lambda yt, p: metric.sign * metric(yt, p, classes)


@dataclass
class Rule:
    """What the ensemble learns from an OOF: the weights, then a decision rule (biases, qwk thresholds or a
    temperature) kept only when its cross-validated gain on those same rows is positive."""

    weights: np.ndarray
    what: str | None  # "bias" | "thresholds" | "temperature" | None
    params: np.ndarray | None
    applied: bool
    report: object = None  # the decision's BiasReport / TuneReport on the rows it was fit on

    def output(self, probs: Sequence[np.ndarray], method: str, values: np.ndarray | None = None) -> np.ndarray:
        """Probabilities whose argmax is the submitted label (one-hot where qwk thresholds pick the grade)."""
        scores = blend(probs, self.weights, method)
        if not self.applied:
            return softmax(scores, axis=1)
        if self.what == "bias":
            return softmax(scores + self.params, axis=1)
        if self.what == "temperature":
            return apply_temperature(scores, float(self.params[0]))
        labels = apply_thresholds(expected_grade(softmax(scores, axis=1), values), self.params, values)
        return np.eye(scores.shape[1])[labels]


def fit_rule(probs: Sequence[np.ndarray], y: np.ndarray, method: str, fixed: np.ndarray | None, what: str | None,
             score: Callable[[np.ndarray, np.ndarray], float], n_splits: int = 5, seed: int = 0,
             values: np.ndarray | None = None, class_weight: np.ndarray | None = None) -> Rule:
    """Everything ``comp ensemble`` fits on ``probs``/``y``: auto weights (greedy on ``score(y, probs)``, data.metric
    with higher-is-better sign) unless ``fixed``, then the decision ``what``, applied only when its CV gain inside
    these rows is positive (the apply/skip choice is part of the rule)."""
    y = np.asarray(y, np.int64)
    if fixed is not None:
        w = np.asarray(fixed, np.float64)
    elif len(probs) > 1:
        w = greedy_weights(probs, y, method, objective=lambda sc: score(y, softmax(sc, axis=1)))
    else:
        w = np.ones(1)
    if what is None:
        return Rule(w, None, None, False)
    scores = blend(probs, w, method)
    if what == "bias":
        rep = cv_bias(scores, y, n_splits=n_splits, seed=seed, class_weight=class_weight)
        return Rule(w, what, rep.bias, rep.cv_gain > 0, rep)
    if what == "thresholds":
        rep = cv_thresholds(softmax(scores, axis=1), y, values, n_splits=n_splits, seed=seed)
    else:
        rep = cv_temperature(scores, y, n_splits=n_splits, seed=seed)
    return Rule(w, what, rep.params, rep.cv_gain > 0, rep)


@dataclass
class NestedCV:
    """One nested loop over the OOF: the whole rule (weights, decision and its apply/skip choice) refit on K-1
    parts and scored on the part left out; the pooled figure includes every choice the rule makes."""

    in_sample: float  # data.metric (natural sign) of the rule fit on every row, scored on them: optimistic
    cv: float  # data.metric (natural sign) of the out-of-part outputs, pooled: the honest figure
    in_sample_f1: float
    cv_f1: float
    parts: int
    applied_parts: int  # in how many outer parts the decision was applied
    rows: int  # rows scored


def nested_cv(probs: Sequence[np.ndarray], y: np.ndarray, method: str, fixed: np.ndarray | None, what: str | None,
              metric, classes: list[str], n_splits: int = 5, seed: int = 0, values: np.ndarray | None = None,
              full: Rule | None = None, class_weight: np.ndarray | None = None) -> NestedCV:
    """Cross-validate ``fit_rule`` end to end (``full``: the rule fit on every row, for the in-sample figure);
    every figure reweighted by ``class_weight`` when given (comp.infer.shift)."""
    y = np.asarray(y, np.int64)
    c = probs[0].shape[1]
    cw = class_weight

    score = signed_score(metric, classes, cw)
    counts = np.bincount(y, minlength=c)
    k = int(max(2, min(n_splits, counts[counts > 0].min())))
    held = np.empty((len(y), c))
    applied = 0
    for tr, va in StratifiedKFold(k, shuffle=True, random_state=seed).split(probs[0], y):
        rule = fit_rule([p[tr] for p in probs], y[tr], method, fixed, what, score, n_splits, seed, values, cw)
        held[va] = rule.output([p[va] for p in probs], method, values)  # rank blends rank the part on its own
        applied += rule.applied
    full = full or fit_rule(probs, y, method, fixed, what, score, n_splits, seed, values, cw)
    inside = full.output(probs, method, values)
    return NestedCV(in_sample=metric.sign * score(y, inside), cv=metric.sign * score(y, held),
                    in_sample_f1=macro_f1(y, inside.argmax(1), c, cw), cv_f1=macro_f1(y, held.argmax(1), c, cw),
                    parts=k, applied_parts=applied, rows=len(y))


def parse_weights(weights: str | Sequence[float], n: int) -> np.ndarray | None:
    """None for ``auto``; else ``n`` non-negative numbers (a string ``w1,w2,...``), normalised to sum 1."""
    if isinstance(weights, str):
        if weights.strip().lower() == "auto":
            return None
        try:
            w = [float(x) for x in weights.split(",") if x.strip()]
        except ValueError:
            raise ConfigError(f"--weights {weights!r}: expected 'auto' or numbers like 0.7,0.3") from None
    else:
        w = [float(x) for x in weights]
    if len(w) != n:
        raise ConfigError(f"--weights lists {len(w)} number(s) for {n} --exp member(s); give one per --exp, in order")
    if any(x < 0 or not np.isfinite(x) for x in w) or sum(w) <= 0:
        raise ConfigError(f"--weights {weights!r}: weights must be non-negative with a positive sum")
    w = np.asarray(w)
    return w / w.sum()


def _sample_frame(cfg: Config, classes: list[str]) -> tuple[pd.DataFrame, str, str, str | None]:
    """The sample submission (cells as written), its id column, its shape (``label`` or ``wide``) and the label
    column to fill (None when wide: one probability column per class, matched to the class names exactly)."""
    d = cfg.data
    if not d.sample_submission:
        test = load_test(cfg)
        return pd.DataFrame({d.id_col: test["id"], d.label_col: ""}), d.id_col, "label", d.label_col
    path = cfg.root / d.sample_submission
    sample = read_csv_str(path)
    if d.id_col not in sample.columns:
        raise DataError(f"{path}: no id column '{d.id_col}' (data.id_col); columns are: {', '.join(sample.columns)}")
    others = [c for c in sample.columns if c != d.id_col]
    if d.label_col in others and len(others) == 1:
        return sample, d.id_col, "label", d.label_col
    if len(others) == 1 and others[0] not in classes:
        return sample, d.id_col, "label", others[0]
    if set(others) == set(classes) and len(others) == len(classes):
        return sample, d.id_col, "wide", None
    if len(others) >= 2 and d.label_col in others:
        return sample, d.id_col, "label", d.label_col
    only_sample = sorted(set(others) - set(classes))
    only_train = sorted(set(classes) - set(others))
    raise DataError(
        f"{path} has {len(others)} columns besides '{d.id_col}' and they are not the {len(classes)} classes, so "
        f"neither a label column nor one probability column per class can be written: columns that are not "
        f"classes: {only_sample[:12]}; classes without a column: {only_train[:12]}. Class names must match the "
        f"column names exactly (data.label_col / data.label_cols)"
    )


def _as_sample_writes(labels: np.ndarray, sample: pd.DataFrame, col: str) -> np.ndarray:
    """Class names typed as the sample's label cells are: ``3`` (not ``3.0``) where the sample writes integers. A name
    written as an integer stays as written: ``007`` is the class 007, never 7 (found by the competition fuzzer)."""
    cells = sample[col].astype(str).str.strip()
    if len(cells) and cells.str.fullmatch(r"-?\d+").all():
        def as_int(x):
            if re.fullmatch(r"-?\d+", str(x)):
                return x
            try:
                f = float(x)
            except ValueError:
                return x
            return str(int(f)) if f.is_integer() else x
        return np.array([as_int(x) for x in labels], dtype=object)
    return labels


@dataclass
class _Inputs:
    """What the blend reads: the members' aligned OOF and test probabilities, the labels and the sample."""

    members: list[Member]
    classes: list[str]
    y: np.ndarray
    oof_probs: list[np.ndarray]
    test_probs: list[np.ndarray]
    metric: Callable
    sample: pd.DataFrame
    id_col: str
    shape: str
    label_col: str | None
    scored: np.ndarray | None = None  # the OOF rows the CV scores (those no member's search chose on)
    shift: Shift | None = None  # the test's estimated class prior (comp.infer.shift); every OOF figure reweighted

    @property
    def class_weight(self) -> np.ndarray | None:
        return self.shift.weight if self.shift is not None and self.shift.applied else None


@dataclass
class _Fit:
    """The weights, the blend they give, and its in-sample (and, with auto weights, cross-validated) figures."""

    w: np.ndarray
    oof_scores: np.ndarray
    test_scores: np.ndarray
    member_f1: dict
    member_score: dict
    blend_f1: float
    blend_score: float
    wcv: WeightsCV | None
    base_f1: float
    base_score: float


@dataclass
class _Decision:
    """What decision tuning applied to the blend: the submission's labels/probabilities and its CV figures."""

    bias: np.ndarray
    report: object
    tuned: object
    applied: bool
    cv_f1: float
    cv_score: float
    test_probs_out: np.ndarray
    labels: np.ndarray
    nested: NestedCV | None = None


def _check_args(cfg: Config, exps: Sequence[str], weights, method: str, name: str | None, overwrite: bool,
                tune_bias: bool, tune_thresholds: bool, temperature: bool) -> tuple[list[str], np.ndarray | None, Path]:
    """The experiments, the given weights (None for auto) and the output path; ConfigError on a wrong flag."""
    if not name or not re.fullmatch(r"[\w.-]+", name):
        raise ConfigError(f"--name {name!r}: use letters, digits, '-', '_' and '.' only")
    if method not in METHODS:
        raise ConfigError(f"--method {method!r}: expected one of {', '.join(METHODS)}")
    exps = list(exps)
    if not exps:
        raise ConfigError("name at least one experiment: --exp E (repeatable)")
    if len(set(exps)) != len(exps):
        raise ConfigError(f"--exp lists an experiment twice ({exps}); weights say how much each counts")
    fixed = parse_weights(weights, len(exps))
    for flag, on, want in (("--tune-bias", tune_bias, "macro_f1"), ("--tune-thresholds", tune_thresholds, "qwk"),
                           ("--temperature", temperature, "log_loss")):
        if on and cfg.data.metric != want:
            raise ConfigError(f"{flag} tunes {want}, but data.metric is {cfg.data.metric}; it would optimise the "
                              f"wrong figure (set data.metric: {want}, or leave {flag} out)")
    out_path = SUBMISSIONS_DIR / f"{name}.csv"
    if out_path.exists() and not overwrite:
        raise OutputExists(f"{out_path} already exists; choose another --name or pass --overwrite to replace it")
    return exps, fixed, out_path


def _check_members(members: list[Member], label_col: str) -> None:
    """Every member has the first one's classes, train ids and labels."""
    first = members[0]
    classes, ids = first.classes, first.oof.index
    for mb in members[1:]:
        if mb.classes != classes:
            raise DataError(f"runs/{mb.exp} has classes {mb.classes}, runs/{first.exp} has {classes}; "
                            "only experiments on the same classes can be blended")
        if len(mb.oof) != len(ids) or not mb.oof.index.isin(ids).all():
            extra = mb.oof.index[~mb.oof.index.isin(ids)].tolist() + ids[~ids.isin(mb.oof.index)].tolist()
            raise DataError(f"runs/{mb.exp}/oof.csv and runs/{first.exp}/oof.csv cover different train ids "
                            f"(e.g. {extra[:3]}); train both on the same rows (same --skip-bad)")
        if not (mb.oof.loc[ids, label_col].to_numpy() == first.oof[label_col].to_numpy()).all():
            raise DataError(f"runs/{mb.exp}/oof.csv labels differ from runs/{first.exp}/oof.csv's")


def _load_inputs(cfg: Config, exps: list[str], use: str, echo: Callable[[str], None]) -> _Inputs:
    """Load and check the members, then align their OOF to the first's ids and their test to the sample's."""
    d = cfg.data
    members = [load_member(cfg, e, use) for e in exps]
    _check_members(members, d.label_col)
    first = members[0]
    classes, ids = first.classes, first.oof.index
    for mb in members:
        if mb.note:
            echo(f"note: {mb.note}")
    if use != "folds":
        echo(f"test probabilities: runs/E/{output_name(use)} ({use}); weights and CV: the fold models' OOF "
             f"(the full models have none)")
    unknown = sorted(set(first.oof[d.label_col]) - set(classes))
    if unknown:
        raise DataError(f"runs/{first.exp}/oof.csv has labels {unknown[:3]} that are not class columns")
    y = pd.Categorical(first.oof[d.label_col], categories=classes).codes.astype(np.int64)
    oof_probs = [mb.oof.loc[ids, classes].to_numpy() for mb in members]

    metric = competition_metric(cfg, classes)
    sample, id_col, shape, label_col = _sample_frame(cfg, classes)
    test_ids = sample[id_col].str.strip()
    test_probs = []
    for mb in members:
        missing = test_ids[~test_ids.isin(mb.test.index)]
        if len(missing):
            raise DataError(f"runs/{mb.exp}/{output_name(use)} lacks {len(missing)} id(s) of the sample submission "
                            f"(e.g. {missing.iloc[0]!r}); re-run {_predict_command(mb.exp, use)} --overwrite")
        test_probs.append(mb.test.loc[test_ids, classes].to_numpy())
    return _Inputs(members=members, classes=classes, y=y, oof_probs=oof_probs, test_probs=test_probs,
                   metric=metric, sample=sample, id_col=id_col, shape=shape, label_col=label_col,
                   scored=untouched_rows({mb.exp: mb.chosen_on for mb in members}, first.folds.loc[ids].to_numpy(),
                                         echo))


def _fit_weights(inp: _Inputs, exps: list[str], fixed: np.ndarray | None, method: str, bias_folds: int, seed: int,
                 echo: Callable[[str], None]) -> _Fit:
    """Weights (greedy on data.metric, or the given ones), the members' and blend's OOF figures, printed as a
    table, and with auto weights over several members their honest cross-validated figure."""
    y, classes, metric, oof_probs = inp.y, inp.classes, inp.metric, inp.oof_probs
    n_c = len(classes)

    cw = inp.class_weight
    fast = signed_score(metric, classes, cw)

    def objective(scores):  # data.metric of blended log-scores, higher is better
        return fast(y, softmax(scores, axis=1))

    members = inp.members
    member_f1 = {mb.exp: macro_f1(y, blend([p], [1], method).argmax(1), n_c, cw) for mb, p in zip(members, oof_probs)}
    member_score = {mb.exp: metric.sign * objective(blend([p], [1], method)) for mb, p in zip(members, oof_probs)}
    w = greedy_weights(oof_probs, y, method, objective=objective) if fixed is None else fixed
    oof_scores = blend(oof_probs, w, method)
    test_scores = blend(inp.test_probs, w, method)
    blend_f1 = macro_f1(y, oof_scores.argmax(1), n_c, cw)
    blend_score = metric.sign * objective(oof_scores)

    width = max(len("blend"), *(len(e) for e in exps))
    how = "auto" if fixed is None else "given"
    head = f"OOF {metric.name}" + ("" if metric.name == "macro_f1" else "  macro F1")
    echo(f"{'member':<{width}}  weight  {head}   (method {method}, weights {how}, on data.metric {metric.name})")
    for e, wi in zip(exps, w):
        echo(f"{e:<{width}}  {wi:6.3f}  {member_score[e]:.4f}"
             + ("" if metric.name == "macro_f1" else f"    {member_f1[e]:.4f}"))
    echo(f"{'blend':<{width}}  {'':6}  {blend_score:.4f}"
         + ("" if metric.name == "macro_f1" else f"    {blend_f1:.4f}"))

    # Honest CV of the weights: with several members, auto weights are searched again inside K-1 parts of
    # the OOF and scored on the part left out; that figure, not the in-sample one, heads the ledger.
    wcv = None
    base_f1, base_score = blend_f1, blend_score
    if fixed is None and len(members) > 1:
        wcv = cv_weights(oof_probs, y, method, lambda yt, sc: fast(yt, softmax(sc, axis=1)),
                         w, n_splits=bias_folds, seed=seed, class_weight=cw)
        base_f1, base_score = wcv.cv_f1, metric.sign * wcv.cv
        echo(f"weights: in-sample {metric.name} {blend_score:.4f}, cross-validated {base_score:.4f} "
             f"(searched again on {len(wcv.fold_weights)} parts of the OOF, scored on the part left out)")
    return _Fit(w=w, oof_scores=oof_scores, test_scores=test_scores, member_f1=member_f1, member_score=member_score,
                blend_f1=blend_f1, blend_score=blend_score, wcv=wcv, base_f1=base_f1, base_score=base_score)


def _label_shift(inp: _Inputs, mode: str, method: str, echo: Callable[[str], None]) -> Shift | None:
    """The test's estimated class prior from the equal-weight blend (None with ``off``)."""
    if mode not in ("off", "on", "auto"):
        raise ConfigError(f"--label-shift {mode!r}: expected off, on or auto")
    if mode == "off":
        return None
    if inp.metric.name != "macro_f1":
        if mode == "on":
            raise ConfigError(f"--label-shift on reweights macro F1; data.metric is {inp.metric.name}: drop the flag")
        echo(f"label shift: not estimated (data.metric {inp.metric.name}; it reweights macro F1 only)")
        return None
    even = np.full(len(inp.oof_probs), 1.0 / len(inp.oof_probs))
    sh = estimate_shift(blend(inp.oof_probs, even, method), inp.y, blend(inp.test_probs, even, method), mode)
    echo(sh.summary(inp.classes))
    return sh


def _decision_kind(inp: _Inputs, tune_bias: bool, tune_thresholds: bool, temperature: bool,
                   echo: Callable[[str], None]) -> str | None:
    """The one decision rule asked for (each needs its own data.metric, so at most one is on)."""
    if tune_thresholds and inp.shape == "wide":
        echo("thresholds not applied: a wide submission holds probabilities, not grades")
        return None
    return "bias" if tune_bias else "thresholds" if tune_thresholds else "temperature" if temperature else None


NOT_APPLIED = {"bias": "biases not applied: their cross-validated macro F1 does not beat argmax",
               "thresholds": "thresholds not applied: their cross-validated qwk does not beat argmax",
               "temperature": "temperature not applied: its cross-validated log loss does not beat T = 1"}


def _tune_decision(inp: _Inputs, fit: _Fit, fixed: np.ndarray | None, method: str, what: str | None,
                   bias_folds: int, seed: int, echo: Callable[[str], None]) -> _Decision:
    """The rule fit on every OOF row (the weights of ``fit``; biases, thresholds or a temperature kept only when
    their cross-validated gain is positive) gives the submission; its CV is one nested loop that refits all of
    it, the apply/skip choice included, on K-1 parts and scores the part left out."""
    classes, y, metric = inp.classes, inp.y, inp.metric
    values = grade_values(classes) if what == "thresholds" else None

    cw = inp.class_weight
    score = signed_score(metric, classes, cw)
    rule = fit_rule(inp.oof_probs, y, method, fit.w, what, score, bias_folds, seed, values, cw)
    if rule.report is not None:
        echo(rule.report.summary(classes) if what == "bias" else rule.report.summary())
        if not rule.applied:  # the in-sample gain did not survive cross-validation: it was fitting noise
            echo(NOT_APPLIED[what])
    rows = inp.scored if inp.scored is not None else np.arange(len(y))
    probs = [p[rows] for p in inp.oof_probs]
    nested = nested_cv(probs, y[rows], method, fixed, what, metric, classes, bias_folds, seed,
                       values, None if len(rows) < len(y) else rule, cw)
    if what is not None or fixed is None and len(probs) > 1 or len(rows) < len(y):
        echo(f"nested CV {metric.name} {nested.cv:.4f} (in-sample {nested.in_sample:.4f}): "
             + ("weights" if fixed is None and len(probs) > 1 else "given weights")
             + (f", {what} and whether to apply it" if what else "")
             + f" refit on each of {nested.parts} parts of {nested.rows} OOF rows, scored on the part left out"
             + (f"; applied in {nested.applied_parts} of {nested.parts} parts" if what else ""))
    bias = rule.params if what == "bias" and rule.applied else np.zeros(len(classes))
    test_probs_out = rule.output(inp.test_probs, method, values)
    if what == "thresholds" and rule.applied:
        test_probs_out = softmax(fit.test_scores, axis=1)  # the labels come from the cut points, not the argmax
        labels_idx = apply_thresholds(expected_grade(test_probs_out, values), rule.params, values)
    else:
        labels_idx = test_probs_out.argmax(1)
    labels = np.asarray(classes, dtype=object)[labels_idx]
    return _Decision(bias=bias, report=rule.report if what == "bias" else None,
                     tuned=rule.report if what in ("thresholds", "temperature") else None,
                     applied=rule.applied, cv_f1=nested.cv_f1, cv_score=nested.cv,
                     test_probs_out=test_probs_out, labels=labels, nested=nested)


def _write_submission(inp: _Inputs, dec: _Decision, out_path: Path) -> pd.DataFrame:
    """The sample filled with the blend's labels (or probabilities, when wide), validated and written."""
    sample, id_col, classes, label_col = inp.sample, inp.id_col, inp.classes, inp.label_col
    sub = sample.copy()
    header = [str(c) for c in sample.columns]
    try:
        if inp.shape == "wide":
            sub[classes] = dec.test_probs_out / dec.test_probs_out.sum(1, keepdims=True)
            check_wide(sub, sample[id_col].tolist(), id_col, classes, header=header)
        else:
            sub[label_col] = _as_sample_writes(dec.labels, sample, label_col)
            written = list(_as_sample_writes(np.asarray(classes, dtype=object), sample, label_col))
            check_submission(sub, sample[id_col].tolist(), id_col, label_col, classes=written, header=header)
    except SubmissionError as e:
        raise DataError(f"the blended submission failed validation: {e}") from None
    write_csv(out_path, sub, float_format="%.7g")
    return sub


def _ledger_options(inp: _Inputs, fit: _Fit, dec: _Decision, use: str, method: str, fixed: np.ndarray | None,
                    tune_bias: bool, bias_folds: int) -> dict:
    """The ledger row's options: how the blend was made and every in-sample and cross-validated figure."""
    metric, classes, wcv, report, tuned = inp.metric, inp.classes, fit.wcv, dec.report, dec.tuned
    options = {
        "use": use,  # whose test probabilities: the fold models', the full-data models' or both
        "cv_from": "folds",  # weights and every CV figure: the fold models' OOF (full models have none)
        "method": method,
        "weights": "auto" if fixed is None else "given",
        "tune_bias": tune_bias,
        "oof_macro_f1": round(fit.blend_f1, 5),
        "members_oof_macro_f1": {k: round(v, 5) for k, v in fit.member_f1.items()},
        f"oof_{metric.name}": round(fit.blend_score, 5),
        f"members_oof_{metric.name}": {k: round(v, 5) for k, v in fit.member_score.items()},
    }
    if wcv is not None:
        options.update(weights_in_sample=round(wcv.in_sample * metric.sign, 5),
                       weights_cv=round(wcv.cv * metric.sign, 5), weights_in_sample_f1=round(wcv.in_sample_f1, 5),
                       weights_cv_f1=round(wcv.cv_f1, 5))
    if report is not None:
        options.update(bias_applied=bool(dec.bias.any()),
                       bias={c: round(float(b), 3) for c, b in zip(classes, dec.bias)},
                       bias_argmax_f1=round(report.argmax_f1, 5), bias_in_sample_f1=round(report.in_sample_f1, 5),
                       bias_cv_f1=round(report.cv_f1, 5), bias_folds=bias_folds)
    chosen = {mb.exp: list(mb.chosen_on) for mb in inp.members if mb.chosen_on}
    if chosen:  # members chosen by a search: the CV is over the folds none of them was chosen on
        options.update(search_folds=chosen, cv_selected_in_sample=len(inp.scored) == len(inp.y),
                       cv_all_folds_optimistic=round(fit.base_score, 5))
    if inp.shift is not None:
        sh = inp.shift
        options["label_shift"] = {"applied": bool(sh.applied), "total_variation": round(sh.tv, 4),
                                  "test_prior": {c: round(float(q), 4) for c, q in zip(classes, sh.test_prior)},
                                  "train_prior": {c: round(float(p), 4) for c, p in zip(classes, sh.train_prior)}}
    nested = dec.nested
    options.update(nested_cv=round(nested.cv, 5), nested_cv_f1=round(nested.cv_f1, 5),
                   nested_in_sample=round(nested.in_sample, 5), nested_parts=nested.parts,
                   nested_applied_parts=nested.applied_parts, nested_rows=nested.rows)
    if tuned is not None:
        options[tuned.what] = dict(plain=round(tuned.plain, 5), in_sample=round(tuned.in_sample, 5),
                                   cv=round(tuned.cv, 5), values=[round(float(x), 4) for x in tuned.params],
                                   applied=dec.applied)
    return options


def _echo_written(cfg: Config, inp: _Inputs, dec: _Decision, out_path: Path, n_rows: int,
                  echo: Callable[[str], None]) -> None:
    """Say what was written and the submission's CV."""
    metric, shape = inp.metric, inp.shape
    dist = pd.Series(dec.labels).value_counts()
    names = label_map(cfg)
    what = "one probability column per class" if shape == "wide" else f"label column {inp.label_col}"
    echo(f"wrote {out_path}: {n_rows} rows, {shape} shape ({what}); predicted classes: "
         + ", ".join(f"{names.get(k, k)} {v}" for k, v in dist.items()))
    prior = " at the test's estimated class prior (label shift)" if inp.class_weight is not None else ""
    if metric.name == "macro_f1":
        echo(f"cv macro F1 of this submission{prior}: {dec.cv_f1:.4f} (logged in {SUBMISSIONS_DIR / 'ledger.csv'})")
    else:
        echo(f"cv {metric.name} of this submission: {dec.cv_score:.4f}, macro F1 {dec.cv_f1:.4f} "
             f"(logged in {SUBMISSIONS_DIR / 'ledger.csv'})")


def _multilabel(cfg: Config, exps, weights, method: str, tune_bias: bool, temperature: bool, name, overwrite: bool,
                bias_folds: int, echo, use: str) -> dict:
    """The multi-label ensemble, after the flags that only single-label blends take are refused."""
    for flag, on in (("--method " + method, method != "mean"), ("--tune-bias", tune_bias),
                     ("--temperature", temperature)):
        if on:
            raise ConfigError(f"{flag} is for single-label competitions; a multi-label blend is the weighted mean of "
                              "sigmoid probabilities with per-class thresholds (always cross-validated)")
    exps = list(exps)
    if not exps or len(set(exps)) != len(exps):
        raise ConfigError(f"--exp must name each experiment once (got {exps})")
    return ensemble_multilabel(cfg, exps, parse_weights(weights, len(exps)), name, overwrite, echo, use,
                               n_splits=bias_folds)


def ensemble(
    cfg: Config,
    exps: Sequence[str],
    weights: str | Sequence[float] = "auto",
    method: str = "mean",
    tune_bias: bool = False,
    name: str | None = None,
    overwrite: bool = False,
    bias_folds: int = 5,
    echo: Callable[[str], None] = print,
    tune_thresholds: bool = False,
    temperature: bool = False,
    use: str = "folds",
    label_shift: str = "off",
) -> dict:
    """Blend ``exps`` into ``submissions/NAME.csv``, validate it, log it in ``submissions/ledger.csv``.

    use: whose test probabilities are blended: ``folds`` (runs/E/test.csv), ``full`` (test_full.csv) or ``both``
    (test_both.csv); weights and the CV come from the folds' OOF either way.
    weights: ``auto`` (greedy on OOF macro F1) or one number per experiment. method: mean, geometric, rank.
    tune_bias: per-class log-score biases fit on the OOF, their gain estimated with ``bias_folds``-fold CV;
    applied only when that cross-validated gain is positive.
    label_shift: ``off``, ``on`` or ``auto`` (on past noise: comp.infer.shift): the test's class prior estimated
    from the blend's test predictions; weights, biases and every CV figure are then those of that prior (macro F1).
    Returns the figures printed (members' and blend's OOF macro F1, weights, bias report, paths).

    data.task multilabel: comp.infer.multilabel.ensemble_multilabel (mean blend, per-class thresholds).
    """
    recipe = _recipe(cfg, exps, weights, method, tune_bias, tune_thresholds, temperature, use, label_shift,
                     bias_folds)
    out = SUBMISSIONS_DIR / f"{name}.csv"
    if name and re.fullmatch(r"[\w.-]+", name) and not overwrite and same_recipe(out, recipe):
        echo(f"{out} already made by this blend of the same predictions; nothing to do (pass --overwrite to blend "
             f"again)")
        return {"path": str(out), "name": name, "members": list(exps), "already": True}
    res = _blend(cfg, exps, weights, method, tune_bias, name, overwrite, bias_folds, echo, tune_thresholds,
                 temperature, use, label_shift)
    record_recipe(out, recipe)
    return res


def _recipe(cfg: Config, exps, weights, method, tune_bias, tune_thresholds, temperature, use, label_shift,
            bias_folds) -> dict:
    """What a submission is made from: the options and each member's OOF and test predictions (comp.files)."""
    files = [run_dir(e) / f for e in exps for f in ("oof.csv", output_name(use))]
    return {"command": "ensemble", "exps": list(exps), "weights": str(weights), "method": method,
            "tune_bias": tune_bias, "tune_thresholds": tune_thresholds, "temperature": temperature, "use": use,
            "label_shift": label_shift, "bias_folds": bias_folds, "data": cfg.to_dict()["data"],
            "folds_seed": cfg.folds.seed, "inputs": {str(f): digest_file(f) for f in files}}


def _blend(cfg: Config, exps, weights, method, tune_bias, name, overwrite, bias_folds, echo, tune_thresholds,
           temperature, use, label_shift) -> dict:
    """comp ensemble's work, once _recipe says it is not done yet."""
    if cfg.data.task == "multilabel":
        return _multilabel(cfg, exps, weights, method, tune_bias, temperature, name, overwrite, bias_folds, echo, use)
    exps, fixed, out_path = _check_args(cfg, exps, weights, method, name, overwrite, tune_bias, tune_thresholds,
                                        temperature)
    inp = _load_inputs(cfg, exps, use, echo)
    inp.shift = _label_shift(inp, label_shift, method, echo)
    fit = _fit_weights(inp, exps, fixed, method, bias_folds, cfg.folds.seed, echo)
    what = _decision_kind(inp, tune_bias, tune_thresholds, temperature, echo)
    dec = _tune_decision(inp, fit, fixed, method, what, bias_folds, cfg.folds.seed, echo)
    sub = _write_submission(inp, dec, out_path)
    options = _ledger_options(inp, fit, dec, use, method, fixed, tune_bias, bias_folds)
    row = ledger.append(name, exps, fit.w, dec.cv_f1, options, SUBMISSIONS_DIR / "ledger.csv",
                        metric=inp.metric.name, cv_score=dec.cv_score, shape=inp.shape,
                        cv_in_sample=dec.nested.in_sample, cv_nested=dec.nested.cv)
    _echo_written(cfg, inp, dec, out_path, len(sub), echo)
    return {
        "path": str(out_path),
        "name": name,
        "members": exps,
        "weights": [float(x) for x in fit.w],
        "member_f1": fit.member_f1,
        "blend_f1": fit.blend_f1,
        "cv_macro_f1": dec.cv_f1,
        "bias": [float(b) for b in dec.bias],
        "bias_report": dec.report,
        "metric": inp.metric.name,
        "member_score": fit.member_score,
        "blend_score": fit.blend_score,
        "cv_score": dec.cv_score,
        "weights_cv": fit.wcv,
        "nested": dec.nested,
        "tune_report": dec.tuned,
        "shape": inp.shape,
        "ledger_row": row,
        "n_test": len(sub),
        "label_shift": inp.shift,
        "classes": inp.classes,
    }
