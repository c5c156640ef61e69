"""Multi-label decisions and submissions (``data.task: multilabel``).

Decisions: an image gets every class whose blended sigmoid probability reaches the class's threshold, then
optionally at most ``infer.top_k`` (the most likely) and at least one (``infer.at_least_one``: the most likely
when none passes). Per-class thresholds are fit to data.metric on the blended OOF by coordinate ascent over a
grid, cross-validated as the biases are (``cv_thresholds``): the OOF is split into parts by multi-label
stratification, the thresholds of each part are fit on the others and score the part they never saw, and the
pooled figure of those held-out decisions is the estimate. The thresholds fit on the whole OOF are applied to
the test only when that nested estimate beats the plain 0.5 decisions; both figures and the in-sample one go to
the ledger. Ensemble weights (greedy forward selection with replacement) are fit the same way: per part on the
others, inside the same nested loop, so the ledger's CV never scores rows that chose it.

Submissions take the sample's shape: one label cell of space-separated class names (HPA's indices, Planet's
tags), written as train.csv spells them; or one probability column per class (RANZCR). An image with no label
is an empty cell.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from comp.config import Config, ConfigError
from comp.data.competition import DataError, load_test, read_csv_str
from comp.errors import OutputExists
from comp.files import write_csv
from comp.infer import ledger
from comp.infer.multilabel_score import check_multilabel_submission
from comp.infer.predict import USES, output_name
from comp.metrics import MULTILABEL_METRICS, multilabel_metric
from comp.runs import run_dir, search_folds, untouched_rows
from comp.tasks.blend import greedy_weights as greedy_search
from comp.tasks.blend import mean_blend
from comp.tasks.labels import hot_strings, multi_hot, sort_classes
from comp.tasks.thresholds import Rule, fit_thresholds, label_scorer

SUBMISSIONS_DIR = Path("submissions")


def parts_of(y: np.ndarray, n_splits: int, seed: int) -> list[np.ndarray]:
    """Held-out parts of the OOF rows for nested fits (multi-label stratified)."""
    from iterstrat.ml_stratifiers import MultilabelStratifiedKFold

    n_splits = max(2, min(n_splits, len(y)))
    splitter = MultilabelStratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    return [val for _, val in splitter.split(np.zeros(len(y)), np.asarray(y))]


@dataclass
class ThresholdReport:
    """Figures of the threshold tuning (data.metric): plain 0.5, fit in-sample, nested (honest)."""

    plain: float
    in_sample: float
    cv: float
    thresholds: np.ndarray
    applied: bool = False

    @property
    def gain(self) -> float:
        return self.cv - self.plain


def cv_thresholds(probs: np.ndarray, y: np.ndarray, metric_name: str, rule: Rule, n_splits: int = 5,
                  seed: int = 0) -> ThresholdReport:
    """Thresholds fit on all of (probs, y), with their in-sample and nested (cross-validated) figures."""
    m = MULTILABEL_METRICS[metric_name]
    plain = m.from_labels(y, rule(probs, np.full(probs.shape[1], 0.5)), [])
    thr = fit_thresholds(probs, y, metric_name, rule)
    in_sample = m.from_labels(y, rule(probs, thr), [])
    held = np.zeros_like(y)
    for part in parts_of(y, n_splits, seed):
        rest = np.setdiff1d(np.arange(len(y)), part)
        held[part] = rule(probs[part], fit_thresholds(probs[rest], y[rest], metric_name, rule))
    cv = m.from_labels(y, held, [])
    return ThresholdReport(float(plain), float(in_sample), float(cv), thr, bool(cv > plain))


# ---------------------------------------------------------------- weights


def greedy_weights(probs: Sequence[np.ndarray], y: np.ndarray, objective: Callable[[np.ndarray, np.ndarray], float],
                   steps: int = 20) -> np.ndarray:
    """comp.tasks.blend.greedy_weights over the members' weighted mean probabilities."""
    return greedy_search(probs, lambda p: objective(p, y), steps, combine=mean_blend)


# ---------------------------------------------------------------- members and the sample


@dataclass
class MLInputs:
    exps: list[str]
    classes: list[str]
    y: np.ndarray  # (N, C) OOF truth
    oof: list[np.ndarray]
    test: list[np.ndarray]
    test_ids: list[str]
    sample: pd.DataFrame
    id_col: str
    shape: str  # label or wide
    label_col: str | None
    sep: str  # how a label cell joins names
    scored: np.ndarray | None = None  # the OOF rows the CV scores (those no member's search chose on; None: all)
    chosen: dict = field(default_factory=dict)  # experiment -> the folds a search chose it on (when any did)


def _read_member(cfg: Config, exp: str, use: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    if use not in USES:
        raise ConfigError(f"--use {use!r}: expected one of {', '.join(USES)}")
    run = run_dir(exp)
    oof_path, test_path = run / "oof.csv", run / output_name(use)
    for p, fix in ((oof_path, f"comp train --exp {exp} --all-folds"), (test_path, f"comp predict --exp {exp}")):
        if not p.exists():
            raise DataError(f"{p} not found: run {fix} first")
    return read_csv_str(oof_path), read_csv_str(test_path)


def _sample_shape(cfg: Config, classes: list[str]) -> tuple[pd.DataFrame, str, str, str | None, list[str]]:
    """(sample, id column, shape, label column, test ids) of the sample submission."""
    d = cfg.data
    test = load_test(cfg)
    if not d.sample_submission or not (cfg.root / d.sample_submission).exists():
        sample = pd.DataFrame({d.id_col: test["id"], d.label_col: ""})
        return sample, d.id_col, "label", d.label_col, test["id"].tolist()
    sample = read_csv_str(cfg.root / d.sample_submission)
    others = [c for c in sample.columns if c != d.id_col]
    if len(others) >= 2 and set(others) == set(classes):
        return sample, d.id_col, "wide", None, sample[d.id_col].str.strip().tolist()
    if len(others) == 1:
        return sample, d.id_col, "label", others[0], sample[d.id_col].str.strip().tolist()
    raise DataError(f"{d.sample_submission} has columns {others[:8]}: neither one label column nor one column per "
                    f"class ({classes[:8]}); class names must match the column names exactly")


def load_inputs(cfg: Config, exps: list[str], use: str, echo: Callable[[str], None] = print) -> MLInputs:
    """Every member's OOF and test probabilities on the same classes and rows, the OOF truth, the sample, and the
    rows the CV may score (comp.runs.untouched_rows: not those of folds a member's search chose on)."""
    d = cfg.data
    frames = [_read_member(cfg, e, use) for e in exps]
    oof0 = frames[0][0]
    classes = sort_classes(c for c in oof0.columns if c not in (d.id_col, "fold", d.label_col))
    ids = oof0[d.id_col].tolist()
    sample, id_col, shape, label_col, test_ids = _sample_shape(cfg, classes)
    oofs, tests = [], []
    for e, (oof, test) in zip(exps, frames):
        cols = sort_classes(c for c in oof.columns if c not in (d.id_col, "fold", d.label_col))
        if cols != classes or sort_classes(c for c in test.columns if c != d.id_col) != classes:
            raise DataError(f"runs/{e} has classes {cols[:8]}, runs/{exps[0]} has {classes[:8]}: only experiments on "
                            "the same classes can be blended")
        oof = oof.set_index(d.id_col)
        if set(oof.index) != set(ids) or not (oof.loc[ids, d.label_col].to_numpy() ==
                                              oof0[d.label_col].to_numpy()).all():
            raise DataError(f"runs/{e}/oof.csv has other train rows or labels than runs/{exps[0]}/oof.csv")
        test = test.set_index(test[d.id_col].str.strip())
        missing = sorted(set(test_ids) - set(test.index))
        if missing:
            raise DataError(f"runs/{e}/{output_name(use)} lacks {len(missing)} test ids (e.g. {missing[0]!r}); "
                            f"re-run comp predict --exp {e} --overwrite")
        oofs.append(oof.loc[ids, classes].to_numpy(np.float64))
        tests.append(test.loc[test_ids, classes].to_numpy(np.float64))
    y = multi_hot(oof0[d.label_col], classes, d.label_sep, "OOF").astype(np.int64)
    sep = " " if d.label_cols else d.label_sep
    chosen = {e: search_folds(run_dir(e)) for e in exps}
    chosen = {e: ks for e, ks in chosen.items() if ks}
    scored = untouched_rows(chosen, pd.to_numeric(oof0["fold"], errors="coerce").to_numpy(), echo)
    return MLInputs(exps, classes, y, oofs, tests, test_ids, sample, id_col, shape, label_col, sep, scored, chosen)


# ---------------------------------------------------------------- the blend, honestly


@dataclass
class MLFit:
    weights: np.ndarray
    oof: np.ndarray  # the blend with ``weights`` (fit on every OOF row)
    cv_plain: float  # data.metric at 0.5 with weights fit per part (nested)
    cv: float  # the submission's honest figure
    report: ThresholdReport | None
    held: np.ndarray  # the held-out decisions behind ``cv`` (each part's, fit on the others), of the rows ``rows``
    member_score: dict = field(default_factory=dict)
    rows: np.ndarray | None = None  # the OOF rows ``cv`` scores (those no member's search chose on)
    all_folds: float | None = None  # data.metric of the blend at 0.5 on every OOF row (optimistic after a search)


def _objective(metric_name: str, rule: Rule):
    m = MULTILABEL_METRICS[metric_name]
    if m.uses_proba:
        return lambda p, y: m(y, p, [])
    score = label_scorer(metric_name)
    return lambda p, y: score(y, rule(p, np.full(p.shape[1], 0.5)))


def fit_blend(inp: MLInputs, metric_name: str, rule: Rule, fixed: np.ndarray | None, tune: bool, n_splits: int,
              seed: int) -> MLFit:
    """Weights and thresholds fit on the OOF, and their nested figure: for each part of the OOF rows the CV may
    score (``inp.scored``), the weights and then the thresholds are fit on the other parts alone and decide the
    part (module docstring)."""
    m = MULTILABEL_METRICS[metric_name]
    n_c = len(inp.classes)
    rows = inp.scored if inp.scored is not None else np.arange(len(inp.y))
    objective = _objective(metric_name, rule)
    member = {e: float(objective(p, inp.y)) for e, p in zip(inp.exps, inp.oof)}
    fit_w = fixed is None and len(inp.exps) > 1
    w = greedy_weights(inp.oof, inp.y, objective) if fit_w else (fixed if fixed is not None else np.ones(1))
    oof = mean_blend(inp.oof, w)
    tune = tune and not m.uses_proba
    y, probs = inp.y[rows], [p[rows] for p in inp.oof]  # the nested loop sees only the rows it scores
    held_p, held_t = np.zeros_like(oof[rows]), np.zeros_like(y)
    for part in parts_of(y, n_splits, seed):
        rest = np.setdiff1d(np.arange(len(y)), part)
        wp = greedy_weights([p[rest] for p in probs], y[rest], objective) if fit_w else w
        held_p[part] = mean_blend([p[part] for p in probs], wp)
        if tune:
            thr = fit_thresholds(mean_blend([p[rest] for p in probs], wp), y[rest], metric_name, rule)
            held_t[part] = rule(held_p[part], thr)
    plain_bits = rule(held_p, np.full(n_c, 0.5))
    cv_plain = float(m(y, held_p, []) if m.uses_proba else m.from_labels(y, plain_bits, []))
    report = None
    if tune:
        thr = fit_thresholds(oof, inp.y, metric_name, rule)  # what the test gets: fit on every OOF row
        cv = float(m.from_labels(y, held_t, []))
        report = ThresholdReport(cv_plain, float(m.from_labels(inp.y, rule(oof, thr), [])), cv, thr,
                                 bool(cv > cv_plain))
    applied = report is not None and report.applied
    return MLFit(w, oof, cv_plain, float(report.cv if applied else cv_plain), report,
                 held_t if applied else plain_bits, member, rows, float(objective(oof, inp.y)))


def submission_frame(inp: MLInputs, test_probs: np.ndarray, bits: np.ndarray) -> pd.DataFrame:
    """The sample with the blend's labels (label shape) or probabilities (wide), in the sample's order."""
    sub = inp.sample.copy()
    sub[inp.id_col] = inp.test_ids
    if inp.shape == "wide":
        for j, c in enumerate(inp.classes):
            sub[c] = test_probs[:, j]
    else:
        sub[inp.label_col] = hot_strings(bits, inp.classes, inp.sep)
    return sub


def ensemble_multilabel(cfg: Config, exps: Sequence[str], fixed: np.ndarray | None, name: str, overwrite: bool,
                        echo: Callable[[str], None] = print, use: str = "folds", tune_thresholds: bool = True,
                        n_splits: int = 5) -> dict:
    """``comp ensemble`` of a multi-label competition -> submissions/NAME.csv and a ledger row."""
    if not name or not re.fullmatch(r"[\w.-]+", name):
        raise ConfigError(f"--name {name!r}: use letters, digits, '-', '_' and '.' only")
    out_path = SUBMISSIONS_DIR / f"{name}.csv"
    if out_path.exists() and not overwrite:
        raise OutputExists(f"{out_path} already exists; choose another --name or pass --overwrite to replace it")
    metric = multilabel_metric(cfg.data.metric)
    inp = load_inputs(cfg, list(exps), use, echo)
    rule = Rule(np.full(len(inp.classes), 0.5), cfg.infer.at_least_one, cfg.infer.top_k)
    fit = fit_blend(inp, metric.name, rule, fixed, tune_thresholds, n_splits, cfg.folds.seed)
    applied = fit.report is not None and fit.report.applied
    rule.thresholds = fit.report.thresholds if applied else rule.thresholds
    test = mean_blend(inp.test, fit.weights)
    bits = rule(test)
    sub = submission_frame(inp, test, bits)
    header = [str(c) for c in inp.sample.columns]
    check_multilabel_submission(sub, inp.test_ids, inp.id_col, inp.shape, inp.classes, inp.sep, header)
    write_csv(out_path, sub)
    cv_f1 = float(multilabel_metric("macro_f1").from_labels(inp.y[fit.rows], fit.held, []))
    options = _ledger_options(inp, fit, rule, use, metric.name)
    row = ledger.append(name, list(exps), fit.weights, cv_f1, options, SUBMISSIONS_DIR / "ledger.csv",
                        metric=metric.name, cv_score=fit.cv, shape=inp.shape)
    _echo(inp, fit, bits, out_path, metric.name, echo)
    return {"path": str(out_path), "name": name, "members": list(exps), "weights": [float(x) for x in fit.weights],
            "metric": metric.name, "cv_score": fit.cv, "cv_plain": fit.cv_plain, "report": fit.report,
            "shape": inp.shape, "ledger_row": row, "n_test": len(sub), "member_score": fit.member_score}


def _ledger_options(inp: MLInputs, fit: MLFit, rule: Rule, use: str, metric: str) -> dict:
    options = {"task": "multilabel", "use": use, "cv_from": "folds", "weights_cv": round(fit.cv_plain, 5),
               f"members_oof_{metric}": {k: round(v, 5) for k, v in fit.member_score.items()},
               "at_least_one": rule.at_least_one, "top_k": rule.top_k}
    if inp.chosen:  # members chosen by a search: the CV is over the folds none of them was chosen on
        options.update(search_folds=inp.chosen, cv_selected_in_sample=len(fit.rows) == len(inp.y),
                       cv_all_folds_optimistic=round(fit.all_folds, 5))
    r = fit.report
    if r is not None:
        options["thresholds"] = dict(plain=round(r.plain, 5), in_sample=round(r.in_sample, 5), cv=round(r.cv, 5),
                                     gain=round(r.gain, 5), applied=r.applied,
                                     values={c: float(t) for c, t in zip(inp.classes, r.thresholds)})
    return options


def _echo(inp: MLInputs, fit: MLFit, bits: np.ndarray, out_path: Path, metric: str, echo) -> None:
    r = fit.report
    if r is not None:
        echo(f"thresholds ({metric}): 0.5 {r.plain:.4f}, tuned in-sample {r.in_sample:.4f}, cross-validated "
             f"{r.cv:.4f} -> {'applied' if r.applied else 'not applied (no honest gain)'}")
    what = "one probability column per class" if inp.shape == "wide" else f"label column {inp.label_col}"
    echo(f"wrote {out_path}: {len(bits)} rows, {inp.shape} shape ({what}); {bits.sum(1).mean():.2f} labels per "
         f"image, {int((bits.sum(1) == 0).sum())} with none")
    echo(f"cv {metric} of this submission: {fit.cv:.4f} (logged in {SUBMISSIONS_DIR / 'ledger.csv'})")
