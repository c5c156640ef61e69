"""``comp score`` of multi-label submissions (data.task multilabel), and the checks every multi-label submission
passes before it is written.

A solution is multi-label when it has 0/1 class columns where some row has other than exactly one 1, or one label
column of space-separated names that combine freely (comp.data.init_multilabel). Every multi-label metric is
computed (comp.metrics.MULTILABEL_METRICS, equal to scikit-learn's): label metrics of a wide submission at 0.5,
probability metrics (map, roc_auc) only of a wide one.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from comp.config import Config
from comp.data.competition import DataError, read_csv_str
from comp.data.init_multilabel import column_task
from comp.infer.score import SubmissionError, format_report, score_files
from comp.metrics import MULTILABEL_METRICS, multilabel_metric
from comp.tasks import Task, task_of
from comp.tasks.labels import label_classes, multi_hot, sort_classes, split_labels, zero_one


def check_multilabel_submission(sub: pd.DataFrame, expected_ids: list[str], id_col: str, shape: str,
                                classes: list[str], sep: str, header: list[str] | None = None) -> None:
    """SubmissionError unless the header is the sample's, every expected id is there once, and each cell is
    names of classes (label shape) or a probability in [0, 1] (wide)."""
    cols = [str(c) for c in sub.columns]
    if header is not None and cols != list(header):
        raise SubmissionError(f"submission header is {','.join(cols)}; expected {','.join(header)}")
    ids = sub[id_col].astype(str).str.strip()
    problems = []
    if ids.duplicated().any():
        problems.append(f"duplicated id {ids[ids.duplicated()].iloc[0]!r}")
    if set(ids) != set(map(str, expected_ids)):
        extra, absent = sorted(set(ids) - set(expected_ids)), sorted(set(expected_ids) - set(ids))
        problems.append(f"ids differ from the expected ones ({len(extra)} unexpected, e.g. {extra[:3]}; {len(absent)} "
                        f"missing, e.g. {absent[:3]})")
    if shape == "wide":
        p = sub[list(classes)].apply(pd.to_numeric, errors="coerce").to_numpy(np.float64)
        bad = np.flatnonzero(~np.isfinite(p).all(1) | (p < 0).any(1) | (p > 1).any(1))
        if len(bad):
            problems.append(f"{len(bad)} rows with a probability that is empty or outside [0, 1], e.g. line "
                            f"{bad[0] + 2} {ids.iloc[bad[0]]!r}")
    else:
        known = set(classes)
        lab = [c for c in cols if c != id_col][0]
        bad = [i for i, v in enumerate(sub[lab].astype(str)) if not set(split_labels(v, sep)) <= known]
        if bad:
            problems.append(f"{len(bad)} rows name a class that is not one, e.g. line {bad[0] + 2} "
                            f"{sub[lab].iloc[bad[0]]!r} (classes: {', '.join(classes[:12])})")
    if problems:
        raise SubmissionError("submission is not valid:\n  - " + "\n  - ".join(problems))


def read_truth(solution: pd.DataFrame, sep: str = " ") -> tuple[str, list[str], np.ndarray, str]:
    """(id column, classes, (N, C) truth, shape) of a multi-label solution: wide 0/1 columns or a label column."""
    id_col = str(solution.columns[0])
    rest = [str(c) for c in solution.columns[1:]]
    if len(rest) >= 2:
        v = zero_one(solution, rest)
        if v is None:
            raise DataError(f"solution: columns {rest[:6]} are not all 0/1")
        return id_col, rest, v.astype(np.int64), "wide"
    classes = label_classes(solution[rest[0]], sep)
    return id_col, classes, multi_hot(solution[rest[0]], classes, sep, "solution").astype(np.int64), "label"


def score_multilabel(sub: pd.DataFrame, solution: pd.DataFrame, metric: str = "macro_f1", sep: str = " ",
                     header: list[str] | None = None) -> dict:
    """Validate a multi-label submission and score it with every multi-label metric (label metrics of a wide
    submission at 0.5; probability metrics need a wide one)."""
    from sklearn.metrics import precision_recall_fscore_support

    headline = multilabel_metric(metric)
    id_col, classes, y, shape = read_truth(solution, sep)
    ids = solution[id_col].astype(str).str.strip().tolist()
    if shape == "label":  # names the submission uses that the truth never does are classes too (all wrong)
        lab = [c for c in sub.columns if c != id_col]
        extra = label_classes(sub[lab[0]], sep) if len(lab) == 1 else []
        if set(extra) - set(classes):
            classes = sort_classes(set(classes) | set(extra))
            y = multi_hot(solution[solution.columns[1]], classes, sep, "solution").astype(np.int64)
    check_multilabel_submission(sub, ids, id_col, shape, classes, sep, header or [str(c) for c in solution.columns])
    sub = sub.set_index(sub[id_col].astype(str).str.strip()).loc[ids]
    probs = None
    if shape == "wide":
        probs = sub[classes].apply(pd.to_numeric).to_numpy(np.float64)
        bits = (probs >= 0.5).astype(np.int64)
    else:
        bits = multi_hot(sub[[c for c in sub.columns if c != id_col][0]], classes, sep, "submission").astype(np.int64)
    scores = {}
    for name, m in MULTILABEL_METRICS.items():
        scores[name] = m(y, probs, classes) if probs is not None else (None if m.uses_proba else
                                                                         m.from_labels(y, bits, classes))
    if scores[headline.name] is None:
        raise SubmissionError(f"can't score {headline.name}: it needs probabilities (one column per class)")
    p, r, f, s = precision_recall_fscore_support(y, bits, zero_division=0)
    per_class = [{"class": c, "precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]),
                  "support": int(s[i])} for i, c in enumerate(classes)]
    result = {"metric": headline.name, "score": scores[headline.name], "shape": shape, "task": "multilabel",
              "accuracy": float((bits == y).all(1).mean()), "n": len(y), "n_classes": len(classes),
              "per_class": per_class}
    result.update(scores)
    return result


def is_multilabel(solution: pd.DataFrame) -> bool:
    """Whether a truth file has several labels per row (module docstring)."""
    rest = list(solution.columns[1:])
    if len(rest) >= 2:
        v = zero_one(solution, rest)
        return v is not None and bool((v.sum(1) != 1).any())
    try:
        return column_task(solution[rest[0]], str(rest[0]), None)[0]
    except DataError:
        return False


def score_report(sub_path: str | Path, solution_path: str | Path, sample_submission_path: str | Path | None,
                 metric: str | None, cfg: Config | None) -> tuple[dict, str]:
    """``comp score``: (the result, its text report), for ``cfg``'s data.task (no config: what the solution holds)."""
    from comp.data.competition import label_map

    metric = metric or (cfg.data.metric if cfg else "macro_f1")
    sep = cfg.data.label_sep if cfg and not cfg.data.label_cols else " "
    result, fmt = scored(sub_path, solution_path, sample_submission_path, metric, task_of(cfg) if cfg else None, sep)
    return result, fmt(result, label_map(cfg) if cfg else {})


def score_any(sub_path: str | Path, solution_path: str | Path, sample_submission_path: str | Path | None = None,
              metric: str = "macro_f1", task: Task | None = None, sep: str = " ") -> dict:
    """``comp score``'s result (:func:`scored`)."""
    return scored(sub_path, solution_path, sample_submission_path, metric, task, sep)[0]


def scored(sub_path: str | Path, solution_path: str | Path, sample_submission_path: str | Path | None = None,
           metric: str = "macro_f1", task: Task | None = None, sep: str = " ") -> tuple[dict, Callable]:
    """(the result, how to write it as text: ``fmt(result, label names)``): score_multilabel when ``task`` has
    several labels per image or the solution does, else comp.infer.score.score_files."""
    solution = read_csv_str(Path(solution_path))
    if solution.shape[1] < 2:
        raise DataError(f"{solution_path}: expected an id column and a label column, got {list(solution.columns)}")
    if not ((task is not None and task.sigmoid) or is_multilabel(solution)):
        return score_files(sub_path, solution_path, sample_submission_path, metric=metric), format_report
    try:
        sub = read_csv_str(Path(sub_path))
    except DataError as e:
        raise SubmissionError(str(e)) from None
    header = [str(c) for c in read_csv_str(Path(sample_submission_path)).columns] if sample_submission_path else None
    if metric not in MULTILABEL_METRICS:
        metric = "macro_f1"
    result = score_multilabel(sub, solution, metric=metric, sep=sep, header=header)
    result["submission"] = str(sub_path)
    return result, lambda r, names: format_multilabel(r)


def format_multilabel(result: dict) -> str:
    """A short text report: every multi-label metric, then precision/recall/F1/support per class."""
    rows = result["per_class"]
    width = max([len("class"), *(len(r["class"]) for r in rows)])
    lines = [f"{result['metric']:<10} {result['score']:.4f}   ({MULTILABEL_METRICS[result['metric']].title}: the "
             f"competition's metric, {result['shape']} multi-label submission)"]
    lines += [f"{k:<10} {result[k]:.4f}" for k in MULTILABEL_METRICS
              if k != result["metric"] and result.get(k) is not None]
    lines.append(f"exact match {result['accuracy']:.4f}   ({result['n']} rows, {result['n_classes']} classes)")
    lines += ["", f"{'class':<{width}}  precision  recall      f1  support"]
    for r in rows:
        lines.append(f"{r['class']:<{width}}  {r['precision']:9.4f}  {r['recall']:6.4f}  {r['f1']:6.4f}  "
                     f"{r['support']:7d}")
    return "\n".join(lines)
