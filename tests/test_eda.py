"""comp eda on the sample competition with planted duplicates, label conflicts, leakage and broken files."""

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from bad_images import bad_config, build_bad_competition
from click.testing import CliRunner
from conftest import write_config
from PIL import Image

from comp.cli import cli
from comp.config import load_config
from comp.data.folds import make_folds
from comp.reports.eda import find_duplicates, near_pairs, run_eda
from comp.reports.page import safe_name

QUIET = {"echo": lambda s: None, "progress": False}


def _brighten(src: Path, dst: Path, delta: int = 3) -> None:
    a = np.asarray(Image.open(src).convert("L"), dtype=np.int16)
    Image.fromarray(np.clip(a + delta, 0, 255).astype(np.uint8)).save(dst)


@pytest.fixture(scope="module")
def planted(competition, tmp_path_factory):
    """A copy of the sample competition plus: an exact copy in the same class, an exact copy under another class,
    a near copy (pixels +3) in another fold, a class with '/', spaces and Unicode, and three broken rows."""
    work = tmp_path_factory.mktemp("eda")
    root = work / "comp"
    shutil.copytree(competition, root)
    imgs = root / "train_images"
    train = pd.read_csv(root / "train.csv", dtype=str, keep_default_na=False)
    ids, labels = train["image_id"].tolist(), train["label"].tolist()
    other = next(lab for lab in labels if lab != labels[1])
    shutil.copy(imgs / f"{ids[0]}.png", imgs / "dup_same.png")
    shutil.copy(imgs / f"{ids[1]}.png", imgs / "dup_conflict.png")
    _brighten(imgs / f"{ids[2]}.png", imgs / "near_copy.png")
    (imgs / "zero.png").write_bytes(b"")
    (imgs / "text.png").write_text("not an image")
    extra = [("dup_same", labels[0]), ("dup_conflict", other), ("near_copy", labels[2]),
             ("zero", labels[3]), ("text", labels[3]), ("gone", labels[3])]
    train = pd.concat([train, pd.DataFrame(extra, columns=["image_id", "label"])], ignore_index=True)
    odd = "Bag / Öko tasche"
    train.loc[train.index[10:16], "label"] = odd
    train.to_csv(root / "train.csv", index=False)
    write_config(work, root)
    cfg = load_config(work / "comp.yaml")
    old = os.getcwd()
    os.chdir(work)
    try:
        make_folds(cfg, n_splits=4, skip_bad=True, echo=lambda s: None)
    finally:
        os.chdir(old)
    folds_path = work / "folds" / "folds.csv"
    folds = pd.read_csv(folds_path, dtype=str, keep_default_na=False)
    f_orig = int(folds.loc[folds["image_id"] == ids[2], "fold"].iloc[0])
    folds.loc[folds["image_id"] == "near_copy", "fold"] = str((f_orig + 1) % 4)  # leak across folds
    folds.to_csv(folds_path, index=False)
    return {"work": work, "root": root, "ids": ids, "labels": labels, "other": other, "odd": odd}


@pytest.fixture(scope="module")
def report(planted):
    cfg = load_config(planted["work"] / "comp.yaml")
    old = os.getcwd()
    os.chdir(planted["work"])
    try:
        page = run_eda(cfg, out="reports/eda", **QUIET)
    finally:
        os.chdir(old)
    return planted["work"] / page


def _pair(pairs: pd.DataFrame, a: str, b: str) -> pd.Series:
    ia, ib = pairs["image_id_a"], pairs["image_id_b"]
    m = ((ia == a) & (ib == b)) | ((ia == b) & (ib == a))
    assert m.sum() == 1, f"pair {a}-{b} not found once in duplicates.csv"
    return pairs[m].iloc[0]


def test_duplicates_conflicts_and_leakage_are_found(planted, report):
    pairs = pd.read_csv(report.parent / "duplicates.csv", dtype={"image_id_a": str, "image_id_b": str})
    ids = planted["ids"]
    same = _pair(pairs, ids[0], "dup_same")
    assert same["kind"] == "exact" and bool(same["same_label"])
    conflict = _pair(pairs, ids[1], "dup_conflict")
    assert conflict["kind"] == "exact" and not bool(conflict["same_label"])
    near = _pair(pairs, ids[2], "near_copy")
    assert near["kind"] == "near" and bool(near["cross_fold"]) and near["distance"] <= 3
    html = report.read_text(encoding="utf-8")
    conflicts = re.search(r'<section id="dup-label-conflicts">(.*?)</section>', html, re.DOTALL).group(1)
    assert "dup_conflict" in conflicts and planted["other"] in conflicts
    leak = re.search(r'<section id="dup-across-folds">(.*?)</section>', html, re.DOTALL).group(1)
    assert "near_copy" in leak
    summary = json.loads((report.parent / "summary.json").read_text(encoding="utf-8"))
    assert summary["label_conflicts"] >= 1 and summary["cross_fold_pairs"] >= 1 and summary["exact_pairs"] >= 2


def test_page_sections_figures_and_files(planted, report):
    folder = report.parent
    html = report.read_text(encoding="utf-8")
    for sid in ("overview", "class-counts", "sizes", "formats", "pixels", "brightness", "samples", "duplicates",
                "dup-label-conflicts", "dup-across-folds", "dup-within-a-class", "problems"):
        assert f'<section id="{sid}">' in html, sid
    srcs = re.findall(r'<img src="([^"]+)"', html)
    assert len(srcs) > 30
    for src in srcs:
        assert not src.startswith(("/", "http", "data:")), src  # relative: the folder is self-contained
        with Image.open(folder / src) as im:
            assert im.format == "PNG" and im.size[0] > 0
    for png in ("class_counts.png", "class_counts_by_fold.png", "image_sizes.png", "aspect_ratios.png",
                "pixel_histograms.png", "brightness_contrast.png"):
        assert png in srcs
    # thumbnails are named by row position only; the odd class name shows escaped, never in a file name
    assert all(re.fullmatch(r"\d+\.png", p.name) for p in (folder / "thumbs").iterdir())
    assert "Bag / Öko tasche" in html
    assert not any("Öko" in p.name for p in folder.rglob("*"))
    assert "<script" not in html and "stylesheet" not in html


def test_class_counts_and_pixel_stats_match_the_data(planted, report):
    summary = json.loads((report.parent / "summary.json").read_text(encoding="utf-8"))
    train = pd.read_csv(planted["root"] / "train.csv", dtype=str, keep_default_na=False)
    assert summary["class_counts"] == train["label"].value_counts().to_dict()
    assert summary["train_rows"] == len(train)
    # the sample is under PIXEL_SAMPLE images, so every readable image is in the statistics: exact values
    assert summary["pixel_sample"] == len(train) - 3  # zero, text and gone can't be read
    arrs = []
    for i in train["image_id"]:
        p = planted["root"] / "train_images" / f"{i}.png"
        try:
            arrs.append(np.asarray(Image.open(p).convert("RGB"), dtype=np.float64).reshape(-1, 3) / 255)
        except (OSError, ValueError):
            continue
    px = np.concatenate(arrs)
    np.testing.assert_allclose(summary["pixel_mean"], px.mean(0), atol=1e-9)
    np.testing.assert_allclose(summary["pixel_std"], px.std(0), atol=1e-9)
    html = report.read_text(encoding="utf-8")
    assert f"mean: [{', '.join(f'{m:.4f}' for m in px.mean(0))}]" in html


def test_problems_from_comp_check_are_reported(report):
    check = pd.read_csv(report.parent / "check.csv", dtype=str, keep_default_na=False)
    found = dict(zip(check["image_id"], check["problem"]))
    assert found["zero"] == "empty_file" and found["text"] == "not_an_image" and found["gone"] == "missing_file"
    html = report.read_text(encoding="utf-8")
    problems = re.search(r'<section id="problems">(.*?)</section>', html, re.DOTALL).group(1)
    for word in ("empty_file", "not_an_image", "missing_file", "zero", "gone"):
        assert word in problems


def test_max_images_samples_and_says_so(planted, tmp_path, monkeypatch):
    monkeypatch.chdir(planted["work"])
    cfg = load_config(planted["work"] / "comp.yaml")
    page = run_eda(cfg, out=tmp_path / "small", max_images=100, **QUIET)
    imgs = pd.read_csv(page.parent / "images.csv", dtype=str, keep_default_na=False)
    assert (imgs["phash"] != "").sum() == 100
    assert "random sample of 100" in page.read_text(encoding="utf-8")
    assert json.loads((page.parent / "summary.json").read_text())["hashed_images"] == 100


def test_cli_exits_0_on_a_broken_folder_and_replaces_only_reports(tmp_path, monkeypatch):
    root = tmp_path / "bad"
    build_bad_competition(root)
    monkeypatch.chdir(tmp_path)
    bad_config(tmp_path, root)
    runner = CliRunner()
    res = runner.invoke(cli, ["eda", "--out", "reports/eda"])
    assert res.exit_code == 0, res.output
    assert "problem rows" in res.output and (tmp_path / "reports/eda/index.html").exists()
    check = pd.read_csv(tmp_path / "reports/eda/check.csv", dtype=str, keep_default_na=False)
    assert {"empty_file", "truncated", "too_large", "unsafe_path", "label_conflict"} <= set(check["problem"])
    html = (tmp_path / "reports/eda/index.html").read_text(encoding="utf-8")
    assert "twin_b.bmp" in html  # the pixel-identical pair under two labels is a label conflict on the page
    res = runner.invoke(cli, ["eda", "--out", "reports/eda"])  # an earlier report is replaced
    assert res.exit_code == 0, res.output
    (tmp_path / "keep").mkdir()
    (tmp_path / "keep" / "notes.txt").write_text("mine")
    res = runner.invoke(cli, ["eda", "--out", "keep"])
    assert res.exit_code == 1 and "not a comp report" in res.output
    assert (tmp_path / "keep" / "notes.txt").read_text() == "mine"


def test_near_pairs_matches_brute_force():
    rng = np.random.default_rng(0)
    h = rng.integers(0, 2**63, 700, dtype=np.uint64) | (rng.integers(0, 2, 700, dtype=np.uint64) << np.uint64(63))
    h[100] = h[5] ^ np.uint64(0b101)  # distance 2
    h[600] = h[5]  # distance 0
    h[650] = h[42] ^ np.uint64(1 << 63)  # top bit
    i, j, d, complete = near_pairs(h, 3)
    got = set(zip(i.tolist(), j.tolist(), d.tolist()))
    dist = np.array([[(int(a) ^ int(b)).bit_count() for b in h] for a in h])
    want = {(a, b, int(dist[a, b])) for a in range(700) for b in range(a + 1, 700) if dist[a, b] <= 3}
    assert complete and got == want and {(5, 100, 2), (5, 600, 0), (42, 650, 1)} <= got
    _, _, _, complete = near_pairs(np.zeros(50, np.uint64), 0, max_pairs=100)
    assert not complete  # 1225 identical pairs: stopped and said so


def test_find_duplicates_labels_pairs():
    t = pd.DataFrame({"id": ["a", "b", "c", "d"], "label": ["x", "x", "y", "y"], "fold": [0, 1, 1, np.nan],
                      "exact_key": ["k1", "k1", None, None],
                      "phash": [np.uint64(7), np.uint64(7), np.uint64(7 ^ 3), np.uint64(2**63 | 0xFF00)]})
    pairs, _complete = find_duplicates(t, near_threshold=2)
    got = {(r.id_a, r.id_b): (r.kind, r.same_label, r.cross_fold) for r in pairs.itertuples()}
    assert got == {("a", "b"): ("exact", True, True), ("a", "c"): ("near", False, True),
                   ("b", "c"): ("near", False, False)}


def test_safe_name():
    assert safe_name("T-shirt/top", 0) == "000_T-shirt-top"
    assert safe_name("../../etc passwd", 3) == "003_etc-passwd"
    assert safe_name("猫", 12) == "012_class"
