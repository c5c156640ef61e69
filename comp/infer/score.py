"""``comp score``: validate a submission, then the competition's metric (data.metric), macro F1, accuracy and a
per-class table against the truth.

Two submission shapes: a label column (``id,label``) or wide (``id`` + one probability column per class; scored
by its argmax for F1/accuracy/qwk and by its probabilities for log loss and ROC AUC). The truth file's first
column is the id; the second is the label, or the rest are one-hot class columns. A submission is refused
(SubmissionError listing the first offending rows) when its header, id set, ids, labels or probabilities are
wrong, so a broken file never gets a score that looks real.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

from comp.data.competition import DataError, class_names, read_csv_str
from comp.errors import CompError

SHOW = 5  # offending rows listed per kind of problem


class SubmissionError(CompError, ValueError):
    """A submission that can't be scored or submitted; the message lists the offending rows."""


def _lines(sub: pd.DataFrame, mask, what: str, id_col: str, label_col: str | None = None) -> str:
    """ "3 duplicated ids: line 4 'a', line 9 'a', ..." with csv line numbers (the header is line 1)."""
    idx = [i for i, m in enumerate(mask) if m]
    shown = []
    for i in idx[:SHOW]:
        s = f"line {i + 2} '{sub[id_col].iloc[i]}'"
        if label_col is not None:
            s += f" -> '{sub[label_col].iloc[i]}'"
        shown.append(s)
    more = f", ... ({len(idx) - SHOW} more)" if len(idx) > SHOW else ""
    return f"{len(idx)} {what}: {', '.join(shown)}{more}"


def check_submission(
    sub: pd.DataFrame,
    expected_ids: list[str],
    id_col: str,
    label_col: str,
    classes: list[str] | None = None,
    header: list[str] | None = None,
) -> None:
    """Raise SubmissionError unless ``sub`` has the header, exactly the expected ids once each, and a known,
    non-empty label on every row. ``classes`` None skips the unknown-label check; ``header`` None only requires
    the id and label columns."""
    cols = [str(c) for c in sub.columns]
    if header is not None and cols != list(header):
        raise SubmissionError(f"submission header is {','.join(cols)}; expected {','.join(header)}")
    missing_cols = [c for c in (id_col, label_col) if c not in cols]
    if missing_cols:
        raise SubmissionError(
            f"submission has no column {', '.join(repr(c) for c in missing_cols)}; its header is {','.join(cols)}"
        )
    labels = sub[label_col].astype(str)
    problems = _id_problems(sub, expected_ids, id_col)
    empty = labels.str.strip() == ""
    if empty.any():
        problems.append(_lines(sub, empty, "rows with an empty label", id_col))
    if classes is not None:
        unknown = ~labels.isin(set(map(str, classes))) & ~empty
        if unknown.any():
            problems.append(
                _lines(sub, unknown, "rows with an unknown label", id_col, label_col)
                + f" (classes: {', '.join(map(repr, classes[:12]))}{', ...' if len(classes) > 12 else ''})"
            )
    if problems:
        raise SubmissionError("submission is not valid:\n  - " + "\n  - ".join(problems))


def submission_shape(header: list[str], id_col: str, label_col: str | None, classes: list[str]) -> str:
    """``label`` (an id and a label column) or ``wide`` (an id and one probability column per class).

    A header that is neither is a SubmissionError listing the class columns it lacks and the extra ones."""
    others = [c for c in header if c != id_col]
    if label_col is not None and label_col in others and len(others) == 1:
        return "label"
    if len(others) == 1 and others[0] not in classes:
        return "label"
    if set(others) == set(map(str, classes)) and len(others) == len(classes):
        return "wide"
    missing = sorted(set(map(str, classes)) - set(others))
    extra = sorted(set(others) - set(map(str, classes)))
    raise SubmissionError(
        f"the header {','.join(header)} is neither '{id_col},<label>' nor '{id_col}' + one column per class: "
        f"classes without a column: {missing[:12]}; columns that are not classes: {extra[:12]} "
        f"(the classes: {sorted(map(str, classes))[:12]})"
    )


def check_wide(sub: pd.DataFrame, expected_ids: list[str], id_col: str, classes: list[str],
               header: list[str] | None = None, tol: float = 1e-3) -> np.ndarray:
    """Validate a wide submission (ids as check_submission; every cell a number in [0, 1], rows summing to 1
    within ``tol``) and return its probabilities (N, C) in ``classes`` order, rows in ``sub``'s order."""
    cols = [str(c) for c in sub.columns]
    if header is not None and cols != list(header):
        raise SubmissionError(f"submission header is {','.join(cols)}; expected {','.join(header)}")
    missing = [c for c in [id_col, *classes] if c not in cols]
    if missing:
        raise SubmissionError(f"submission has no column {', '.join(map(repr, missing[:12]))}; its header is "
                              f"{','.join(cols)}")
    problems = _id_problems(sub, expected_ids, id_col)
    p = sub[list(classes)].apply(pd.to_numeric, errors="coerce").to_numpy(np.float64)
    bad = ~np.isfinite(p).all(1)
    if bad.any():
        problems.append(_lines(sub, bad, "rows with an empty or non-number probability", id_col))
    out = ~bad & ((p < 0) | (p > 1)).any(1)
    if out.any():
        problems.append(_lines(sub, out, "rows with a probability outside [0, 1]", id_col))
    off = ~bad & ~out & (np.abs(np.nan_to_num(p).sum(1) - 1) > tol)
    if off.any():
        problems.append(_lines(sub, off, f"rows whose probabilities do not sum to 1 (within {tol:g})", id_col))
    if problems:
        raise SubmissionError("submission is not valid:\n  - " + "\n  - ".join(problems))
    return p


def _id_problems(sub: pd.DataFrame, expected_ids: list[str], id_col: str) -> list[str]:
    ids = sub[id_col].astype(str)
    expected = set(map(str, expected_ids))
    problems = []
    if sub.empty:
        problems.append(f"no rows; expected {len(expected)} ids")
    dup = ids.duplicated(keep=False)
    if dup.any():
        problems.append(_lines(sub, dup, "rows with a duplicated id", id_col))
    empty_id = ids.str.strip() == ""
    if empty_id.any():
        problems.append(_lines(sub, empty_id, "rows with an empty id", id_col))
    unexpected = ~ids.isin(expected) & ~empty_id
    if unexpected.any():
        problems.append(_lines(sub, unexpected, "ids not in the solution", id_col))
    absent = sorted(expected - set(ids))
    if absent:
        more = f", ... ({len(absent) - SHOW} more)" if len(absent) > SHOW else ""
        problems.append(f"{len(absent)} expected ids missing: {', '.join(repr(a) for a in absent[:SHOW])}{more}")
    return problems


def read_solution(solution: pd.DataFrame) -> tuple[pd.DataFrame, str, str]:
    """(frame with id and label columns, id column, label column) of a truth file: ``id,label[,...]``, or ``id`` +
    one-hot class columns (the label is the largest column; its name is ``label``)."""
    if solution.shape[1] < 2:
        raise DataError(f"solution: expected an id column and a label column, got {list(solution.columns)}")
    id_col = str(solution.columns[0])
    rest = [str(c) for c in solution.columns[1:]]
    if len(rest) >= 2:
        v = solution[rest].apply(pd.to_numeric, errors="coerce")
        if v.notna().all().all() and v.to_numpy().min() >= 0 and np.allclose(v.to_numpy().sum(1), 1, atol=1e-3):
            label = pd.Series(np.asarray(rest, dtype=object)[v.to_numpy().argmax(1)], index=solution.index)
            out = pd.DataFrame({id_col: solution[id_col].astype(str), "label": label})
            out.attrs["classes"] = rest
            return out, id_col, "label"
    label_col = rest[0]
    return solution[[id_col, label_col]].astype(str), id_col, label_col


def score_frames(
    sub: pd.DataFrame, solution: pd.DataFrame, id_col: str | None = None, label_col: str | None = None,
    metric: str = "macro_f1", header: list[str] | None = None,
) -> dict:
    """Validate ``sub`` (label or wide shape) and score it: ``metric`` as the headline ``score``, plus macro F1,
    accuracy, every other metric the shape allows (log loss and ROC AUC need probabilities; qwk numeric classes)
    and per-class figures."""
    from comp.metrics import METRICS, create_metric

    headline = create_metric(metric)
    if id_col is None or label_col is None:
        truth, id_col, label_col = read_solution(solution)
    else:
        truth = solution[[id_col, label_col]].astype(str)
    dup = truth[id_col].duplicated()
    if dup.any():
        raise DataError(f"solution has duplicated ids, e.g. '{truth[id_col][dup].iloc[0]}'")
    y_true = truth[label_col].tolist()
    sol_classes = truth.attrs.get("classes") or class_names(y_true)
    cols = [str(c) for c in sub.columns]
    shape = submission_shape(header or cols, id_col, label_col, sol_classes)
    probs = None
    if shape == "wide":
        classes = sorted(map(str, sol_classes))
        p = check_wide(sub, truth[id_col].tolist(), id_col, classes, header)
        pos = pd.Series(range(len(sub)), index=sub[id_col].astype(str))
        probs = p[pos.loc[truth[id_col]].to_numpy()]
        y_pred = [classes[i] for i in probs.argmax(1)]
    else:
        lab = label_col if label_col in cols else [c for c in cols if c != id_col][0]
        check_submission(sub, truth[id_col].tolist(), id_col, lab, classes=sol_classes if header else None,
                         header=header)
        pred = sub.set_index(sub[id_col].astype(str))[lab].astype(str)
        y_pred = pred.loc[truth[id_col]].tolist()
        classes = class_names(y_true + y_pred)
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=classes, zero_division=0)
    per_class = [
        {"class": c, "precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
        for i, c in enumerate(classes)
    ]
    index = {c: i for i, c in enumerate(classes)}
    y = np.array([index[c] for c in y_true])
    yp = np.array([index[c] for c in y_pred])
    scores = {}
    for name, m in METRICS.items():
        try:
            scores[name] = m(y, probs, classes) if probs is not None else m.from_labels(y, yp, classes)
        except ValueError as e:  # a probability metric of a label submission; qwk of non-numeric classes
            scores[name] = None
            if name == headline.name:
                raise SubmissionError(f"can't score {name}: {e}") from None
    result = {
        "metric": headline.name,
        "score": scores[headline.name],
        "shape": shape,
        "macro_f1": float(f1_score(y_true, y_pred, labels=classes, average="macro", zero_division=0)),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "n": len(y_true),
        "n_classes": len(classes),
        "per_class": per_class,
    }
    result.update({k: v for k, v in scores.items() if k not in result})
    return result


def score_files(
    sub_path: str | Path, solution_path: str | Path, sample_submission_path: str | Path | None = None,
    metric: str = "macro_f1",
) -> dict:
    """Validate ``sub_path`` (header from the sample submission when given, else the solution's id and label
    columns or one column per class; labels must be classes of the solution), then score it by ``metric``."""
    solution = read_csv_str(Path(solution_path))
    if solution.shape[1] < 2:
        raise DataError(f"{solution_path}: expected an id column and a label column, got {list(solution.columns)}")
    try:
        sub = read_csv_str(Path(sub_path))
    except DataError as e:
        raise SubmissionError(str(e)) from None
    if sample_submission_path is not None:
        header = [str(c) for c in read_csv_str(Path(sample_submission_path)).columns]
    else:
        truth, id_col, label_col = read_solution(solution)
        classes = truth.attrs.get("classes") or class_names(truth[label_col])
        cols = [str(c) for c in sub.columns]
        shape = submission_shape(cols, id_col, label_col, classes)
        header = [id_col, label_col] if shape == "label" else [id_col, *[c for c in cols if c != id_col]]
    result = score_frames(sub, solution, metric=metric, header=header)
    result["submission"] = str(sub_path)
    return result


def format_report(result: dict, names: dict[str, str] | None = None) -> str:
    """A short text report: the headline metric, macro F1 and accuracy, then precision/recall/F1/support per class.

    ``names``: readable class names (data.label_map) shown beside the class."""
    from comp.metrics import METRICS

    names = names or {}
    rows = result["per_class"]
    label = [r["class"] + (f" ({names[r['class']]})" if r["class"] in names else "") for r in rows]
    width = max([len("class"), *(len(x) for x in label)])
    metric = result.get("metric", "macro_f1")
    lines = []
    if metric != "macro_f1":
        lines.append(f"{metric:<9} {result['score']:.4f}   ({METRICS[metric].title}: the competition's metric, "
                     f"{result.get('shape', 'label')} submission)")
    lines += [
        f"macro F1  {result['macro_f1']:.4f}",
        f"accuracy  {result['accuracy']:.4f}   ({result['n']} rows, {result['n_classes']} classes)",
    ]
    others = [f"{k} {result[k]:.4f}" for k in ("log_loss", "roc_auc", "qwk")
              if k != metric and result.get(k) is not None]
    if others:
        lines.append("also      " + ", ".join(others))
    lines += ["", f"{'class':<{width}}  precision  recall      f1  support"]
    for r, lab in zip(rows, label):
        lines.append(
            f"{lab:<{width}}  {r['precision']:9.4f}  {r['recall']:6.4f}  {r['f1']:6.4f}  {r['support']:7d}"
        )
    return "\n".join(lines)
