"""Full-data refit (`comp train --full`): its length from the CV, its files (no OOF), predict/ensemble --use, and
a full run interrupted in a later seed resuming, in a new process, to an uninterrupted run's weights."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file
from train_utils import TINY, folded_workdir, quiet, tiny_cfg

from comp import runs
from comp.cli import cli
from comp.config import ConfigError, load_config
from comp.data.competition import DataError
from comp.data.folds import make_folds
from comp.infer import ledger
from comp.techniques import sources
from comp.train.defaults import fit_defaults
from comp.train.refit import full_epochs, plan_full
from comp.train.session import train_folds, train_full
from comp.train.state import check_state

SETS = [a for s in TINY for a in ("--set", s)]
ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")  # same threads in every run: same sums


def test_full_epochs_rule(workdir):
    cfg = load_config(workdir / "comp.yaml", exp="e", overrides=["folds.n_splits=3"])
    make_folds(cfg, n_splits=3, echo=lambda s: None)
    with pytest.raises(DataError, match=r"fold\(s\) \[0, 1, 2\] of e are not finished"):
        full_epochs(cfg)
    for k, best in enumerate([4, 6, 5]):
        d = workdir / "runs" / "e" / f"fold_{k}"
        d.mkdir(parents=True)
        (d / "done.json").write_text(json.dumps({"fold": k, "epoch": best, "score": 0.5, "ema": k == 0}))
    folds = pd.read_csv(workdir / "folds" / "folds.csv")
    n_all = len(folds)
    n_train = np.mean([(folds["fold"] != k).sum() for k in range(3)])
    epochs, why = full_epochs(cfg)
    assert epochs == round(5 * n_all / n_train) == 8  # median 5 x 600/400
    assert "median best epoch 5" in why and "-> 8 epochs" in why
    # Seed i trains with train.seed + i; EMA weights only when most folds kept theirs (1 of 3 here: raw).
    plan = plan_full(load_config(workdir / "comp.yaml", exp="e", overrides=["folds.n_splits=3", "train.ema=true"]), 3)
    assert [c.train.seed for c in plan.configs] == [42, 43, 44] and {c.train.epochs for c in plan.configs} == {8}
    assert plan.ema is False and "1 of 3 folds kept their EMA weights" in plan.ema_why
    with pytest.raises(ConfigError, match="plateau"):
        plan_full(load_config(workdir / "comp.yaml", exp="e", overrides=["train.scheduler=plateau"]))


@contextlib.contextmanager
def one_thread():
    """Torch on one thread, as the new processes (OMP_NUM_THREADS=1): same sums, so the same weights."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def comp_in_process(*args, ok=True) -> str:
    r = CliRunner().invoke(cli, list(args))
    assert (r.exit_code == 0) == ok, r.output
    return r.output


def comp_process(cwd, *args) -> str:
    r = subprocess.run([sys.executable, "-m", "comp", *args], cwd=cwd, env=ENV, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, f"{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r.stdout + r.stderr


FULL = ["train", "--exp", "e", *SETS, "--set", "train.epochs=1", "--full", "--seeds", "2"]


@pytest.fixture(scope="module")
def refit(tmp_path_factory, competition):
    """E = `e` (3 folds, 1 epoch each), then `comp train --exp e --full --seeds 2`."""
    with folded_workdir(tmp_path_factory, competition, "refit") as cwd:
        train_folds(tiny_cfg(cwd, "e", "train.epochs=1"), echo=quiet)
        with one_thread():
            out = comp_in_process(*FULL)
    return cwd, out


@pytest.mark.slow
def test_full_cli_train_predict_ensemble(refit, monkeypatch, competition):
    cwd, out = refit
    monkeypatch.chdir(cwd)
    run = cwd / "runs" / "e"
    # The length comes from the CV and is printed: best epoch 1 in every fold x 600/400 -> 2 epochs.
    assert "median best epoch 1 over 3 folds (best epochs [1, 1, 1]) x n_all/n_train = 600/400 = 1.500 -> 2 epochs" \
        in out
    assert "full_s0: 600 train / 0 val images" in out and "full_s1: 600 train / 0 val images" in out
    for i in (0, 1):
        fd = run / f"full_s{i}"
        done = json.loads((fd / "done.json").read_text())
        meta = json.loads((fd / "model.json").read_text())
        for d in (done, meta):
            assert d["full"] is True and d["epochs"] == 2 and d["seed"] == 42 + i and d["oof"] is None
            assert "no row is left" in d["oof_why"]
        assert done["epochs_run"] == 2 and meta["epoch"] == 2 and meta["fold"] is None
        assert not (fd / "oof.csv").exists() and not (fd / "state").exists() and (fd / "curves.png").exists()
        m = pd.read_csv(fd / "metrics.csv")
        assert m["epoch"].tolist() == [1, 2] and m["val_loss"].isna().all() and m["train_loss"].notna().all()
    w0, w1 = (load_file(str(run / f"full_s{i}" / "model.safetensors")) for i in (0, 1))
    assert any(not torch.equal(w0[k], w1[k]) for k in w0), "two seeds gave the same model"

    comp = comp_in_process
    before = (run / "full_s1" / "model.safetensors").stat().st_mtime_ns
    o = comp(*FULL)
    assert "full_s0: already finished" in o and "full_s1: already finished" in o
    assert (run / "full_s1" / "model.safetensors").stat().st_mtime_ns == before
    # E's recipe only: another lr is refused, naming why; an experiment without finished folds too.
    o = comp("train", "--exp", "e", *SETS, "--set", "train.epochs=1", "--set", "train.lr=0.1", "--full", ok=False)
    assert "--full trains the recipe of runs/e" in o and "train.lr" in o
    o = comp("train", "--exp", "nofolds", *SETS, "--full", ok=False)
    assert "run comp train --exp nofolds --all-folds first" in o

    # ensemble --use full before its predictions exist names the command that makes them.
    o = comp("ensemble", "--exp", "e", "--use", "full", "--name", "x", ok=False)
    assert "test_full.csv not found" in o and "comp predict --exp e --use full" in o
    o = comp("predict", "--exp", "e", *SETS, "--use", "full", "--oof", ok=False)
    assert "the full models have none" in o
    comp("predict", "--exp", "e", *SETS)
    comp("predict", "--exp", "e", *SETS, "--use", "full")
    comp("predict", "--exp", "e", *SETS, "--use", "both")
    comp("predict", "--exp", "e", *SETS, "--fold", "1")
    classes = json.loads((run / "full_s0" / "model.json").read_text())["classes"]
    folds_p, full_p, both_p, one_p = (pd.read_csv(run / f, dtype={"image_id": str})[classes].to_numpy()
                                      for f in ("test.csv", "test_full.csv", "test_both.csv", "test_fold1.csv"))
    np.testing.assert_allclose(full_p.sum(1), 1, atol=1e-5)
    assert np.abs(full_p - folds_p).max() > 1e-3
    np.testing.assert_allclose(both_p, 0.5 * folds_p + 0.5 * full_p, atol=2e-6)  # each group weighs half
    by_fold = pd.read_csv(run / "test_folds.csv", dtype={"image_id": str})
    np.testing.assert_allclose(one_p, by_fold[by_fold["fold"] == 1][classes].to_numpy(), atol=1e-6)
    assert json.loads((run / "predict.json").read_text())["outputs"]["test_full.csv"]["models"] == ["full_s0",
                                                                                                     "full_s1"]

    comp("ensemble", "--exp", "e", "--name", "folds")
    o = comp("ensemble", "--exp", "e", "--use", "full", "--name", "refit")
    assert "test_full.csv" in o
    comp("score", "submissions/refit.csv", "--solution", str(competition / "solution.csv"))
    sub = pd.read_csv(cwd / "submissions" / "refit.csv", dtype=str).set_index("image_id")
    ids = pd.read_csv(run / "test_full.csv", dtype={"image_id": str})["image_id"]
    # The full models' argmax (one member, no bias), matched by id.
    assert (sub.loc[ids, "label"].to_numpy() == np.asarray(classes)[full_p.argmax(1)]).all()
    rows = ledger.read(cwd / "submissions" / "ledger.csv")
    a, b = (json.loads(rows.iloc[i]["options"]) for i in (0, 1))
    assert (a["use"], b["use"], b["cv_from"]) == ("folds", "full", "folds")
    assert rows.iloc[1]["cv_macro_f1"] == rows.iloc[0]["cv_macro_f1"]  # the CV is the folds' either way
    comp("leaderboard")


@pytest.mark.slow
def test_full_run_stopped_in_seed_1_resumes_in_a_new_process_to_the_same_weights(refit, monkeypatch):
    cwd, _ = refit
    monkeypatch.chdir(cwd)
    run = cwd / "runs" / "e"
    ref = load_file(str(run / "full_s1" / "model.safetensors"))
    shutil.rmtree(run / "full_s1")
    with one_thread():  # stopped in this process, resumed in a new one
        out = comp_in_process(*FULL, "--set", "train.stop_after_epochs=1")
    assert "full_s0: already finished" in out and "full_s1: stopped after 1 epochs" in out
    state = run / "full_s1" / "state"
    rec = json.loads((state / "trainer.json").read_text())
    assert rec["fold"] == "full_s1" and rec["epoch"] == 1 and not (run / "full_s1" / "done.json").exists()
    # The state belongs to seed 1's run: refused for another full run, or for the config of another seed.
    cfg = tiny_cfg(cwd, "e", "train.epochs=1")
    fit_defaults(cfg, lambda: [], echo=quiet, probe=False)  # as comp train --full does: the recorded fitted values
    digests = [runs.config_digest(c) for c in plan_full(cfg, 2).configs]
    assert rec["config_digest"] == digests[1] != digests[0]
    with pytest.raises(ConfigError, match="holds the state of full_s1, not of full_s0"):
        check_state(state, "full_s0", digests[1])
    with pytest.raises(ConfigError, match="different config"):
        check_state(state, "full_s1", digests[0])
    out = comp_process(cwd, *FULL, "--resume")
    assert "full_s1: resuming after epoch 1 of 2" in out and out.count("full_s1 epoch 2/2:") == 1
    got = load_file(str(run / "full_s1" / "model.safetensors"))
    for k in ref:
        assert torch.allclose(got[k].double(), ref[k].double(), rtol=0, atol=1e-6), f"weight {k} differs"
    assert not state.exists()


@pytest.mark.slow
def test_full_run_trains_without_data_relabel_dropped_rows(refit, monkeypatch):
    """data.relabel's dropped rows stay out of a full run's training set (folds faked as finished: no training)."""
    workdir = refit[0]
    monkeypatch.chdir(workdir)
    train = pd.read_csv(workdir / "folds" / "folds.csv", dtype=str)
    pd.DataFrame({"id": train["image_id"][:7], "suggested": train["label"][:7], "accept": "drop"}).to_csv(
        workdir / "relabel.csv", index=False)
    for k in range(3):
        d = workdir / "runs" / "r" / f"fold_{k}"
        d.mkdir(parents=True)
        (d / "done.json").write_text(json.dumps({"fold": k, "epoch": 1, "score": 0.5, "ema": False}))
    msgs = []
    cfg = tiny_cfg(workdir, "r", f"data.relabel={workdir / 'relabel.csv'}", "train.stop_after_epochs=1")
    res = train_full(cfg, echo=msgs.append, sources=sources(cfg))  # as the comp CLI calls it
    assert res["interrupted"] and res["epochs"] == 2
    assert any(m.startswith("full_s0: 593 train / 0 val images") for m in msgs), msgs
