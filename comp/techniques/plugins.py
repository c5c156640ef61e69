"""The techniques' plug-ins into a fold's training set (comp.train.rows): one small object per technique.

    RelabelSource   data.relabel   accepted suggestions change training targets, dropped rows leave training
    PseudoSource    data.pseudo    fold k adds the test images the teacher's fold-k model labelled
    SynthSource     data.synthetic fold k adds the images its own generator made (trained on the other folds)
    TeacherSource   train.teacher  fold k's training rows get the teacher's fold-k probabilities (distillation)

``sources(cfg)`` builds those the config asks for, in that order (the teacher also predicts pseudo rows).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from comp.config import Config
from comp.data.competition import DataError
from comp.tasks.single import per_class
from comp.techniques.distill import check_teacher, teacher_targets
from comp.techniques.foldsafe import check_fold_safe
from comp.techniques.pseudo import Pseudo, load_pseudo
from comp.techniques.relabel import accepts_every, apply_relabel, fold_safe_every, fold_safe_rows, full_every
from comp.techniques.synth import Synthetic, load_synthetic
from comp.train.rows import FoldRows, Pool, Source
from comp.train.setup import check_config


class RelabelSource(Source):
    """data.relabel: the table's training targets (y_train, train_use) from the accepted relabel file; fold k then
    keeps an accepted relabel only where the fold-safe suggestion (a pair model trained without fold k) agrees.
    Every suggestion accepted (data.relabel: auto, or every row marked accept): fold k takes every fold-safe
    suggestion instead, and a full-data run the pair models' mean."""

    key = "data.relabel"
    every: bool = False  # every suggestion accepted: read once, when the table is built

    def table(self, pool: Pool) -> None:
        self.every = accepts_every(pool.cfg)
        pool.table = apply_relabel(pool.cfg, pool.table, pool.classes, pool.echo)

    def extend(self, pool: Pool, k, fr: FoldRows) -> FoldRows:
        every = self.every
        if isinstance(k, str):  # a full-data run: no fold to keep honest, the accepted labels as written
            return full_every(pool, fr) if every and pool.helper else fr
        return fold_safe_every(pool, k, fr) if every and pool.helper else fold_safe_rows(pool, k, fr)


@dataclass
class PseudoSource(Source):
    """data.pseudo: fold k adds the test rows that the teacher's fold-k model labelled (never a validation row)."""

    key = "data.pseudo"
    pseudo: Pseudo | None = None

    def prepare(self, pool: Pool, folds: list[int]) -> None:
        self.pseudo = load_pseudo(pool.cfg, pool.classes, folds) if folds else None
        if self.pseudo is None:
            return
        # No re-check of the teacher's fold safety here, on purpose (issue 17): `comp pseudo` checked it when it
        # made the labels and pinned the folds digest that load_pseudo checks; the teacher's *current* OOF says
        # nothing about labels made earlier, and re-reading it wrongly refused once the teacher was retrained.
        test = pd.concat(self.pseudo.folds.values()).drop_duplicates("id")
        pool.add_images(self.key, test["id"].tolist(), test["path"].tolist())

    def extend(self, pool: Pool, k, fr: FoldRows) -> FoldRows:
        ps, classes = self.pseudo.folds[k], pool.classes
        probs = ps[classes].to_numpy(np.float64)
        soft, task = self.pseudo.soft, pool.task
        targets = task.pseudo_targets(probs, soft)
        fr = fr.add(pool.position(self.key, ps["id"]), targets, task, soft)
        pool.echo(f"fold {k}: + {len(ps)} pseudo-labelled test images ({'soft' if soft else 'hard'} "
                  f"{task.pseudo_what} of teacher {self.pseudo.teacher}'s fold-{k} model{task.pseudo_from}; "
                  f"{task.count_line(classes, targets)})")
        return replace(fr, counts=dict(fr.counts, pseudo=len(ps)))


@dataclass
class SynthSource(Source):
    """data.synthetic: fold k adds folds/synth/E/fold_k/'s images, made by a generator that never saw fold k's rows;
    other folds' images never reach fold k, and no image ever reaches a validation fold or the OOF."""

    key = "data.synthetic"
    synth: Synthetic | None = None

    def prepare(self, pool: Pool, folds: list[int]) -> None:
        self.synth = load_synthetic(pool.cfg, pool.classes, folds) if folds else None
        if self.synth is None:
            return
        for df in self.synth.folds.values():
            pool.add_images(self.key, df["id"].tolist(), df["path"].tolist())

    def extend(self, pool: Pool, k, fr: FoldRows) -> FoldRows:
        if isinstance(k, str):  # a full-data run (full_s{i}): every generator is one fold's, none is the full data's
            pool.echo(f"{k}: data.synthetic adds nothing to a full-data run (each generator belongs to one fold)")
            return fr
        df, classes = self.synth.folds[k], pool.classes
        y = df["class"].map({c: i for i, c in enumerate(classes)}).to_numpy(np.int64)
        fr = fr.add(pool.position(self.key, df["id"]), y, pool.task, soft=fr.targets.ndim == 2)
        pool.echo(f"fold {k}: + {len(df)} synthetic images of {self.synth.folder}/fold_{k} (its own generator's; "
                  f"per class {per_class(classes, y)})")
        return replace(fr, counts=dict(fr.counts, synthetic=len(df)))


class TeacherSource(Source):
    """train.teacher: the teacher's fold-k model's probabilities of fold k's training rows (its own input size)."""

    key = "train.teacher"

    def prepare(self, pool: Pool, folds: list[int]) -> None:
        if folds:
            check_fold_safe(pool.cfg, pool.cfg.train.teacher, pool.table[["id", "fold"]], folds)

    def extend(self, pool: Pool, k, fr: FoldRows) -> FoldRows:
        t, classes = pool.cfg.train, pool.classes
        probs, theirs = teacher_targets(pool.cfg, k, pool.paths, fr.rows, pool.accelerator)
        if sorted(theirs) != sorted(classes):
            raise DataError(f"train.teacher: {t.teacher}'s classes {theirs} differ from this competition's {classes}")
        probs = probs[:, [theirs.index(c) for c in classes]]
        real = fr.rows < len(pool.table)  # data.pseudo's test rows have no given label
        agree = float((probs[real].argmax(1) == pool.table["y_train"].to_numpy()[fr.rows[real]]).mean())
        pool.echo(f"fold {k}: distilling from {t.teacher}'s fold-{k} model over {len(fr.rows)} training images (alpha "
                  f"{t.distill_alpha:g}, T {t.distill_t:g}; the teacher agrees with {agree:.1%} of the given labels)")
        return replace(fr, teacher=probs, counts=dict(fr.counts, teacher=len(fr.rows)))


def check_experiment(cfg: Config) -> None:
    """Everything of an experiment's config that can be checked before any image is decoded, techniques too."""
    check_config(cfg)
    sources(cfg)


def sources(cfg: Config) -> list[Source]:
    """The plug-ins ``cfg`` asks for, checked (a teacher must exist and fit the config), in their order."""
    check_teacher(cfg)
    out: list[Source] = []
    if cfg.data.relabel:
        out.append(RelabelSource())
    if cfg.data.pseudo:
        out.append(PseudoSource())
    if cfg.data.synthetic:
        out.append(SynthSource())
    if cfg.train.teacher:
        out.append(TeacherSource())
    return out
