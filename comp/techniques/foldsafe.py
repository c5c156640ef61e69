"""Fold safety of a teacher: its fold-k model must not have trained on any row of the student's fold k.

Pseudo-labels and distillation hand a teacher's predictions to a student, fold by fold. That is only honest when
the teacher's fold-k model never saw the labels of the student's fold-k validation rows; with the same folds file
this holds by construction, and this module checks it row by row from the teacher's OOF (which lists the fold each
row was held out in), so a teacher trained on other folds is refused instead of silently leaking.
"""

from __future__ import annotations

import pandas as pd

from comp.config import Config
from comp.data.competition import DataError, read_csv_str


def teacher_fold_of(cfg: Config, teacher: str) -> pd.Series:
    """id -> the fold whose validation part held the row, from runs/T/oof.csv (else the finished folds' oof.csv)."""
    from comp.runs import run_dir

    run = run_dir(teacher)
    files = [run / "oof.csv"] if (run / "oof.csv").exists() else sorted(run.glob("fold_*/oof.csv"))
    if not files:
        raise DataError(f"teacher {teacher}: no {run / 'oof.csv'} (nor fold_k/oof.csv); the teacher must be a "
                        f"trained experiment: comp train --exp {teacher} --all-folds")
    id_col = cfg.data.id_col
    df = pd.concat([read_csv_str(p)[[id_col, "fold"]] for p in files], ignore_index=True)
    return df.drop_duplicates(id_col).set_index(id_col)["fold"].astype(int)


def check_fold_safe(cfg: Config, teacher: str, folds: pd.DataFrame, folds_needed: list[int] | None = None) -> None:
    """Refuse ``teacher`` when its fold-k model trained on a row of the student's fold k (``folds``: id, fold)."""
    held = teacher_fold_of(cfg, teacher)
    student = folds.set_index("id")["fold"].astype(int)
    common = student.index.intersection(held.index)
    for k in folds_needed if folds_needed is not None else sorted(student.unique()):
        val = common[student.loc[common].to_numpy() == k]
        seen = val[held.loc[val].to_numpy() != k]  # held out elsewhere: the teacher's fold-k model trained on it
        if len(seen):
            raise DataError(
                f"teacher {teacher}: its fold-{k} model trained on {len(seen)} rows that are in fold {k}'s validation "
                f"part here (e.g. id {seen[0]!r}, held out in the teacher's fold {int(held[seen[0]])}); it was "
                f"trained on other folds than {cfg.folds.file}, and its predictions would leak those labels into "
                f"the CV. Retrain the teacher on these folds: comp train --exp {teacher} --all-folds --overwrite")
