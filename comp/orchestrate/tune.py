"""``comp tune``: hyper-parameter search with Ray Tune, Optuna's sampler (OptunaSearch) and the ASHA scheduler.

Each trial is a real comp training run of experiment ``<exp>-tune/trial_NNN`` (runs/<exp>-tune/trial_NNN/): the
experiment's config, ``--set`` overrides, then the trial's sampled values. train_folds' ``on_epoch`` hook reports
the validation metric after every epoch, and ASHA stops the weak trials early.

    runs/<exp>-tune/trial_NNN/            the trial's run (config.yaml, fold_k/, train.log, params.json)
    runs/<exp>-tune/results.csv           one row per trial: params, best metric, epochs, seconds, stopped, state
    runs/<exp>-tune/optimization.png      history of the search and parameter importance (Optuna's fANOVA)
    runs/<exp>-tune/ray/                  Ray Tune's experiment state (for --resume)
    configs/<exp>-best.yaml               the best trial's experiment file: comp launch --exp <exp>-best --all-folds

``--resume`` restores the search (Tuner.restore: the sampler's history and every trial's state) and runs the
remaining trials; an interrupted trial continues from its last committed epoch (comp's own --resume).
"""

from __future__ import annotations

import importlib
import json
import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from comp import runs
from comp.config import EXPERIMENT_SECTIONS, ConfigError, load_config, parse_set, read_yaml
from comp.files import write_csv, write_text
from comp.orchestrate.space import as_set, check_space, nest, read_space, to_tune
from comp.tasks import task_of

# val_score: data.metric (its direction: max or min)
METRICS = {"val_macro_f1": "max", "val_acc": "max", "val_loss": "min", "val_score": None}
EXPERIMENT_NAME = "ray"


def tune_dir(exp: str) -> Path:
    return runs.RUNS_DIR / f"{exp}-tune"


def trial_name(exp: str, index: int) -> str:
    return f"{exp}-tune/trial_{index:03d}"


def claim_trial(exp: str, trial_id: str) -> int:
    """The trial's running number NNN (runs/<exp>-tune/trial_NNN): the folder already holding Ray's ``trial_id``
    (a resumed trial), else the next free number, claimed with an atomic mkdir."""
    base = tune_dir(exp)
    known = trial_ids(exp)
    for index, tid in known.items():
        if tid == trial_id:
            return index
    index = len(known)
    while True:
        d = base / f"trial_{index:03d}"
        try:
            d.mkdir(parents=True)
        except FileExistsError:
            index += 1
            continue
        write_text(d / "ray_trial_id", trial_id)
        return index


def trial_ids(exp: str) -> dict[int, str]:
    """trial number -> Ray trial id, for the trials that started."""
    out = {}
    for f in tune_dir(exp).glob("trial_*/ray_trial_id"):
        out[int(f.parent.name.split("_")[1])] = f.read_text(encoding="utf-8").strip()
    return out


def _index_of(exp: str) -> Callable[[str], int | None]:
    ids = {v: k for k, v in trial_ids(exp).items()}
    return ids.get


# ---------------------------------------------------------------- a trial (runs in a Ray actor)


def run_trial(params: dict, setup: dict) -> None:
    """Train the trial's folds in this process, reporting ``setup["metric"]`` to Tune after each epoch."""
    from ray import tune

    from comp.techniques import sources
    from comp.train.session import train_folds

    os.chdir(setup["workdir"])
    index = claim_trial(setup["exp"], tune.get_context().get_trial_id())
    cfg = load_config(setup["config"], exp=setup["exp"],
                      overrides=[*setup["overrides"], *(as_set(k, v) for k, v in params.items())])
    cfg.exp = trial_name(setup["exp"], index)
    rd = runs.run_dir(cfg.exp)
    rd.mkdir(parents=True, exist_ok=True)
    write_text(rd / "params.json", json.dumps(params, indent=2))
    folds, metric, epochs = setup["folds"], setup["metric"], cfg.train.epochs
    resume = any((runs.fold_dir(cfg.exp, k) / n / "trainer.json").exists()
                 for k in folds for n in ("state", "state.old"))
    log = open(rd / "train.log", "a", encoding="utf-8")  # noqa: SIM115 - closed below

    def echo(msg: str) -> None:
        log.write(msg + "\n")
        log.flush()

    last: list[dict] = []

    def on_epoch(fold: int, row: dict) -> None:
        step = folds.index(fold) * epochs + int(row["epoch"])
        result = {metric: float(row[metric]), "step": step, "fold": fold, "epoch": int(row["epoch"]),
                  "best_score": float(row["best_score"])}
        if step == len(folds) * epochs:
            last.append(result)  # ASHA stops a trial at its last step: report it once the fold is written
        else:
            tune.report(result)

    try:
        echo(f"=== comp tune trial {index:03d} ({'resumed' if resume else 'new'}): {json.dumps(params)}")
        train_folds(cfg, folds=folds, resume=resume, echo=echo, on_epoch=on_epoch, sources=sources(cfg))
    finally:
        log.close()
    if not last:
        # Resumed after its last epoch (the fold was already finished): report where it ended.
        k = folds[-1]
        h = pd.read_csv(runs.fold_dir(cfg.exp, k) / "metrics.csv")
        best = runs.fold_done(cfg.exp, k)["score"]
        row = h.iloc[-1]
        last.append({metric: float(row[metric]), "step": (len(folds) - 1) * epochs + int(row["epoch"]), "fold": k,
                     "epoch": int(row["epoch"]), "best_score": float(best)})
    tune.report(last[-1])


# ---------------------------------------------------------------- results


def trial_rows(exp: str, metric: str, mode: str, epochs: int, folds: list[int], status: dict | None = None
               ) -> pd.DataFrame:
    """results.csv from the trials' own files (params.json, metrics.csv, done.json) and Ray's trial status."""
    rows = []
    base = tune_dir(exp)
    for d in sorted(base.glob("trial_*")):
        p = d / "params.json"
        if not p.exists():
            continue
        index = int(d.name.split("_")[1])
        params = json.loads(p.read_text(encoding="utf-8"))
        bests, n_epochs, seconds, done = [], 0, 0.0, True
        for k in folds:
            m = d / f"fold_{k}" / "metrics.csv"
            h = pd.read_csv(m) if m.exists() else pd.DataFrame(columns=runs.METRICS_COLUMNS)
            if len(h):
                bests.append(h[metric].max() if mode == "max" else h[metric].min())
            n_epochs += len(h)
            seconds += float(h["seconds"].sum()) if len(h) else 0.0
            done = done and (d / f"fold_{k}" / "done.json").exists()
        state = (status or {}).get(index, "TERMINATED" if done else "")
        best = sum(bests) / len(bests) if bests and len(bests) == len(folds) else (bests[0] if bests else None)
        rows.append({"trial": f"trial_{index:03d}", **params, metric: best, "epochs": n_epochs,
                     "seconds": round(seconds, 2), "stopped": bool(not done and state == "TERMINATED"),
                     "state": "done" if done else {"TERMINATED": "stopped by ASHA", "ERROR": "error",
                                                   "RUNNING": "running", "PENDING": "pending",
                                                   "PAUSED": "paused"}.get(state, "interrupted")})
    cols = ["trial", *sorted({k for r in rows for k in r} - {"trial", metric, "epochs", "seconds", "stopped", "state"}),
            metric, "epochs", "seconds", "stopped", "state"]
    return pd.DataFrame(rows, columns=cols)


def write_results(exp: str, metric: str, mode: str, epochs: int, folds: list[int], status: dict | None = None
                  ) -> pd.DataFrame:
    df = trial_rows(exp, metric, mode, epochs, folds, status)
    write_csv(tune_dir(exp) / "results.csv", df)
    return df


def _status_callback(exp: str, metric: str, mode: str, epochs: int, folds: list[int]):
    from ray.tune import Callback

    class Results(Callback):
        """Rewrite results.csv whenever a trial ends, so an interrupted search keeps what it has."""

        def _write(self, trials):
            index = _index_of(exp)
            status = {index(t.trial_id): t.status for t in trials if index(t.trial_id) is not None}
            write_results(exp, metric, mode, epochs, folds, status)

        def on_trial_complete(self, iteration, trials, trial, **info):
            self._write(trials)

        def on_trial_error(self, iteration, trials, trial, **info):
            self._write(trials)

    return Results()


def plot_optimization(df: pd.DataFrame, space: dict, metric: str, mode: str, path: Path) -> dict:
    """optimization.png: the metric per trial with the running best, and each parameter's importance (Optuna's
    fANOVA on the finished and stopped trials). Returns the importances."""
    import numpy as np

    from comp.reports.page import pyplot

    plt = pyplot()
    scored = df[df[metric].notna()].copy()
    importances = param_importances(scored, space, metric, mode)
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    x = scored["trial"].str.split("_").str[1].astype(int).to_numpy()
    y = scored[metric].astype(float).to_numpy()
    stopped = scored["stopped"].astype(bool).to_numpy()
    a.scatter(x[~stopped], y[~stopped], label="finished", zorder=3)
    a.scatter(x[stopped], y[stopped], marker="x", color="tab:red", label="stopped by ASHA", zorder=3)
    order = np.argsort(x)
    run_best = (np.maximum if mode == "max" else np.minimum).accumulate(y[order]) if len(y) else y
    a.step(x[order], run_best, where="post", color="grey", label="best so far")
    a.set_xlabel("trial")
    a.set_ylabel(metric)
    a.set_title("search history")
    a.grid(alpha=0.3)
    a.legend()
    if importances:
        names = list(importances)[::-1]
        b.barh(names, [importances[n] for n in names])
        b.set_xlabel("importance (fANOVA)")
    else:
        b.text(0.5, 0.5, "importance needs 2+ scored trials\nand 2+ distinct values", ha="center", va="center")
        b.set_axis_off()
    b.set_title("parameter importance")
    fig.tight_layout()
    tmp = path.with_name(".optimization.tmp.png")
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    os.replace(tmp, path)
    return importances


def param_importances(scored: pd.DataFrame, space: dict, metric: str, mode: str) -> dict:
    """Optuna's parameter importance over the scored trials (an Optuna study rebuilt from results.csv)."""
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    dists = {}
    for key, (kind, args) in space.items():
        if kind == "choice":
            dists[key] = CategoricalDistribution(args)
        elif kind in ("int", "logint"):
            dists[key] = IntDistribution(args[0], args[1], log=kind == "logint")
        else:
            dists[key] = FloatDistribution(args[0], args[1], log=kind == "loguniform")
    varied = [k for k in dists if k in scored and scored[k].astype(str).nunique() > 1]
    if len(scored) < 2 or not varied:
        return {}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize" if mode == "max" else "minimize")
    for _, r in scored.iterrows():
        params = {}
        for k in varied:
            v = _plain(r[k])
            params[k] = int(v) if isinstance(dists[k], IntDistribution) else (
                float(v) if isinstance(dists[k], FloatDistribution) else v)
        study.add_trial(optuna.trial.create_trial(params=params, distributions={k: dists[k] for k in varied},
                                                  value=float(r[metric])))
    try:
        return dict(optuna.importance.get_param_importances(study))
    except (RuntimeError, ValueError):
        return {}


def write_best(config_path: Path, exp: str, overrides, best: dict, info: str, echo, search: dict | None = None) -> Path:
    """configs/<exp>-best.yaml: the experiment file of <exp>, the --set overrides and the best trial's values, and
    ``search`` (where it came from: source, trials, the folds it was chosen on), so a run of it reports its CV
    over the folds the search never saw."""
    base_dir = Path(config_path).resolve().parent
    exp_file = base_dir / "configs" / f"{exp}.yaml"
    values = read_yaml(exp_file) if exp_file.exists() else {}
    sets = {k: v for k, v in parse_set(overrides).items() if k in EXPERIMENT_SECTIONS}
    for part in (sets, nest(best)):
        for section, kv in part.items():
            values.setdefault(section, {}).update(kv)
    if search is not None:
        values["search"] = search
    out = base_dir / "configs" / f"{exp}-best.yaml"
    text = f"# written by comp tune: {info}\n" + yaml.safe_dump(values, sort_keys=False, allow_unicode=True)
    if out.exists() and out.read_text(encoding="utf-8") != text:
        prev = out.with_name(f"{exp}-best.prev.yaml")
        os.replace(out, prev)
        echo(f"{out} replaced; the previous one is kept as {prev}")
    write_text(out, text)
    return out


# ---------------------------------------------------------------- the search


_STEP_IMPORTS = ("ray.tune.schedulers", "ray.tune.search.optuna", "comp.data.competition", "comp.orchestrate.cluster",
                 "comp.techniques")


@dataclass
class _Search:
    """One search, checked: what every step after the checks reads."""

    exp: str
    config_path: Path
    overrides: list
    space: dict
    cfg: object  # comp.config.Config
    folds: list[int]
    metric: str
    mode: str
    trials: int
    workdir: Path
    td: Path  # runs/<exp>-tune, absolute
    state_dir: Path  # Ray Tune's experiment state in it
    time_budget_s: float | None = None  # Ray stops the search (its running trials too) after this many seconds
    start: dict | None = None  # the first trial's values (comp auto's measured defaults); the rest are drawn
    finished: bool = False  # runs/<exp>-tune holds this search, every trial ended (_finished)

    @property
    def epochs(self) -> int:
        return self.cfg.train.epochs


def _check_search(config_path: str | Path, exp: str, space_path: str | Path, trials: int, folds, metric: str,
                  overrides) -> tuple[Path, list, dict, object, list[int]]:
    """The config path (absolute), overrides, space, config and folds; ConfigError on what cannot be searched."""
    from comp.data.competition import read_folds
    from comp.techniques import check_experiment as check_config

    if metric not in METRICS:
        raise ConfigError(f"--metric {metric!r}: one of {', '.join(METRICS)}")
    if trials < 1:
        raise ConfigError("--trials must be at least 1")
    config_path = Path(config_path).resolve()
    overrides = list(overrides)
    space = read_space(space_path)
    cfg = load_config(config_path, exp=exp, overrides=overrides)
    check_config(cfg)
    check_space(space, config_path, exp, overrides)
    if cfg.train.fold_epochs or "train.fold_epochs" in space:
        raise ConfigError("train.fold_epochs: comp tune trains every trial's folds for train.epochs (ASHA needs one "
                          "epoch budget); leave train.fold_epochs empty")
    if "train.epochs" in space:
        raise ConfigError("train.epochs cannot be searched: ASHA needs one epoch budget for every trial (set it "
                          "with --set train.epochs=N)")
    have = sorted(read_folds(cfg)["fold"].unique().tolist())
    folds = have if folds == "all" else list(dict.fromkeys(int(k) for k in folds))
    bad = [k for k in folds if k not in have]
    if bad:
        raise ConfigError(f"--folds {bad[0]}: {cfg.folds.file} has folds {have}")
    return config_path, overrides, space, cfg, folds


def writable_by_others(st: os.stat_result) -> str | None:
    """Why another user could change a file with this stat: other-writable, group-writable by a group with other
    members (a user's own private group is fine), or owned by someone else; None when only its owner can."""
    if st.st_uid != os.getuid():
        return f"owned by uid {st.st_uid}"
    if st.st_mode & stat.S_IWOTH:
        return "writable by every user"
    if st.st_mode & stat.S_IWGRP:
        try:
            import grp
            import pwd

            g, me = grp.getgrgid(st.st_gid), pwd.getpwuid(os.getuid()).pw_name
            if g.gr_gid == os.getgid() and set(g.gr_mem) <= {me}:
                return None  # a user private group: nobody else is in it
            return f"writable by group {g.gr_name}"
        except (ImportError, KeyError):
            return "writable by its group"
    return None


def check_trusted(td: Path) -> None:
    """--resume unpickles Ray Tune's state from ``td``: refuse it when anyone but this user can write into it (a
    changed pickle runs code as this user)."""
    for path in [td.parent, td, *sorted(td.rglob("*"))]:
        try:
            st = path.lstat()
        except OSError:
            continue
        why = writable_by_others(st)
        if why is not None and not (path.is_symlink() and path != td):
            raise ConfigError(f"--resume loads Ray Tune's saved state (Python pickles) from {td}, and {path} is "
                              f"{why}: another user could make it run code as you. Only resume a search whose "
                              f"runs/ folder you trust: `chmod -R go-w {td}` (and own it) if it is yours, "
                              f"else start a new search")


def _prepare(config_path: str | Path, exp: str, space_path: str | Path, trials: int, folds, metric: str, overrides,
             resume: bool) -> _Search:
    """Check the search, make runs/<exp>-tune (a new one, or the one --resume continues) and write search.json."""
    config_path, overrides, space, cfg, folds = _check_search(config_path, exp, space_path, trials, folds, metric,
                                                              overrides)
    workdir = Path.cwd().resolve()
    td = (workdir / tune_dir(exp))
    state_dir = td / EXPERIMENT_NAME
    search = json.dumps({"space": {k: {kd: a} for k, (kd, a) in space.items()}, "trials": trials, "folds": folds,
                         "metric": metric, "overrides": overrides, "config": str(config_path)}, indent=2)
    finished = _finished(td, search, trials)
    if resume and not state_dir.exists():
        raise ConfigError(f"--resume: {state_dir} not found; there is no search of {exp} to continue")
    if resume and not finished:
        check_trusted(td)
    if not resume and state_dir.exists() and not finished:
        raise ConfigError(f"{td} holds an earlier search of {exp}: pass --resume to continue it, or remove {td} "
                          f"to start a new one")
    td.mkdir(parents=True, exist_ok=True)
    if not finished:
        write_text(td / "search.json", search)
    if metric == "val_score":

        mode = "max" if task_of(cfg).metric(cfg.data.metric).greater_is_better else "min"
    else:
        mode = METRICS[metric]
    return _Search(exp=exp, config_path=config_path, overrides=overrides, space=space, cfg=cfg, folds=folds,
                   metric=metric, mode=mode, trials=trials, workdir=workdir, td=td, state_dir=state_dir,
                   finished=finished)


def _finished(td: Path, search: str, trials: int) -> bool:
    """runs/<exp>-tune holds this very search (search.json) with every trial ended (results.csv): the same command
    again has nothing to do."""
    try:
        same = (td / "search.json").read_text(encoding="utf-8") == search
        return same and len(pd.read_csv(td / "results.csv")) >= trials
    except (OSError, ValueError):
        return False


def _make_tuner(s: _Search, trainable, resume: bool, grace_period: int, reduction_factor: int, seed: int, echo):
    """Ray Tune's Tuner: restored from runs/<exp>-tune/ray with --resume, else a new OptunaSearch + ASHA search whose
    first trial is ``s.start`` (a known-good config, so the search ranks every draw against it) when given."""
    from ray import tune as rt
    from ray.tune import RunConfig, TuneConfig, Tuner
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    max_t = s.epochs * len(s.folds)
    callbacks = [_status_callback(s.exp, s.metric, s.mode, s.epochs, s.folds)]
    run_config = RunConfig(name=EXPERIMENT_NAME, storage_path=str(s.td), callbacks=callbacks, verbose=0,
                           failure_config=rt.FailureConfig(max_failures=1))
    if resume:
        # param_space again: a kill before Ray saved the sampler's state leaves the restored OptunaSearch without
        # its space ("no search space has been defined"); a saved state, when there is one, replaces it after.
        tuner = Tuner.restore(str(s.state_dir), trainable=trainable, resume_unfinished=True, resume_errored=True,
                              param_space=to_tune(s.space))
        echo(f"resuming the search in {s.state_dir}")
        return tuner
    scheduler = ASHAScheduler(time_attr="step", max_t=max_t, grace_period=min(grace_period, max_t),
                              reduction_factor=reduction_factor)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    start = {k: v for k, v in (s.start or {}).items() if k in s.space}
    search = OptunaSearch(seed=seed, points_to_evaluate=[start] if start else None)
    return Tuner(trainable, param_space=to_tune(s.space),
                 tune_config=TuneConfig(metric=s.metric, mode=s.mode, search_alg=search, scheduler=scheduler,
                                        num_samples=s.trials, time_budget_s=s.time_budget_s),
                 run_config=run_config)


def _run_search(s: _Search, address: str | None, resume: bool, cpus_per_trial: int | None,
                gpus_per_trial: float | None, grace_period: int, reduction_factor: int, seed: int,
                echo) -> tuple[dict, float]:
    """Run the trials in a Ray session; returns each trial's final Ray state by number and Ray's start seconds."""
    from ray import tune as rt

    from comp.orchestrate.cluster import check_shared_folder, ray_session

    setup = dict(workdir=str(s.workdir), config=str(s.config_path), exp=s.exp, overrides=s.overrides,
                 folds=s.folds, metric=s.metric)
    with ray_session(address, echo=echo) as info:
        if address is not None:
            check_shared_folder(s.config_path)
        res = info["resources"]
        n_gpu = res.get("GPU", 0)
        gpus = (1 if n_gpu else 0) if gpus_per_trial is None else gpus_per_trial
        cpus = cpus_per_trial or (max(1, int(res.get("CPU", 1) // n_gpu)) if gpus and n_gpu else 1)
        echo(f"Ray {'local' if info['local'] else 'cluster'} up in {info['seconds']:.1f}s: {res.get('CPU', 0):g} CPUs, "
             f"{n_gpu:g} GPUs; {cpus} CPU and {gpus:g} GPU per trial")
        trainable = rt.with_resources(rt.with_parameters(run_trial, setup=setup), {"cpu": cpus, "gpu": gpus})
        grid = _make_tuner(s, trainable, resume, grace_period, reduction_factor, seed, echo).fit()
        index = _index_of(s.exp)
        status = {}
        for r in grid:
            k = index((r.metrics or {}).get("trial_id", ""))
            if k is not None:
                status[k] = "ERROR" if r.error else "TERMINATED"
        ray_start = info["seconds"]
    return status, ray_start


def _best_of(s: _Search, df: pd.DataFrame, ray_start: float, echo) -> dict:
    """tune's result: the best scored trial, optimization.png's importances and configs/<exp>-best.yaml."""
    metric, mode = s.metric, s.mode
    scored = df[df[metric].notna()]
    out = {"results": df, "best": None, "best_config": None, "importances": {}, "ray_start_seconds": ray_start}
    if len(scored):
        best = scored.sort_values(metric, ascending=mode == "min").iloc[0]
        params = {k: _plain(best[k]) for k in s.space}
        out["best"] = best.to_dict()
        out["importances"] = plot_optimization(df, s.space, metric, mode, s.td / "optimization.png")
        info_line = (f"best of {len(df)} trials of {s.exp} ({best['trial']}, {metric} {best[metric]:.4f} on folds "
                     f"{s.folds}, {int(best['epochs'])} epochs)")
        search = {"source": s.exp, "trials": int(len(df)), "folds": [int(k) for k in s.folds]}
        out["best_config"] = write_best(s.config_path, s.exp, s.overrides, params, info_line, echo, search)
        echo(f"{out['best_config']}: search.folds {s.folds}; a run of it reports its CV over the other folds "
             f"(none left, with --folds all: the CV is flagged as selected in-sample)")
    return out


def tune(config_path: str | Path, exp: str, space_path: str | Path, trials: int = 20, folds=(0,),
         metric: str = "val_macro_f1", overrides=(), address: str | None = None, resume: bool = False,
         cpus_per_trial: int | None = None, gpus_per_trial: float | None = None, grace_period: int = 1,
         reduction_factor: int = 2, seed: int = 0, echo: Callable[[str], None] = print,
         time_budget_s: float | None = None, start: dict | None = None) -> dict:
    """Search ``space_path`` over ``trials`` trials of ``exp``; see the module docstring. Returns {"results"
    (DataFrame), "best" (row dict), "best_config" (path), "importances", "seconds", "ray_start_seconds"}.
    ``time_budget_s``: the search's time box (comp auto); trials still running then are stopped. ``start``: the
    first trial's values (keys of the space), e.g. comp auto's measured defaults."""
    from comp.orchestrate import require

    require("ray", "ray.tune", "optuna")
    for m in _STEP_IMPORTS:  # the steps' own imports, done before the clock starts and before any check
        importlib.import_module(m)
    t0 = time.perf_counter()
    s = _prepare(config_path, exp, space_path, trials, folds, metric, overrides, resume)
    s.time_budget_s, s.start = time_budget_s, start
    if s.finished:
        return _already_finished(s, echo)
    echo(f"comp tune {exp}: {trials} trials of {len(s.space)} parameters ({', '.join(s.space)}), folds {s.folds}, "
         f"{s.epochs} epochs each, {metric} ({s.mode}); ASHA grace {grace_period}, reduction {reduction_factor}")
    # Save the search's state after every controller step, not every few seconds ("auto"): a kill between a
    # trial's end and the next save made --resume start that trial again under a new number (seen in the test).
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "0")
    status, ray_start = _run_search(s, address, resume, cpus_per_trial, gpus_per_trial, grace_period,
                                    reduction_factor, seed, echo)
    df = write_results(exp, metric, s.mode, s.epochs, s.folds, status)
    out = _best_of(s, df, ray_start, echo)
    out["seconds"] = time.perf_counter() - t0
    echo(tune_summary(df, out, metric, exp))
    return out


def _already_finished(s: _Search, echo: Callable[[str], None]) -> dict:
    """The finished search's results, read back; nothing run or written."""
    df = pd.read_csv(s.td / "results.csv")
    ok = df[df[s.metric].notna()] if s.metric in df.columns else df.iloc[0:0]
    best = ok.sort_values(s.metric, ascending=s.mode == "min").iloc[0].to_dict() if len(ok) else None
    path = s.config_path.parent / "configs" / f"{s.exp}-best.yaml"
    echo(f"comp tune {s.exp}: this search already finished ({len(df)} trials in {s.td / 'results.csv'}); nothing to "
         f"do" + (f". Best: {best['trial']} {s.metric} {best[s.metric]:.4f} -> {path}" if best else ""))
    return {"results": df, "best": best, "best_config": str(path), "importances": {}, "seconds": 0.0,
            "ray_start_seconds": 0.0}


def _plain(v):
    if hasattr(v, "item"):
        v = v.item()
    return v


def tune_summary(df: pd.DataFrame, out: dict, metric: str, exp: str) -> str:
    lines = [df.to_string(index=False, float_format=lambda v: f"{v:.4g}"), ""]
    n_stop = int(df["stopped"].sum()) if len(df) else 0
    lines.append(f"{len(df)} trials: {int((df['state'] == 'done').sum())} finished, {n_stop} stopped early by ASHA, "
                 f"{int((df['state'] == 'error').sum())} errors; {out['seconds']:.0f}s")
    if out["best"] is not None:
        lines.append(f"best: {out['best']['trial']} {metric} {out['best'][metric]:.4f} -> {out['best_config']}")
        if out["importances"]:
            lines.append("importance: " + ", ".join(f"{k} {v:.2f}" for k, v in out["importances"].items()))
        lines.append(f"next: comp launch --exp {exp}-best --all-folds")
    lines.append(f"results: {tune_dir(exp) / 'results.csv'}, {tune_dir(exp) / 'optimization.png'}")
    return "\n".join(lines)
