"""comp auto: the plan's arithmetic, a short budgeted run end to end, and a kill during the fold stage + --resume."""

import dataclasses
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import write_config

from comp.orchestrate import auto_plan as ap
from comp.orchestrate.auto import parse_budget
from comp.orchestrate.leaderboard import epochs_text


def _inputs(budget_s, ips=2000.0, has_ray=True, **kw):
    return ap.PlanInputs(budget_s=budget_s, spent_s=10.0, n_train=5000, n_test=1000, n_splits=5,
                         train_ips={"resnet18": ips, "resnet10t": 2 * ips}, infer_ips={"resnet18": 4 * ips,
                                                                                        "resnet10t": 8 * ips},
                         has_ray=has_ray, **kw)


def test_parse_budget():
    assert parse_budget("20m") == 1200 and parse_budget("90s") == 90 and parse_budget("1.5h") == 5400
    assert parse_budget("45") == 45
    with pytest.raises(ValueError, match="--budget"):
        parse_budget("soon")


@pytest.mark.parametrize("budget_s", [120, 900, 1200, 3600])
def test_plan_fits_the_budget(budget_s):
    inp = _inputs(budget_s)
    plan = ap.make_plan(inp)
    total = sum(s.planned_s for s in plan.stages)
    assert total <= budget_s * ap.MARGIN + 1, ap.format_plan(plan, budget_s)
    assert [s.name for s in plan.stages] == ["plan", "check", "folds", "search", "best", "second", "refit",
                                             "predict", "ensemble", "report"]
    best = plan.stage("best")
    # the best config's time box holds its epochs on every fold
    assert ap.folds_stage_s(inp, plan.models[0], plan.epochs) <= best.planned_s + 0.1 or plan.epochs == 1
    assert 1 <= plan.epochs <= ap.MAX_EPOCHS


def test_plan_stages_by_budget():
    small = ap.make_plan(_inputs(120, ips=300))
    assert small.stage("search").planned_s == 0 and "skipped" in small.stage("search").why
    assert small.stage("second").planned_s == 0
    # A search that affords under MIN_TRIALS is skipped (ASHA would stop all but the first after an epoch): the
    # plan's 15-minute CPU figures (5 trials) give its time to the folds, and auto's measured defaults train
    few = ap.make_plan(_inputs(900, ips=300))
    assert few.trials == 0 and few.stage("search").planned_s == 0
    assert f"5 trials of 5 epochs, under {ap.MIN_TRIALS}" in few.stage("search").why
    assert few.epochs > ap.make_plan(_inputs(1800, ips=300)).search_epochs  # the folds got the search's share
    assert few.models[0] == "resnet10t"  # fastest first: the plan's figures and the defaults are the fastest's
    big = ap.make_plan(_inputs(1200))
    s = big.stage("search")
    assert s.planned_s > 0 and big.trials >= 3 and big.search_epochs >= ap.MIN_EPOCHS
    assert f"{big.trials} trials" in s.why
    assert big.stage("best").planned_s > 0.3 * big.stage("search").planned_s
    # On a CPU under 30 minutes the second member's time goes to the folds' epochs; a GPU (or a long budget) has it.
    assert big.stage("second").planned_s == 0 and "epochs are worth more" in big.stage("second").why
    gpu = ap.make_plan(_inputs(1200, gpus=1))
    assert gpu.stage("second").planned_s > 0
    long = ap.make_plan(_inputs(3600))
    assert long.stage("second").planned_s > 0
    no_ray = ap.make_plan(_inputs(1200, has_ray=False))
    assert no_ray.stage("search").planned_s == 0 and "Ray is not installed" in no_ray.stage("search").why
    assert no_ray.epochs >= big.epochs  # the search's share went to training


def test_the_folds_come_before_a_refit_and_five_folds_where_they_afford_the_epochs():
    """The CV measures the folds, never a refit: a refit only gets what the folds' epoch cap leaves. 5 folds (each
    model on 80% of the rows) where every fold still affords FIVE_FOLD_EPOCHS epochs, else 3."""
    slow = ap.make_plan(_inputs(900, ips=300))
    assert slow.epochs < ap.MAX_EPOCHS and slow.stage("refit").planned_s == 0
    assert "the folds can use the time" in slow.stage("refit").why
    fast_in = _inputs(1200, ips=4000)
    fast = ap.make_plan(fast_in)
    assert fast.epochs == ap.MAX_EPOCHS and fast.stage("refit").planned_s > 0
    assert fast.stage("best").planned_s >= ap.folds_stage_s(fast_in, fast.models[0], ap.MAX_EPOCHS) - 0.1
    assert "cap leaves" in fast.stage("refit").why
    # The refit trains for the folds' epochs: both fit their boxes at that count.
    per = ap.refit_epoch_s(fast_in, fast.models[0])
    assert fast.stage("refit").planned_s >= ap.SETUP_S + fast.epochs * per - 0.1 > 0
    k, why = ap.fold_count(_inputs(900, ips=300))
    assert k == 3 and f"under {ap.FIVE_FOLD_EPOCHS}" in why
    k, why = ap.fold_count(_inputs(900, ips=2000))
    assert k == 5 and "80% of the rows" in why
    # the count is the fastest candidate's: resnet18 alone would not afford 5 where resnet10t (2x its speed) does
    both = _inputs(900, ips=800)
    assert ap.fold_count(both)[0] == 5
    alone = dataclasses.replace(both, train_ips={"resnet18": 800}, infer_ips={"resnet18": 3200})
    assert ap.fold_count(alone)[0] == 3


def test_later_folds_fit_the_time_left_at_fold_0s_measured_epoch():
    assert epochs_text({"epochs": 47, "fold_epochs": {2: 44, 1: 46}}) == "47; fold 1: 46, fold 2: 44"
    assert epochs_text({"epochs": 47, "fold_epochs": None}) == 47
    assert ap.later_fold_epochs(440, 2, 4.77, 47) == 46  # run 13: fold 0 measured, folds 1-2 fitted
    assert ap.later_fold_epochs(440, 2, 4.0, 47) == 55  # faster than planned: more epochs
    assert ap.later_fold_epochs(1e6, 2, 4.0, 47) == ap.MAX_EPOCHS
    assert ap.later_fold_epochs(100, 2, 4.0, 47) == 23  # far slower: never under half of fold 0's
    assert ap.later_fold_epochs(-5, 2, 4.0, 3) == ap.MIN_EPOCHS


def test_a_member_chosen_by_the_search_is_scored_on_the_folds_it_never_saw(tmp_path, competition):
    """Issue 20's honest CV survives the choice: a member whose settings came from auto's search (on fold 0) carries
    the search's provenance into its config, so train, the ledger and the leaderboard score folds 1..K-1."""
    from comp.config import load_config
    from comp.orchestrate.auto import member_values

    write_config(tmp_path, competition)
    (tmp_path / "configs").mkdir()
    sets = ["model.name=test_resnet", "train.lr=0.003"]
    (tmp_path / "configs" / "m.yaml").write_text(yaml.safe_dump(member_values(sets, 12)), encoding="utf-8")
    cfg = load_config(tmp_path / "comp.yaml", exp="m")
    assert cfg.search.folds == [0] and cfg.search.trials == 12 and cfg.search.source == "auto-search"
    assert cfg.train.lr == 0.003
    assert "search" not in member_values(sets, 0)  # the fitted defaults, chosen on no fold: every fold scores


def _workdir(tmp_path, competition) -> Path:
    write_config(tmp_path, competition)
    return tmp_path


def _auto(cwd: Path, *args, **kw):
    env = dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1", PYTHONPATH=str(Path(__file__).parents[1]))
    return subprocess.Popen([sys.executable, "-m", "comp", "auto", "--models", "test_resnet", *args], cwd=cwd,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def _finish(p: subprocess.Popen, timeout: float = 400) -> str:
    """The run's output; a run past ``timeout`` is killed (never left behind)."""
    try:
        return p.communicate(timeout=timeout)[0]
    except subprocess.TimeoutExpired:
        p.kill()
        return p.communicate()[0] + f"\n(killed after {timeout}s)"


def _check_outputs(cwd: Path, competition: Path):
    sub = pd.read_csv(cwd / "submissions" / "auto.csv", dtype=str)
    sample = pd.read_csv(competition / "sample_submission.csv", dtype=str)
    assert list(sub.columns) == list(sample.columns) and sub.iloc[:, 0].tolist() == sample.iloc[:, 0].tolist()
    assert sub.iloc[:, 1].isin(pd.read_csv(competition / "train.csv", dtype=str)["label"]).all()
    led = pd.read_csv(cwd / "submissions" / "ledger.csv", dtype=str)
    assert led["name"].tolist()[-1] == "auto" and float(led["cv_macro_f1"].iloc[-1]) > 0
    plan = json.loads((cwd / "runs" / "auto" / "plan.json").read_text())
    assert all(s["state"] in ("done", "skipped") for s in plan["plan"]["stages"]), plan["plan"]["stages"]
    assert "honest_macro_f1" in plan["choices"]["cv"]
    if plan["choices"].get("trials"):  # the members were chosen on fold 0: their runs and the ledger row say so
        run_cfg = yaml.safe_load((cwd / "runs" / "auto-a" / "config.yaml").read_text())
        assert run_cfg["search"]["folds"] == [0] and run_cfg["search"]["source"] == "auto-search"
    assert "Stages" in (cwd / "reports" / "auto" / "index.html").read_text()
    return plan


@pytest.mark.slow
def test_auto_within_budget(tmp_path, competition):
    cwd = _workdir(tmp_path, competition)
    t0 = time.perf_counter()
    p = _auto(cwd, "--budget", "2m")
    out = _finish(p)
    wall = time.perf_counter() - t0
    assert p.returncode == 0, out[-3000:]
    assert wall <= 120 * 1.1, f"{wall:.0f}s for a 2m budget\n{out[-3000:]}"
    assert out.index("comp auto plan") < out.index("[auto] check")  # the plan is printed first
    plan = _check_outputs(cwd, competition)
    assert plan["choices"]["size"] == 32
    # The sharp stem only where the probe measured it cheap enough (on these 2 cores it costs several x: own stem)
    c = plan["choices"]
    assert "costs" in c["stem_why"] and (c["stem_stride"] == 1) == c["stem_why"].startswith("stem_stride 1"), c
    # channels_last only where the probe measured it faster, and then every member trains with it
    cl = "train.channels_last=true" in c["base"]
    assert c["layout_why"] and cl == c["layout_why"].startswith("train.channels_last"), c
    run_cfg = yaml.safe_load((cwd / "runs" / "auto-a" / "config.yaml").read_text())
    assert run_cfg["train"]["channels_last"] is cl
    assert "what it chose and why" in out and "submissions/auto.csv" in out
    # On a CPU the chosen model is probed again just before its folds, and their epochs planned from that figure
    model = c["auto-a"]["params"].get("model.name", plan["plan"]["models"][0])
    if not c.get("trials"):  # no search in 2 minutes: auto's measured defaults, the fastest candidate
        assert "auto's measured defaults (no search)" in out and model == plan["plan"]["models"][0]
        assert c["auto-a"]["params"]["augment.preset"] == "light" and run_cfg["augment"]["preset"] == "light"
        assert run_cfg["train"]["lr"] == c["auto-a"]["params"]["train.lr"] and not run_cfg["search"]["folds"]
    assert c["reprobed"][model] > 0 and f"[auto] {model} probed again before its folds" in out
    # Fold 0 trains alone first; the later folds' epochs are fitted to its measured seconds an epoch
    a = c["auto-a"]
    assert c["measured_epoch_s"] and "[auto] auto-a: fold 0 took" in out and set(a["fold_epochs"]) == {"1", "2"}, c
    for j, n in a["fold_epochs"].items():
        assert len(pd.read_csv(cwd / "runs" / "auto-a" / f"fold_{j}" / "metrics.csv")) == n
    assert run_cfg["train"].get("fold_epochs") == ({int(j): n for j, n in a["fold_epochs"].items()}
                                                  if any(n != a["epochs"] for n in a["fold_epochs"].values()) else None)
    shown = str(epochs_text(run_cfg["train"]))  # comp leaderboard's epochs column
    assert shown == str(a["epochs"]) or shown.startswith(f"{a['epochs']}; fold 1: "), shown


@pytest.mark.slow
def test_auto_kill_in_fold_stage_then_resume(tmp_path, competition):
    cwd = _workdir(tmp_path, competition)
    p = _auto(cwd, "--budget", "2m", start_new_session=True)
    done0 = cwd / "runs" / "auto-a" / "fold_0" / "done.json"
    deadline = time.time() + 300
    while not done0.exists() and p.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    if not done0.exists():
        os.killpg(p.pid, signal.SIGKILL)
        pytest.fail(p.communicate()[0][-3000:])
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    plan = json.loads((cwd / "runs" / "auto" / "plan.json").read_text())
    states = {s["name"]: s["state"] for s in plan["plan"]["stages"]}
    assert states["check"] == states["folds"] == "done" and states["best"] == "running", states
    stamp = done0.stat().st_mtime_ns
    folds_stamp = (cwd / "folds" / "folds.csv").stat().st_mtime_ns
    p = _auto(cwd, "--budget", "2m", "--resume")
    out = _finish(p)
    assert p.returncode == 0, out[-3000:]
    assert "[auto] check: done earlier" in out and "[auto] folds: done earlier" in out
    assert "[auto] check (time box" not in out and "fold 0: already finished" in out
    assert done0.stat().st_mtime_ns == stamp and (cwd / "folds" / "folds.csv").stat().st_mtime_ns == folds_stamp
    _check_outputs(cwd, competition)


@pytest.mark.slow
def test_gpu_check_dry_run():
    root = Path(__file__).parents[1]
    env = dict(os.environ, PYTHON=sys.executable, PYTHONPATH=str(root))
    t0 = time.perf_counter()
    out = subprocess.run(["bash", "benchmarks/gpu.sh", "--dry-run"], cwd=root, env=env, capture_output=True,
                         text=True, timeout=400)
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    table = out.stdout[out.stdout.index("comp GPU check"):]
    for row in ("train ", "train+compile", "predict TTA", "comp auto"):
        assert f"\n{row}" in table, table
    assert "CV 0." in table and "hold-out 0." in table
    print(f"gpu.sh --dry-run: {time.perf_counter() - t0:.0f}s")


def test_cli_errors_are_one_line(tmp_path, monkeypatch, competition):
    from click.testing import CliRunner

    from comp.cli import cli

    write_config(tmp_path, competition)
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(cli, ["auto", "--budget", "soon"])
    assert r.exit_code != 0 and "--budget 'soon'" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(cli, ["auto", "--budget", "5m", "--resume"])
    assert r.exit_code != 0 and "no comp auto run to continue" in r.output


def _photo_workdir(tmp_path) -> Path:
    from comp.data.init import init_competition
    from comp.data.sample import make_sample

    make_sample(tmp_path / "data", n_train=150, n_test=40, imbalance=2.0, seed=5, kind="photo")
    init_competition(tmp_path / "data", tmp_path / "comp.yaml", echo=lambda _m: None)
    return tmp_path


@pytest.mark.slow
def test_auto_on_photos_fine_tunes_the_weights_it_finds(tmp_path, lite0_hub):
    """Issue 34: with ImageNet weights for tf_efficientnet_lite0 in the (offline) hub cache, comp auto on photos of
    300-700 px fine-tunes them, at a size its probes fit to the budget, and predicts above that size."""
    from comp.config import FINETUNE
    from comp.orchestrate.auto_plan import fixres_size

    cwd = _photo_workdir(tmp_path)
    env = dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1", PYTHONPATH=str(Path(__file__).parents[1]))
    t0 = time.perf_counter()
    p = subprocess.Popen([sys.executable, "-m", "comp", "auto", "--budget", "3m"], cwd=cwd, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = _finish(p, timeout=400)
    assert p.returncode == 0, out[-3000:]
    assert time.perf_counter() - t0 <= 180 * 1.1, out[-3000:]
    assert "[auto] models: fine-tuning tf_efficientnet_lite0 (from the local hub cache" in out, out[:3000]
    plan = json.loads((cwd / "runs" / "auto" / "plan.json").read_text())
    c = plan["choices"]
    assert plan["plan"]["models"] == ["tf_efficientnet_lite0"] and c["tuned"]
    assert c["size"] in (64, 96, 128, 160, 192, 224) and "the largest size whose folds afford" in c["size_why"]
    infer = next(int(s.split("=")[1]) for s in c["base"] if s.startswith("infer.size="))
    # FixRes: 4/3 of the size, within the images' size (a fast machine's probes may afford that size itself)
    top = int(re.search(r"images up to (\d+)", c["size_why"]).group(1))
    assert infer == fixres_size(c["size"], top) and (infer > c["size"] or c["size"] == top), (c["base"], top)
    run_cfg = yaml.safe_load((cwd / "runs" / "auto-a" / "config.yaml").read_text())
    assert run_cfg["model"]["pretrained"] is True and run_cfg["train"]["lr"] == FINETUNE["lr"]
    first = pd.read_csv(cwd / "runs" / "auto-a" / "fold_0" / "metrics.csv")["train_loss"].iloc[0]
    # A zeroed head: the loss starts at ln(classes) = 2.30 for the CE, plus soft_f1_weight x (1 - 0.1) for the soft F1
    # of uniform outputs (2.75 with ce+soft_f1), never timm's head's 4.3-13.8; the first epoch barely moves from it.
    start = math.log(10) + run_cfg["train"]["soft_f1_weight"] * 0.9 * (run_cfg["train"]["loss"] == "ce+soft_f1")
    assert first < start + 0.2, (first, start)
    _check_outputs(cwd, cwd / "data")


def test_auto_candidates_fine_tune_what_has_weights_else_train_from_scratch(lite0_hub, monkeypatch, tmp_path):
    from comp.config import from_dict
    from comp.orchestrate.auto import candidates

    cfg = from_dict({})
    names, tuned, why = candidates(cfg, set(), 0, None)
    assert names == ["tf_efficientnet_lite0"] and tuned and "no weights for mobilenetv3_large_100, resnet18" in why
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty"))  # a machine with no weights
    names, tuned, why = candidates(cfg, set(), 0, None)
    assert names == ap.MODELS_CPU and not tuned and why.startswith("from scratch")
    names, tuned, _ = candidates(from_dict({"model": {"name": "resnet18"}}), {"model.name"}, 0, None)
    assert names == ["resnet18"] and not tuned
