"""comp score: validation first (clear errors with line numbers), then macro F1, accuracy, per-class table."""

import json

import pandas as pd
import pytest
from click.testing import CliRunner
from sklearn.metrics import f1_score

from comp.cli import cli
from comp.infer.score import (
    SubmissionError,
    check_submission,
    format_report,
    score_files,
    score_frames,
)


@pytest.fixture(scope="module")
def solution(competition):
    return pd.read_csv(competition / "solution.csv", dtype=str, keep_default_na=False)


def _noisy(solution: pd.DataFrame) -> pd.DataFrame:
    sub = solution.copy()
    sub.loc[sub.index[::4], "label"] = "Bag"  # every 4th row predicted 'Bag'
    return sub


def test_scores_match_sklearn(solution, tmp_path, competition):
    sub = _noisy(solution)
    sub.to_csv(tmp_path / "sub.csv", index=False)
    res = score_files(tmp_path / "sub.csv", competition / "solution.csv", competition / "sample_submission.csv")
    assert res["macro_f1"] == pytest.approx(f1_score(solution["label"], sub["label"], average="macro"))
    assert res["accuracy"] == pytest.approx((solution["label"] == sub["label"]).mean())
    assert 0.5 < res["macro_f1"] < 1
    per = {r["class"]: r for r in res["per_class"]}
    assert per["Bag"]["recall"] == 1.0 and per["Bag"]["precision"] < 1.0
    assert sum(r["support"] for r in res["per_class"]) == len(solution) and "T-shirt/top" in per
    text = format_report(res)
    assert "macro F1" in text and "T-shirt/top" in text and "precision" in text


def test_rows_shuffled_still_score_perfectly(solution):
    res = score_frames(solution.sample(frac=1, random_state=0), solution)
    assert res["macro_f1"] == 1.0 and res["accuracy"] == 1.0 and res["n"] == len(solution)


def test_cli_json_and_table(solution, tmp_path, competition):
    _noisy(solution).to_csv(tmp_path / "sub.csv", index=False)
    runner = CliRunner()
    r = runner.invoke(cli, ["score", str(tmp_path / "sub.csv"), "--solution", str(competition / "solution.csv"),
                            "--json"])
    assert r.exit_code == 0, r.output
    obj = json.loads(r.output)
    assert {"macro_f1", "accuracy"} <= set(obj) and 0 < obj["macro_f1"] < 1
    r = runner.invoke(cli, ["score", str(tmp_path / "sub.csv"), "--solution", str(competition / "solution.csv")])
    assert r.exit_code == 0 and "Ankle boot" in r.output and f"{obj['macro_f1']:.4f}" in r.output


@pytest.mark.parametrize(
    "damage, expected",
    [
        (lambda s: s.rename(columns={"label": "class"}), "header"),
        (lambda s: s.drop(index=[3, 4]), "2 expected ids missing: 'te_000003', 'te_000004'"),
        (lambda s: pd.concat([s, pd.DataFrame({"image_id": ["zz_1"], "label": ["Bag"]})]), "ids not in the solution"),
        (lambda s: pd.concat([s, s.iloc[[7]]]), "line 9 'te_000007'"),
        (lambda s: s.assign(label=s["label"].where(s.index != 5, "")), "empty label: line 7 'te_000005'"),
        (lambda s: s.assign(label=s["label"].where(s.index != 6, "T-shirt")), "line 8 'te_000006' -> 'T-shirt'"),
    ],
    ids=["header", "missing", "extra", "duplicate", "empty", "unknown"],
)
def test_invalid_submissions_are_refused(solution, tmp_path, competition, damage, expected):
    damage(solution.copy()).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(SubmissionError) as e:
        score_files(tmp_path / "bad.csv", competition / "solution.csv")
    assert expected in str(e.value)
    r = CliRunner().invoke(cli, ["score", str(tmp_path / "bad.csv"), "--solution", str(competition / "solution.csv")])
    assert r.exit_code == 1 and expected in r.output and "Traceback" not in r.output


def test_header_must_match_sample_submission(solution, tmp_path, competition):
    sub = solution.assign(extra="x")
    sub.to_csv(tmp_path / "s.csv", index=False)
    with pytest.raises(SubmissionError, match="expected image_id,label"):
        score_files(tmp_path / "s.csv", competition / "solution.csv", competition / "sample_submission.csv")


def test_check_submission_lists_only_first_rows():
    sub = pd.DataFrame({"id": [f"a{i}" for i in range(20)], "label": ["x"] * 10 + [""] * 10})
    with pytest.raises(SubmissionError) as e:
        check_submission(sub, [f"a{i}" for i in range(20)], "id", "label", classes=["x", "y"])
    msg = str(e.value)
    assert "10 rows with an empty label" in msg and "line 12 'a10'" in msg and "(5 more)" in msg
    check_submission(sub.iloc[:10], [f"a{i}" for i in range(10)], "id", "label", classes=["x"])  # valid: no error
