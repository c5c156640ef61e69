"""comp ledger lb and the CV-against-public-leaderboard view of comp leaderboard, on a ledger of five real
submissions (two tiny experiments on real Fashion-MNIST images, blended five ways)."""

import pandas as pd
import pytest
from click.testing import CliRunner
from scipy.stats import spearmanr

from comp.cli import cli
from comp.orchestrate import cv_lb
from comp.orchestrate.leaderboard import leaderboard

TINY = ["--set", "model.name=test_resnet", "--set", "input.size=32", "--set", "train.batch_size=32"]
NAMES = ["s_a", "s_b", "s_ab", "s_ab_bias", "s_geo"]


def call(*args, code=0):
    r = CliRunner().invoke(cli, [str(a) for a in args])
    assert r.exit_code == code, f"comp {' '.join(map(str, args))}:\n{r.output}\n{r.exception!r}"
    return r.output


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    import os

    work = tmp_path_factory.mktemp("cvlb")
    here = os.getcwd()
    os.chdir(work)
    try:
        call("sample", "data", "--n-train", "300", "--n-test", "60")
        call("init", "data")
        call("folds", "--n-splits", "3")
        call("train", "--exp", "a", "--all-folds", *TINY, "--set", "train.epochs=2")
        call("train", "--exp", "b", "--all-folds", *TINY, "--set", "train.epochs=3", "--set", "train.lr=1e-3")
        for e in ("a", "b"):
            call("predict", "--exp", e)
        call("ensemble", "--exp", "a", "--name", "s_a")
        call("ensemble", "--exp", "b", "--name", "s_b")
        call("ensemble", "--exp", "a", "--exp", "b", "--name", "s_ab")
        call("ensemble", "--exp", "a", "--exp", "b", "--tune-bias", "--name", "s_ab_bias")
        call("ensemble", "--exp", "a", "--exp", "b", "--method", "geometric", "--name", "s_geo")
        yield work
    finally:
        os.chdir(here)


@pytest.mark.slow
def test_ledger_lb_and_cv_against_leaderboard(project, monkeypatch):
    monkeypatch.chdir(project)
    led = pd.read_csv("submissions/ledger.csv", dtype=str).set_index("name")
    cv = {n: float(led.loc[n, "cv_score"]) for n in NAMES}
    # public scores that track the CV (a small, uneven offset), the last one with a private score too
    public = {n: round(cv[n] - 0.01 + 0.002 * i, 4) for i, n in enumerate(NAMES)}
    for n in NAMES[:-1]:
        assert "recorded in submissions/lb.csv" in call("ledger", "lb", n, public[n])
    call("ledger", "lb", "s_geo", public["s_geo"], "--private", 0.5)
    assert "nothing to do" in call("ledger", "lb", "s_a", public["s_a"])  # the same again: a no-op
    lines = len(pd.read_csv("submissions/lb.csv"))
    assert lines == 5
    out = call("ledger", "lb", "nope", 0.5, code=1)
    assert "no submission 'nope'" in out and "s_geo" in out

    df = leaderboard("runs", echo=lambda s: None)
    t = df.attrs["lb"].set_index("submission")
    assert sorted(t.index) == sorted(NAMES)
    for n in NAMES:
        assert t.loc[n, "cv"] == pytest.approx(cv[n]) and t.loc[n, "public"] == pytest.approx(public[n])
        assert t.loc[n, "gap"] == pytest.approx(public[n] - cv[n])
    assert t.loc["s_geo", "private"] == 0.5 and pd.isna(t.loc["s_a", "private"])
    expected = spearmanr([cv[n] for n in NAMES], [public[n] for n in NAMES]).statistic
    assert df.attrs["rho"] == pytest.approx(expected)
    html = open("reports/leaderboard.html", encoding="utf-8").read()
    assert 'id="cv-vs-public-leaderboard"' in html and "leaderboard_lb.png" in html
    assert open("reports/leaderboard_lb.png", "rb").read(4) == b"\x89PNG"
    printed = call("leaderboard")
    assert "CV against the public leaderboard (rank correlation" in printed

    # one public score far from its CV (a new score replaces the old, and says so): flagged, and the CV trusted
    spread = float(t.loc["s_ab", "spread"])
    said = call("ledger", "lb", "s_ab", round(cv["s_ab"] + 5 * spread + 0.05, 4))
    assert f"(was public {public['s_ab']:.6g}" in said
    df = leaderboard("runs", echo=lambda s: None)
    t = df.attrs["lb"].set_index("submission")
    assert bool(t.loc["s_ab", "beyond_spread"]) and df.attrs["trust"] == "cv"
    assert "trust the CV" in df.attrs["why"]


def _table(cv, pub, spread):
    return pd.DataFrame({"submission": [f"s{i}" for i in range(len(cv))], "metric": "macro_f1", "cv": cv,
                         "public": pub, "private": None, "gap": [p - c for p, c in zip(pub, cv)],
                         "private_gap": None, "spread": spread,
                         "beyond_spread": [abs(p - c) > 2 * s for p, c, s in zip(pub, cv, spread)]})


def test_verdicts():
    agree = _table([0.7, 0.72, 0.75], [0.71, 0.72, 0.74], [0.01] * 3)
    trust, why = cv_lb.verdict(agree, cv_lb.rank_correlation(agree))
    assert trust == "cv" and "within two fold spreads" in why
    offset = _table([0.7, 0.72, 0.75], [0.60, 0.625, 0.645], [0.01] * 3)  # 0.1 lower each, ranks kept
    trust, why = cv_lb.verdict(offset, cv_lb.rank_correlation(offset))
    assert trust == "cv, expect an offset" and "-0.1000 from its CV" in why and "+1.00" in why
    noisy = _table([0.7, 0.72, 0.75], [0.76, 0.70, 0.66], [0.01] * 3)  # scattered, ranks reversed
    trust, why = cv_lb.verdict(noisy, cv_lb.rank_correlation(noisy))
    assert trust == "cv" and "ranks run opposite" in why and "-1.00" in why
    assert cv_lb.verdict(noisy.iloc[:0], None)[1].startswith("no leaderboard scores yet")
