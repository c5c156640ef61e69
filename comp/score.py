"""``comp score``: validate a submission, then macro F1, accuracy and a per-class table against the truth.

The truth file's first two columns name the id and label columns. A submission is refused (SubmissionError
listing the first offending rows) when its header, id set, ids or labels are wrong, so a broken file never
gets a score that looks real.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

from comp.data import DataError, class_names, read_csv_str

SHOW = 5  # offending rows listed per kind of problem


class SubmissionError(ValueError):
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
    ids = sub[id_col].astype(str)
    labels = sub[label_col].astype(str)
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


def score_frames(
    sub: pd.DataFrame, solution: pd.DataFrame, id_col: str | None = None, label_col: str | None = None
) -> dict:
    """Macro F1 (over every class in the solution or the submission), accuracy and per-class figures."""
    id_col = id_col or str(solution.columns[0])
    label_col = label_col or str(solution.columns[1])
    truth = solution[[id_col, label_col]].astype(str)
    dup = truth[id_col].duplicated()
    if dup.any():
        raise DataError(f"solution has duplicated ids, e.g. '{truth[id_col][dup].iloc[0]}'")
    check_submission(sub, truth[id_col].tolist(), id_col, label_col)
    pred = sub.set_index(sub[id_col].astype(str))[label_col].astype(str)
    y_true = truth[label_col].tolist()
    y_pred = pred.loc[truth[id_col]].tolist()
    classes = class_names(y_true + y_pred)
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=classes, zero_division=0)
    per_class = [
        {"class": c, "precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
        for i, c in enumerate(classes)
    ]
    return {
        "macro_f1": float(f1_score(y_true, y_pred, labels=classes, average="macro", zero_division=0)),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "n": len(y_true),
        "n_classes": len(classes),
        "per_class": per_class,
    }


def score_files(
    sub_path: str | Path, solution_path: str | Path, sample_submission_path: str | Path | None = None
) -> dict:
    """Validate ``sub_path`` (header from the sample submission when given, else the solution's id and label
    columns; labels must be classes of the solution), then score it."""
    solution = read_csv_str(Path(solution_path))
    if solution.shape[1] < 2:
        raise DataError(f"{solution_path}: expected an id column and a label column, got {list(solution.columns)}")
    id_col, label_col = str(solution.columns[0]), str(solution.columns[1])
    try:
        sub = read_csv_str(Path(sub_path))
    except DataError as e:
        raise SubmissionError(str(e)) from None
    if sample_submission_path is not None:
        header = [str(c) for c in read_csv_str(Path(sample_submission_path)).columns]
    else:
        header = [id_col, label_col]
    classes = class_names(solution[label_col])
    check_submission(sub, solution[id_col].tolist(), id_col, label_col, classes=classes, header=header)
    result = score_frames(sub, solution, id_col, label_col)
    result["submission"] = str(sub_path)
    return result


def format_report(result: dict) -> str:
    """A short text report: headline figures, then precision/recall/F1/support per class."""
    rows = result["per_class"]
    width = max([len("class"), *(len(r["class"]) for r in rows)])
    lines = [
        f"macro F1  {result['macro_f1']:.4f}",
        f"accuracy  {result['accuracy']:.4f}   ({result['n']} rows, {result['n_classes']} classes)",
        "",
        f"{'class':<{width}}  precision  recall      f1  support",
    ]
    for r in rows:
        lines.append(
            f"{r['class']:<{width}}  {r['precision']:9.4f}  {r['recall']:6.4f}  {r['f1']:6.4f}  {r['support']:7d}"
        )
    return "\n".join(lines)
