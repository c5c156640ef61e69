"""Winning techniques, fold-safe: what fold k learns from never depends on fold k's labels.

    comp.techniques.relabel    ``comp relabel``: likely label errors from the OOF; data.relabel acts on them
    comp.techniques.pseudo     ``comp pseudo``: test images labelled by the teacher's fold-k model for fold k
    comp.techniques.distill    train.teacher: soft targets of the teacher's fold-k model
    comp.techniques.foldsafe   the row-by-row check that a teacher's fold-k model never saw fold k
    comp.techniques.plugins    how each plugs into a fold's training set (comp.train.rows): ``sources(cfg)``
"""

from comp.techniques.plugins import check_experiment, sources

__all__ = ["check_experiment", "sources"]
