"""The training set of a fold, built in one place: base rows, then each technique's plug-in.

``load_table`` joins train.csv with its folds (id, label, path, fold, y) and the training targets ``y_train`` and
``train_use`` (the given labels, every row used). ``fold_rows(pool, k)`` returns what fold k trains on: the rows
of the other folds, then what each plugged-in ``Source`` adds or changes, with the provenance counts that
training prints. The trainer takes it ready and imports no technique.

A technique plugs in by one small object (comp.techniques.sources builds them from the config):

    key       the config key that turns it on (data.relabel, data.pseudo, data.synthetic, train.teacher); a config
              that sets a key no source answers is refused, so a technique is never silently left out
    table     once, when the table is read: may change the training targets (y_train, train_use)
    prepare   once the folds to train are known, before any image is decoded: may add images
              (``pool.add_images``: e.g. pseudo-labelled test images)
    extend    per fold: returns fold k's FoldRows with its rows, targets or teacher targets added

Validation rows (fold k's) and the OOF never pass through a source: they keep the given labels.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from comp.config import Config, ConfigError, resolve
from comp.data.check import clean_train
from comp.data.competition import DataError, class_names, read_folds
from comp.tasks import Task, task_of


@dataclass
class FoldRows:
    """What one fold trains on."""

    rows: np.ndarray  # positions in the pool's images: train rows first, then added images (pool.add_images)
    targets: np.ndarray  # class indices (n,), or (n, C) distributions (soft labels)
    teacher: np.ndarray | None = None  # (n, C) a teacher's probabilities of each row (distillation)
    counts: dict = field(default_factory=dict)  # provenance: what each part contributed (printed)

    @property
    def hard(self) -> np.ndarray:
        """Class indices of the targets (the argmax of soft ones): for class counts and the balanced sampler."""
        return self.targets if self.targets.ndim == 1 else self.targets.argmax(1)

    def add(self, rows: np.ndarray, targets: np.ndarray, task: Task, soft: bool) -> FoldRows:
        """These rows appended (``task.join_targets``: with ``soft``, one class per image becomes distributions)."""
        return replace(self, rows=np.concatenate([self.rows, rows]),
                       targets=task.join_targets(self.targets, targets, soft))


@dataclass
class Helper:
    """A technique's helper model (``Pool.helper``): the experiment's recipe trained without some folds, and its
    last epoch's probabilities of those folds' rows."""

    rows: np.ndarray  # table positions of the held-out rows (table order)
    probs: np.ndarray  # (len(rows), C)
    trained: bool  # trained (or resumed) by this call; False: read back from its folder
    seconds: float  # its training time (this call's, or the recorded one when read back)


@dataclass
class Pool:
    """The images one training session decodes once and its folds draw from: train rows, then added images."""

    cfg: Config
    table: pd.DataFrame  # load_table's: id, label, path, fold, y, y_train, train_use
    classes: list[str]
    echo: Callable[[str], None]
    paths: list[str] = field(default_factory=list)  # the image file of each row (train rows first)
    accelerator: object = None
    added: dict = field(default_factory=dict)  # (source key, image id) -> its position in ``paths``
    task: Task | None = None  # data.task's (comp.tasks)
    truth: np.ndarray | None = None  # the given labels of the train rows (table order): codes (n,) or (n, C)
    # Set by the trainer once the images are decoded: helper(name, held_out) trains a technique's helper model
    # (comp.train.session.train_helper) and returns a Helper; None outside a fold-training session.
    helper: Callable[[str, Sequence[int]], Helper] | None = None

    def add_images(self, key: str, ids: Sequence[str], paths: Sequence[str]) -> None:
        """Images a source adds to the pool (decoded with the train images), found again by ``position``."""
        for i, p in zip(ids, paths):
            if (key, i) not in self.added:
                self.added[(key, i)] = len(self.paths)
                self.paths.append(p)

    def position(self, key: str, ids: Sequence[str]) -> np.ndarray:
        return np.array([self.added[(key, i)] for i in ids], dtype=np.int64)


class Source:
    """A technique's plug-in (module docstring); each step does nothing unless the technique overrides it."""

    key: str = ""

    def table(self, pool: Pool) -> None:
        pass

    def prepare(self, pool: Pool, folds: list[int]) -> None:
        pass

    def extend(self, pool: Pool, k: int | str, fr: FoldRows) -> FoldRows:
        return fr


def requested(cfg: Config) -> list[str]:
    """The config keys that ask for a technique's rows or targets."""
    keys = {"data.relabel": cfg.data.relabel, "data.pseudo": cfg.data.pseudo, "data.synthetic": cfg.data.synthetic,
            "train.teacher": cfg.train.teacher}
    return [k for k, v in keys.items() if v]


def check_sources(cfg: Config, sources: Sequence[Source]) -> None:
    """Every technique the config asks for must be plugged in (comp.techniques.sources(cfg))."""
    have = {s.key for s in sources}
    missing = [k for k in requested(cfg) if k not in have]
    if missing:
        raise ConfigError(f"{missing[0]} is set, but no source for it was given to the trainer: call "
                          f"train_folds(cfg, sources=comp.techniques.sources(cfg)) (the comp CLI does)")


def base_rows(pool: Pool, k: int | str) -> FoldRows:
    """Fold k's training rows before any technique: every row of the other folds that is used for training
    (k = full_s{i}, a full-data run: every fold)."""
    t = pool.table
    tr = t[(t["fold"] != k) & t["train_use"]]
    targets = pool.task.train_targets(tr, pool.truth[tr.index.to_numpy()])
    return FoldRows(tr.index.to_numpy(), targets, counts={"base": len(tr)})


def fold_rows(pool: Pool, k: int | str, sources: Sequence[Source]) -> FoldRows:
    """What fold k trains on: base rows, then each source's additions, in order."""
    fr = base_rows(pool, k)
    for s in sources:
        fr = s.extend(pool, k, fr)
    return fr


def load_table(cfg: Config, skip_bad: bool, echo: Callable[[str], None]) -> tuple[pd.DataFrame, list[str]]:
    """The train rows joined with their folds: columns id, label, path, fold, y (class index), y_train (= y) and
    train_use (True), in csv order; sources may change the last two (``Source.prepare``)."""
    train = clean_train(cfg, skip_bad=skip_bad, echo=echo)
    folds = read_folds(cfg)
    path = resolve(cfg, cfg.folds.file)
    dup = folds["id"][folds["id"].duplicated()]
    if len(dup):
        raise DataError(f"{path}: id {dup.iloc[0]!r} is listed twice; run `comp folds --overwrite`")
    extra = set(folds["id"]) - set(train["id"])
    if extra and not skip_bad:
        raise DataError(f"{path}: {len(extra)} ids (e.g. {sorted(extra)[0]!r}) are not usable train rows; "
                        f"run `comp folds --overwrite`, or pass --skip-bad if `comp check` flagged them")
    if extra:
        echo(f"--skip-bad: {len(extra)} rows of {path} left out")
    df = train.merge(folds[["id", "label", "fold"]], on="id", how="left", suffixes=("", "_folds"))
    missing = df[df["fold"].isna()]
    if len(missing):
        raise DataError(f"{path}: {len(missing)} train rows have no fold (e.g. id {missing['id'].iloc[0]!r}, "
                        f"train.csv line {missing['row'].iloc[0]}); run `comp folds --overwrite`")
    changed = df[df["label"] != df["label_folds"]]
    if len(changed):
        r = changed.iloc[0]
        raise DataError(f"{path}: id {r['id']!r} has label {r['label_folds']!r} there but {r['label']!r} in "
                        f"train.csv; run `comp folds --overwrite`")
    df["fold"] = df["fold"].astype(int)
    task = task_of(cfg)
    classes = task.classes(df["label"], cfg.data.label_cols, class_names)
    df["y"] = task.codes(task.truth(df["label"], classes, str(path)))
    df = df.drop(columns=["label_folds"]).reset_index(drop=True)
    df["y_train"] = df["y"]  # training targets; y and label stay the given labels (validation, OOF)
    df["train_use"] = True
    return df, classes


def make_pool(cfg: Config, skip_bad: bool, echo: Callable[[str], None], sources: Sequence[Source],
              accelerator=None) -> Pool:
    """The session's table and image paths: load_table, then every source's ``table`` step."""
    check_sources(cfg, sources)
    table, classes = load_table(cfg, skip_bad, echo)
    task = task_of(cfg)
    pool = Pool(cfg, table, classes, echo, table["path"].tolist(), accelerator, task=task,
                truth=task.truth(table["label"], classes, str(resolve(cfg, cfg.folds.file))))
    for s in sources:
        s.table(pool)
    return pool


def prepare_sources(pool: Pool, sources: Sequence[Source], folds: list[int]) -> None:
    """Each source's ``prepare`` for the folds about to train (none: nothing to add)."""
    for s in sources:
        s.prepare(pool, folds)
