"""comp check on a folder with one of every problem, and on the clean sample competition."""

import shutil

import pandas as pd
import pytest
from bad_images import bad_config, build_bad_competition
from click.testing import CliRunner

from comp.cli import cli
from comp.config import load_config
from comp.data import check
from comp.data.check import clean_train, run_check
from comp.data.competition import DataError


@pytest.fixture(scope="module")
def bad(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad") / "comp"
    info = build_bad_competition(root)
    return root, info


@pytest.fixture
def bad_cfg(bad, tmp_path, monkeypatch):
    root, _ = bad
    monkeypatch.chdir(tmp_path)
    return load_config(bad_config(tmp_path, root))


def test_every_problem_is_found_and_nothing_else(bad, bad_cfg, tmp_path):
    root, info = bad
    report = run_check(bad_cfg, out_dir=tmp_path / "reports", echo=lambda s: None, progress=False)
    assert not report.ok
    p = report.problems
    train = p[p["split"] == "train"]
    found = {}
    for i, prob in zip(train["id"], train["problem"]):
        found.setdefault(i, set()).add(prob)
    for i, prob in info["problems"].items():
        assert prob in found.get(i, set()), (i, prob, found.get(i))
    for i in info["fine"]:  # CMYK, RGBA, 16-bit, EXIF, palette, gray: not problems
        assert i not in found
    assert set(found) == set(info["problems"])
    test = p[p["split"] == "test"]
    assert dict(zip(test["id"], test["problem"])) == info["test_problems"]
    # the ../ id is refused and never decoded, although a real image lies there
    assert (root / "secret.png").exists()
    assert str((root / "secret.png").resolve()) not in report.digests
    # both rows of the label conflict, each naming the other
    conflict = train[train["problem"] == "label_conflict"].set_index("id")["detail"]
    assert "twin_b.bmp" in conflict["twin_a.png"] and "twin_a.png" in conflict["twin_b.bmp"]
    assert report.summary["label_conflict"] == 2 and report.summary["duplicate_id"] == 2


def test_check_csv_one_row_per_problem(bad, bad_cfg, tmp_path):
    report = run_check(bad_cfg, out_dir=tmp_path / "reports", echo=lambda s: None, progress=False)
    csv = pd.read_csv(tmp_path / "reports" / "check.csv", dtype=str, keep_default_na=False)
    assert list(csv.columns[:4]) == ["image_id", "file", "problem", "detail"]
    assert len(csv) == len(report.problems)
    assert not csv["image_id"].isin(bad[1]["fine"]).any()
    assert csv.loc[csv["image_id"] == "huge.png", "detail"].str.contains("max_pixels").all()


def test_cli_check_exit_code_and_summary(bad, bad_cfg, tmp_path):
    r = CliRunner().invoke(cli, ["check", "-c", str(tmp_path / "comp.yaml"), "--out", str(tmp_path / "rep")])
    assert r.exit_code == 1, r.output
    assert "truncated" in r.output and "label_conflict" in r.output and "problem" in r.output
    assert (tmp_path / "rep" / "check.csv").exists()


def test_clean_sample_passes_with_header_only_csv(cfg, workdir):
    r = CliRunner().invoke(cli, ["check"])
    assert r.exit_code == 0, r.output
    assert "no problems" in r.output
    text = (workdir / "reports" / "check.csv").read_text()
    assert text.strip() == "image_id,file,problem,detail,split,row"


def test_pool_and_serial_agree(cfg, bad_cfg, monkeypatch):
    def both(c):
        b = run_check(c, out_dir=None, workers=1, echo=lambda s: None, progress=False, cache_dir=None)
        with monkeypatch.context() as m:  # small sets are decoded serially; force the pool
            m.setattr(check, "SERIAL_BELOW", 0)
            m.setattr(check, "SERIAL_BELOW_BYTES", 0)
            a = run_check(c, out_dir=None, workers=2, echo=lambda s: None, progress=False, cache_dir=None)
        return a, b

    a, b = both(cfg)
    assert a.ok and b.ok
    assert a.n_images == 750 and a.digests == b.digests
    a, b = both(bad_cfg)
    pd.testing.assert_frame_equal(a.problems, b.problems)
    assert a.digests == b.digests


def test_cache_reuses_results_and_sees_changes(tmp_path, bad, monkeypatch):
    root = tmp_path / "copy"
    shutil.copytree(bad[0], root)
    monkeypatch.chdir(tmp_path)
    cfg = load_config(bad_config(tmp_path, root))
    first = run_check(cfg, out_dir=None, echo=lambda s: None, progress=False)
    assert list((tmp_path / "runs" / ".cache").glob("check-*.json"))
    again = run_check(cfg, out_dir=None, echo=lambda s: None, progress=False)
    pd.testing.assert_frame_equal(first.problems, again.problems)
    (root / "train_images" / "ok_00.png").write_bytes(b"")  # a healthy file goes bad: must not come from cache
    after = run_check(cfg, out_dir=None, echo=lambda s: None, progress=False)
    hit = after.problems[after.problems["id"] == "ok_00.png"]
    assert hit["problem"].tolist() == ["empty_file"]


def test_clean_train_refuses_then_skips(bad, bad_cfg):
    with pytest.raises(DataError, match="--skip-bad") as e:
        clean_train(bad_cfg, echo=lambda s: None)
    assert "comp check" in str(e.value)
    lines = []
    df = clean_train(bad_cfg, skip_bad=True, echo=lines.append)
    assert sorted(df["id"]) == sorted(bad[1]["fine"])  # both conflict rows and both duplicate rows gone
    text = "\n".join(lines)
    for i in bad[1]["problems"]:
        assert f"'{i}'" in text
    assert set(df.columns) >= {"id", "label", "path", "row"}
