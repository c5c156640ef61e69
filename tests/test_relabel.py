"""comp relabel (confident learning on the OOF) and data.relabel (accepted rows change training labels only)."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from click.testing import CliRunner
from conftest import write_config

from comp.cli import cli
from comp.config import ConfigError, load_config
from comp.data.competition import DataError
from comp.data.folds import make_folds
from comp.data.sample import make_sample
from comp.techniques import sources
from comp.techniques.relabel import find_suspects
from comp.train.rows import make_pool
from comp.train.session import train_folds

QUIET = {"echo": lambda s: None}


def load_table(cfg, skip_bad, echo):
    """The training table as the trainer builds it, data.relabel plugged in (comp.train.rows)."""
    pool = make_pool(cfg, skip_bad, echo, sources(cfg))
    return pool.table, pool.classes


def test_find_suspects_rules_and_order():
    # Class thresholds: mean p(own class) over rows labelled with it: 0.7, 0.575 and 0.9.
    y = np.array([0, 0, 0, 1, 1, 2, 2])
    probs = np.array([
        [0.90, 0.05, 0.05],  # confident and right
        [0.80, 0.10, 0.10],
        [0.40, 0.55, 0.05],  # p0 < 0.7, p1 = 0.55 < 0.575 but the argmax: argmax rule -> suggests 1
        [0.05, 0.95, 0.00],
        [0.75, 0.20, 0.05],  # p1 < 0.575 and p0 = 0.75 >= 0.7: confident rule -> suggests 0
        [0.00, 0.00, 1.00],
        [0.01, 0.19, 0.80],  # p2 < 0.9 but no other class reaches its threshold, argmax is 2: not a suspect
    ])
    s = find_suspects(y, probs)
    np.testing.assert_allclose(s.thresholds, [0.7, 0.575, 0.9])
    assert s.pos.tolist() == [4, 2]  # lowest p(given) first: 0.20, then 0.40
    assert s.suggested.tolist() == [0, 1]
    assert s.rule.tolist() == ["confident", "argmax"]


def _relabel_csv(path: Path, rows: list[dict]) -> Path:
    pd.DataFrame(rows, columns=["id", "fold", "given", "suggested", "accept"]).to_csv(path, index=False)
    return path


def test_data_relabel_changes_training_targets_only(workdir, competition):
    make_folds(load_config(workdir / "comp.yaml"), n_splits=2, **QUIET)
    train = pd.read_csv(competition / "train.csv", dtype=str)
    classes = sorted(train["label"].unique())
    a, b, c = train.iloc[0], train.iloc[1], train.iloc[2]
    other = next(x for x in classes if x != a["label"])
    _relabel_csv(workdir / "relabel.csv", [
        {"id": a["image_id"], "fold": 0, "given": a["label"], "suggested": other, "accept": "accept"},
        {"id": b["image_id"], "fold": 0, "given": b["label"], "suggested": other, "accept": "drop"},
        {"id": c["image_id"], "fold": 0, "given": c["label"], "suggested": other, "accept": ""},
    ])
    (workdir / "configs").mkdir()
    (workdir / "configs" / "clean.yaml").write_text(yaml.safe_dump({"data": {"relabel": "relabel.csv"}}))
    said = []
    cfg = load_config(workdir / "comp.yaml", exp="clean")
    table, cls = load_table(cfg, skip_bad=False, echo=said.append)
    t = table.set_index("id")
    assert cls[t.loc[a["image_id"], "y_train"]] == other and t.loc[a["image_id"], "label"] == a["label"]
    assert cls[t.loc[a["image_id"], "y"]] == a["label"]  # validation / OOF keep the given label
    assert not t.loc[b["image_id"], "train_use"] and t["train_use"].sum() == len(t) - 1
    assert t.loc[c["image_id"], "y_train"] == t.loc[c["image_id"], "y"]
    assert (t["y_train"] != t["y"]).sum() == 1
    assert any("1 training labels changed (accepted" in s and "1 rows dropped" in s for s in said)

    # A real (tiny) run with it: the OOF still holds every row once, with its given label.
    cfg = load_config(workdir / "comp.yaml", exp="clean", overrides=[
        "model.name=test_resnet", "input.size=32", "train.epochs=1", "train.batch_size=64"])
    with pytest.raises(ConfigError, match=r"data.relabel is set, but no source for it was given"):
        train_folds(cfg, **QUIET)  # a technique is never silently left out of training
    said = []
    train_folds(cfg, echo=said.append, sources=sources(cfg))
    # Two folds leave no row to train a fold-safe pair model on: the accepted row is kept as given, and said.
    assert any("fold 1: data.relabel through fold-safe suggestions" in s and "0 accepted relabels applied, 1 kept "
               "as given" in s and "use 3 or more folds" in s for s in said), said
    oof = pd.read_csv(workdir / "runs" / "clean" / "oof.csv", dtype=str).set_index("image_id")
    assert len(oof) == len(train)
    assert oof.loc[a["image_id"], "label"] == a["label"] and b["image_id"] in oof.index


def test_data_relabel_errors_name_line_and_key(workdir, competition):
    make_folds(load_config(workdir / "comp.yaml"), n_splits=2, **QUIET)
    train = pd.read_csv(competition / "train.csv", dtype=str)
    a = train.iloc[0]
    _relabel_csv(workdir / "bad.csv", [{"id": a["image_id"], "fold": 0, "given": a["label"], "suggested": "Nope",
                                        "accept": "accept"}])
    cfg = load_config(workdir / "comp.yaml", overrides=["data.relabel=bad.csv"], exp="x")
    with pytest.raises(DataError, match=r"bad.csv line 2: suggested label 'Nope' is not a class"):
        load_table(cfg, skip_bad=False, echo=QUIET["echo"])
    _relabel_csv(workdir / "bad.csv", [{"id": a["image_id"], "fold": 0, "given": a["label"], "suggested": a["label"],
                                        "accept": "maybe"}])
    with pytest.raises(DataError, match=r"line 2: accept='maybe'; write accept, drop, or leave it empty"):
        load_table(cfg, skip_bad=False, echo=QUIET["echo"])
    cfg = load_config(workdir / "comp.yaml", overrides=["data.relabel=missing.csv"], exp="x")
    with pytest.raises(ConfigError, match="data.relabel: .*missing.csv not found"):
        load_table(cfg, skip_bad=False, echo=QUIET["echo"])
    # An experiment file may set data.relabel, but not the competition's own data keys.
    (workdir / "configs").mkdir()
    (workdir / "configs" / "y.yaml").write_text(yaml.safe_dump({"data": {"label_col": "x"}}))
    with pytest.raises(ConfigError, match="data.label_col describes the competition and belongs in comp.yaml"):
        load_config(workdir / "comp.yaml", exp="y")


@pytest.mark.slow
def test_relabel_finds_flipped_labels(tmp_path, monkeypatch):
    """30 labels flipped on purpose in a 2,000-image comp sample: >= 80% found, <= 20% false among the top 30."""
    root = tmp_path / "data"
    make_sample(root, n_train=2000, n_test=20, seed=3)
    train = pd.read_csv(root / "train.csv", dtype=str)
    classes = sorted(train["label"].unique())
    truth = dict(zip(train["image_id"], train["label"]))
    rng = np.random.default_rng(0)
    flip = rng.choice(len(train), 30, replace=False)
    for i in flip:
        train.loc[i, "label"] = rng.choice([c for c in classes if c != train.loc[i, "label"]])
    train.to_csv(root / "train.csv", index=False)
    flipped = set(train["image_id"].iloc[flip])
    work = tmp_path / "work"
    work.mkdir()
    write_config(work, root)
    monkeypatch.chdir(work)
    make_folds(load_config(work / "comp.yaml"), n_splits=3, **QUIET)
    cfg = load_config(work / "comp.yaml", exp="noisy", overrides=[
        "model.name=test_resnet", "input.size=32", "train.epochs=12", "train.batch_size=32", "train.lr=3e-3"])
    train_folds(cfg, **QUIET)

    res = CliRunner().invoke(cli, ["relabel", "--exp", "noisy", "--gallery", "12"])
    assert res.exit_code == 0, res.output
    assert "suspects among 2,000 OOF rows" in res.output
    sus = pd.read_csv(work / "reports" / "noisy" / "relabel.csv", dtype=str, keep_default_na=False)
    assert list(sus.columns[:7]) == ["id", "fold", "given", "suggested", "rule", "p_given", "p_suggested"]
    assert sus.columns[-1] == "accept" and (sus["accept"] == "").all()
    found = sus["id"].isin(flipped).sum()
    top = sus.head(30)
    assert found >= 24, f"only {found} of 30 flipped labels among {len(sus)} suspects"
    assert (~top["id"].isin(flipped)).sum() <= 6, top
    # The suggestions for the flipped rows found mostly restore the true label.
    hit = sus[sus["id"].isin(flipped)]
    assert (hit["suggested"] == hit["id"].map(truth)).mean() >= 0.7
    page = (work / "reports" / "noisy" / "relabel" / "index.html").read_text(encoding="utf-8")
    assert page.count("Grad-CAM for") >= 12 and "relabel.csv" in page

    # The file is never overwritten silently (the same command again is a no-op that keeps the marks; another
    # gallery size is refused), and comp analyze keeps it (it shares reports/noisy/).
    marked = (work / "reports" / "noisy" / "relabel.csv").read_bytes()
    res = CliRunner().invoke(cli, ["relabel", "--exp", "noisy", "--gallery", "12"])
    assert res.exit_code == 0 and "nothing to do" in res.output, res.output
    assert (work / "reports" / "noisy" / "relabel.csv").read_bytes() == marked
    res = CliRunner().invoke(cli, ["relabel", "--exp", "noisy", "--gallery", "5"])
    assert res.exit_code == 1 and "--overwrite" in res.output
    res = CliRunner().invoke(cli, ["analyze", "--exp", "noisy"])
    assert res.exit_code == 0, res.output
    assert (work / "reports" / "noisy" / "relabel.csv").exists()
    assert (work / "reports" / "noisy" / "relabel" / "index.html").exists()
    assert (work / "reports" / "noisy" / "index.html").exists()


@pytest.mark.slow
def test_fold_k_relabels_only_through_pair_models_that_never_saw_fold_k(workdir, competition):
    """data.relabel cross-fitted (issue 17): fold k's accepted relabels go through pair models trained without fold
    k (runs/E/relabel_pairs/pair_j_k), each trained once, read back by the other fold that needs it, and the
    cost is printed. Before issue 17 no pair model existed and fold k trained on every accepted row as written."""
    make_folds(load_config(workdir / "comp.yaml"), n_splits=3, **QUIET)
    folds = pd.read_csv(workdir / "folds" / "folds.csv", dtype=str)
    classes = sorted(folds["label"].unique())
    picks = folds.groupby("fold").head(4)  # 4 rows of each fold, accepted as another class
    _relabel_csv(workdir / "relabel.csv", [
        {"id": r.image_id, "fold": r.fold, "given": r.label, "accept": "accept",
         "suggested": classes[(classes.index(r.label) + 1) % len(classes)]} for r in picks.itertuples()]
        # one row left unmarked: a person's partial marks (every row accepted is the data.relabel: auto path)
        + [{"id": r.image_id, "fold": r.fold, "given": r.label, "accept": "", "suggested": r.label}
           for r in folds.drop(picks.index).head(1).itertuples()])
    cfg = load_config(workdir / "comp.yaml", exp="cf", overrides=[
        "model.name=test_resnet", "input.size=32", "train.epochs=1", "train.batch_size=64", "data.relabel=relabel.csv"])
    said = []
    train_folds(cfg, folds=[0], echo=said.append, sources=sources(cfg))
    pairs = workdir / "runs" / "cf" / "relabel_pairs"
    assert sorted(p.name for p in pairs.iterdir() if p.is_dir()) == ["pair_0_1", "pair_0_2"]  # fold 0's only
    for name in ("pair_0_1", "pair_0_2"):
        held = set(yaml.safe_load((pairs / f"{name}.split.json").read_text())["held_out"])
        assert 0 in held and len(held) == 2  # trained on the third fold's rows alone
        assert (pairs / name / "done.json").exists()
    line = next(s for s in said if s.startswith("fold 0: data.relabel through fold-safe suggestions"))
    assert "accepted relabels applied" in line and "2 pair models (pair_0_1, pair_0_2; 2 trained now" in line
    applied = int(line.split("accepted relabels applied")[0].split()[-1])
    kept = int(line.split(" kept as given")[0].split()[-1])
    assert applied + kept == 8  # fold 1's and fold 2's accepted rows, each applied or kept as given
    said.clear()
    train_folds(cfg, folds=[1], echo=said.append, sources=sources(cfg))
    line = next(s for s in said if s.startswith("fold 1: data.relabel through fold-safe suggestions"))
    assert "(pair_0_1, pair_1_2; 1 trained now, 1 read back)" in line


@pytest.mark.slow
def test_accepting_every_suggestion_makes_fold_k_blind_to_fold_k_labels(tmp_path, competition, monkeypatch):
    """data.relabel: auto (every suggestion accepted; issue 17's done-when case). Fold 0's training targets must not
    depend on fold 0's labels, so fold 0's weights are identical when fold 0's labels are scrambled. This is the
    biggest chance to leak: before this, "accept every suggestion" meant relabel.csv's list, and which fold-j rows
    that list holds was decided by fold-j models trained on fold 0's labels (a near-duplicate's noisy label moves
    its twin onto the list); measured on near-duplicates it raised the CV 0.037 more than the hold-out."""
    from safetensors.torch import load_file

    folds = None
    weights, said = [], []
    for scrambled in (False, True):
        root, work = tmp_path / f"data{scrambled}", tmp_path / f"work{scrambled}"
        root.mkdir()
        work.mkdir()
        for d in ("train_images", "test_images"):
            (root / d).symlink_to(competition / d)
        (root / "sample_submission.csv").write_bytes((competition / "sample_submission.csv").read_bytes())
        train = pd.read_csv(competition / "train.csv", dtype=str)
        write_config(work, root)
        monkeypatch.chdir(work)
        if folds is None:
            train.to_csv(root / "train.csv", index=False)
            make_folds(load_config(work / "comp.yaml"), n_splits=3, **QUIET)
            folds = pd.read_csv(work / "folds" / "folds.csv", dtype=str)
        else:  # fold 0's labels permuted among its rows (class counts unchanged)
            mine = (folds["fold"] == "0").to_numpy()
            new = folds.copy()
            new.loc[mine, "label"] = np.random.default_rng(0).permutation(folds.loc[mine, "label"].to_numpy())
            assert (new["label"] != folds["label"]).sum() > 100
            (work / "folds").mkdir()
            new.to_csv(work / "folds" / "folds.csv", index=False)
            train.set_index("image_id").loc[new["image_id"]].assign(label=new["label"].to_numpy()).reset_index() \
                .to_csv(root / "train.csv", index=False)
        cfg = load_config(work / "comp.yaml", exp="every", overrides=[
            "model.name=test_resnet", "input.size=32", "train.epochs=1", "train.batch_size=64", "train.ema=false",
            "data.relabel=auto"])
        said.clear()
        train_folds(cfg, folds=[0], echo=said.append, sources=sources(cfg))
        weights.append(load_file(str(work / "runs" / "every" / "fold_0" / "model.safetensors")))
        line = next(s for s in said if s.startswith("fold 0: data.relabel, every suggestion accepted"))
        assert "2 pair models (pair_0_1, pair_0_2; 2 trained now" in line
        assert int(line.split(" training labels changed")[0].split()[-1]) > 0  # the pair models did relabel
        assert any("every suggestion accepted, so each fold k takes the fold-safe" in s for s in said)
    assert weights[0].keys() == weights[1].keys()
    for k in weights[0]:
        assert torch_equal(weights[0][k], weights[1][k]), k


def torch_equal(a, b) -> bool:
    import torch

    return bool(torch.equal(a, b))
