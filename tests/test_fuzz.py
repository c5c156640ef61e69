"""Issue 35's competition fuzzer, a fixed-seed subset: every generated Kaggle-style folder ends in a submission of the
sample's shape with the task and class count it was made with, or in a clear error naming a file, row or key.
The long run (200 folders and more) is `python tests/fuzz_competitions.py --n 200`."""

import pytest
from fuzz_competitions import draw, run_one

# 30 seeds, and those that found a fault in the long run: 119 and 163 (a class '007' or '010' submitted as 7 or 10)
SEEDS = [*range(30), 119, 163]


def test_the_generator_varies_what_the_issue_lists():
    """The subset covers both tasks, every layout and each kind of awkward input, so a fault in one is met here."""
    specs = [draw(s) for s in range(30)]
    assert {(s.task, s.layout) for s in specs} == {("multiclass", "column"), ("multiclass", "onehot"),
                                                    ("multilabel", "column"), ("multilabel", "wide")}
    for flag in ("id_ext", "mixed_ext", "numeric_ids", "bom", "stray", "tiny", "test_extra", "test_missing"):
        assert any(getattr(s, flag) for s in specs), flag
    names = {n for s in specs for n in s.classes}
    assert names & {"Ankle boot", "T-shirt top", "Sport shoe", "앵클 부츠", "Éclair au café", "sea  lion"}
    assert names & {"007", "010", "001"} and names & {"True", "NA", "None", "null", "nan", "N/A"}
    assert names & {"猫", "犬", "Éclair", "ñandú", "Ωmega", "café"}


@pytest.mark.slow
@pytest.mark.parametrize("seed", SEEDS)
def test_a_generated_competition_is_read_as_meant(seed, tmp_path):
    o = run_one(seed, tmp_path)
    assert o.kind in ("ok", "clear-error"), f"{o.spec.text()}\n{o.kind} at {o.step}:\n{o.detail}"
