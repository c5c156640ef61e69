"""Run directories: ``runs/<exp>/`` layout, its config.yaml, and the OOF table assembled from the folds.

    runs/E/config.yaml          resolved config + versions (comp, torch, timm, ...) + git commit
    runs/E/fold_k/model.safetensors, model.json   best epoch by validation macro F1 (+ metadata)
    runs/E/fold_k/metrics.csv   one row per epoch (METRICS_COLUMNS)
    runs/E/fold_k/oof.csv       <id>, fold, <label>, one probability column per class
    runs/E/fold_k/curves.png    training curves
    runs/E/fold_k/done.json     written last: the fold is finished (a later run skips it)
    runs/E/fold_k/state/        this fold's model, optimizer, EMA, RNG + trainer.json, for --resume; removed when
                                the fold finishes (unless train.keep_state); `comp clean` removes leftovers
    runs/E/fold_k/train.log, lock, job.json   `comp launch`'s log, lock and job state (kept by a retrain)
    runs/E/oof.csv              every fold's oof.csv, in train.csv order, once every fold is done
    runs/E/full_s{i}/           `comp train --full`: seed i's model on every training row (train.seed + i), for the
                                epochs E's folds chose; model.safetensors + model.json (the last epoch's weights,
                                "full": true, "oof": null), metrics.csv (val columns NaN), curves.png, state/,
                                done.json; no oof.csv (comp.train.refit)
    runs/E/test.csv             `comp predict`: mean of the fold models (test_folds.csv: each fold model's own)
    runs/E/test_full.csv        `comp predict --use full`: mean of the full_s* models
    runs/E/test_both.csv        `comp predict --use both`: 50/50 mean of the folds' mean and the full models' mean
    runs/E/test_fold{k}.csv     `comp predict --fold k`: fold k's model alone
    runs/E/predict.json         views and models of the predictions above
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from comp.config import FITTED_KEYS, Config, ConfigError, dump_config
from comp.files import write_csv, write_text
from comp.tasks import Task, task_of

RUNS_DIR = Path("runs")
# val_score: data.metric of the epoch (equal to val_macro_f1 under the default metric); appended last for readers
METRICS_COLUMNS = ["epoch", "train_loss", "val_loss", "val_macro_f1", "val_acc", "lr", "seconds", "images_per_s",
                   "val_score"]
# Keys that change how a run is executed, not what it computes: a run may resume with other values.
EXECUTION_KEYS = {("train", "stop_after_epochs"), ("train", "trackers"), ("train", "num_workers"), ("train", "cache"),
                  ("train", "keep_state"), ("train", "step_delay")}


def run_dir(exp: str) -> Path:
    """``runs/<exp>`` relative to the working directory."""
    return RUNS_DIR / exp


def fold_dir(exp: str, fold: int) -> Path:
    return run_dir(exp) / f"fold_{fold}"


def full_name(i: int) -> str:
    """The folder name of full-data model ``i`` (seed train.seed + i)."""
    return f"full_s{i}"


def full_dir(exp: str, i: int) -> Path:
    return run_dir(exp) / full_name(i)


# Files a job runner keeps in a fold folder across retrains (comp launch: its log, lock and job state).
RUNNER_FILES = {"train.log", "lock", "job.json"}


def _runner_file(p: Path) -> bool:
    return p.name in RUNNER_FILES or p.name.startswith("lock.")


def clear_fold_dir(fd: Path) -> None:
    """Remove a fold's training outputs (a restart from scratch), keeping the runner's RUNNER_FILES."""
    if not fd.exists():
        return
    for p in fd.iterdir():
        if _runner_file(p):
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink(missing_ok=True)


def git_commit(where: Path | None = None) -> str | None:
    """The commit of the comp source tree (with ``+dirty`` when it has local changes), or None outside git."""
    where = where or Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=10)
        if sha.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=where,
                               capture_output=True, text=True, timeout=10)
        return sha.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def versions() -> dict:
    import accelerate
    import albumentations
    import timm
    import torch

    import comp

    return {"comp": str(comp.__version__), "torch": str(torch.__version__), "timm": str(timm.__version__),
            "accelerate": str(accelerate.__version__), "albumentations": str(albumentations.__version__)}


def _comparable(d: dict) -> dict:
    # search: provenance of a config comp tune chose (what it computes is the same either way)
    d = {k: dict(v) if isinstance(v, dict) else v for k, v in d.items()
         if k not in ("versions", "git_commit", "search")}
    for section, key in EXECUTION_KEYS:
        d.get(section, {}).pop(key, None)
    return d


def config_digest(cfg: Config) -> str:
    """A short digest of what the config computes (execution keys left out): recorded in each fold's state."""
    d = _comparable(yaml.safe_load(dump_config(cfg)))
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


MISSING = "<missing>"


def _diff(old: dict, new: dict, prefix: str = "", defaults: dict | None = None) -> list[str]:
    """Changed keys as "key: old -> new". A key the old file lacks (written by a comp that did not have it yet)
    is unchanged when the new value is that key's default: the old run computed the same thing."""
    out = []
    defaults = defaults or {}
    for k in sorted(set(old) | set(new), key=str):
        a, b = old.get(k, MISSING), new.get(k, MISSING)
        d = defaults.get(k, MISSING) if isinstance(defaults, dict) else MISSING
        if isinstance(a, dict) and isinstance(b, dict) and k != "pipeline":
            out += _diff(a, b, f"{prefix}{k}.", d if isinstance(d, dict) else None)
        elif a is MISSING and b == d and d is not MISSING:
            continue
        elif a != b:
            out.append(f"{prefix}{k}: {a!r} -> {b!r}")
    return out


def _defaults() -> dict:
    from comp.config import Config

    return _comparable(yaml.safe_load(dump_config(Config())))


def _per_fold(d: dict) -> dict:
    """_comparable, with train.fold_epochs as a mapping (empty when unset) so that _diff names each fold's entry."""
    d = _comparable(d)
    if isinstance(d.get("train"), dict):
        d["train"]["fold_epochs"] = d["train"].get("fold_epochs") or {}
    return d


def _unstarted_fold_epochs(change: str, exp: str) -> bool:
    """A change of train.fold_epochs for a fold with nothing written yet: it changes what that fold will compute,
    never what any fold computed (comp auto re-fits the epochs of the folds still to train)."""
    key = change.split(":", 1)[0]
    k = key.removeprefix("train.fold_epochs.")
    if key == k or not k.isdigit():
        return False
    fd = fold_dir(exp, int(k))
    return not fd.exists() or all(_runner_file(p) for p in fd.iterdir())


def check_run(cfg: Config, overwrite: bool = False) -> list[str]:
    """Differences between ``runs/<exp>/config.yaml`` and ``cfg`` (empty when none or no run yet). A key the user left
    unset (None, or fitted where the config was built: cfg.derived) is no difference: the run keeps its recorded value.

    Raises ConfigError naming --overwrite when they differ and ``overwrite`` is False."""
    rd = run_dir(cfg.exp)
    path = rd / "config.yaml"
    if not path.exists():
        return []
    old = _per_fold(yaml.safe_load(path.read_text(encoding="utf-8")) or {})
    new = _per_fold(yaml.safe_load(dump_config(cfg)))
    for key in FITTED_KEYS:  # left unset: the run keeps what it fitted (comp.train.defaults)
        section, _, name = key.partition(".")
        unset = key in cfg.derived or (new.get(section) or {}).get(name) is None
        if unset and name in (old.get(section) or {}) and isinstance(new.get(section), dict):
            new[section][name] = old[section][name]
    changes = _diff(old, new, defaults=_per_fold(_defaults()))
    changes = [c for c in changes if not _unstarted_fold_epochs(c, cfg.exp)]
    if changes and not overwrite:
        shown = "; ".join(changes[:5]) + (f" (+{len(changes) - 5} more)" if len(changes) > 5 else "")
        raise ConfigError(
            f"{rd} was made with a different config ({shown}). Use another --exp name, or pass --overwrite to "
            f"delete {rd} and start again."
        )
    return changes


def prepare_run(cfg: Config, overwrite: bool = False, echo: Callable[[str], None] = print) -> Path:
    """Create ``runs/<exp>`` and write its config.yaml (resolved config, versions, git commit); main process only.

    A directory made with a different config is refused (see check_run), or removed first with ``overwrite``."""
    rd = run_dir(cfg.exp)
    if check_run(cfg, overwrite):
        echo(f"--overwrite: removing {rd} (made with a different config)")
        shutil.rmtree(rd)
    rd.mkdir(parents=True, exist_ok=True)
    write_text(rd / "config.yaml", dump_config(cfg, {"versions": versions(), "git_commit": git_commit()}))
    return rd


def class_columns(classes: list[str]) -> list[str]:
    return list(classes)


def oof_frame(cfg: Config, ids, labels, fold: int, probs: np.ndarray, classes: list[str]) -> pd.DataFrame:
    """``<id>, fold, <label>, <class...>`` with one probability column per class (sorted class names)."""
    d = cfg.data
    df = pd.DataFrame({d.id_col: list(ids), "fold": fold, d.label_col: list(labels)})
    p = pd.DataFrame(np.asarray(probs, dtype=np.float64), columns=class_columns(classes))
    if len(set(p.columns) & {d.id_col, "fold", d.label_col}):
        raise ConfigError("a class is named like the id/label/fold column; rename data.id_col or data.label_col")
    return pd.concat([df, p], axis=1)


def read_oof(path: Path, cfg: Config) -> pd.DataFrame:
    return pd.read_csv(path, dtype={cfg.data.id_col: str, cfg.data.label_col: str}, keep_default_na=False)


def oof_cv(oof: pd.DataFrame, label_col: str, classes: list[str], metric: str, *, task: Task | None = None):
    """The CV of an OOF table (``label_col`` holds its labels, one probability column per class) for ``task``
    (default: one class per image)."""
    task = task or task_of("multiclass")
    return task.cv(task.truth(oof[label_col], classes), oof[classes].to_numpy(np.float64), classes, metric)


def honest_cv(oof: pd.DataFrame, label_col: str, classes: list[str], metric: str, chosen_on=(), *,
              task: Task | None = None):
    """``oof_cv``, but for a config a search chose on folds ``chosen_on``: scored on the other folds, the all-folds
    figure beside it (optimistic); chosen on every fold, the all-folds figure flagged "selected in-sample"."""
    from dataclasses import replace

    full = oof_cv(oof, label_col, classes, metric, task=task)
    chosen = sorted({int(k) for k in chosen_on or ()})
    if not chosen:
        return full
    folds = oof["fold"].astype(int)
    untouched = sorted(set(folds) - set(chosen))
    if not untouched:
        return replace(full, all_folds_score=full.score, all_folds_macro_f1=full.macro_f1,
                       note=f"selected in-sample (chosen on every fold {chosen}; no untouched fold)")
    cv = oof_cv(oof[folds.isin(untouched).to_numpy()], label_col, classes, metric, task=task)
    return replace(cv, all_folds_score=full.score, all_folds_macro_f1=full.macro_f1,
                   note=f"folds {untouched}, which the search (chosen on {chosen}) never saw")


def _run_config(rd: Path) -> dict:
    """runs/E/config.yaml as a dict ({} when the run has none yet)."""
    import yaml

    path = Path(rd) / "config.yaml"
    return (yaml.safe_load(path.read_text(encoding="utf-8")) or {}) if path.exists() else {}


def _chosen_on(config: dict) -> list[int]:
    return [int(k) for k in (config.get("search") or {}).get("folds") or []]


def search_folds(rd: Path) -> list[int]:
    """The folds a run's config was chosen on by a search (runs/E/config.yaml search.folds), else []."""
    return _chosen_on(_run_config(rd))


def untouched_rows(chosen: dict[str, Sequence[int]], fold: np.ndarray, echo: Callable[[str], None]) -> np.ndarray:
    """The OOF rows an ensemble's CV scores: those of folds no member's search chose on (``chosen``: experiment ->
    the folds its search chose on; ``fold``: each OOF row's fold). Every row when none did, or when the searches
    chose on every fold: the CV is then selected in-sample, and said so."""
    picked = sorted({int(k) for ks in chosen.values() for k in ks})
    if not picked:
        return np.arange(len(fold))
    keep = np.flatnonzero(~np.isin(fold, picked))
    who = ", ".join(f"{e} (folds {list(ks)})" for e, ks in chosen.items() if ks)
    if not len(keep):
        echo(f"CV selected in-sample: {who} chosen by a search on every fold; no untouched fold is left")
        return np.arange(len(fold))
    echo(f"CV over the folds no search saw ({sorted(set(fold[keep].tolist()))}, {len(keep)} rows): {who} chosen "
         f"by a search; the all-folds figure is optimistic")
    return keep


def run_cv(rd: Path):
    """The CV of a run folder from its oof.csv and config.yaml (metrics.CV); None before every fold is done."""
    path = Path(rd) / "oof.csv"
    if not path.exists() or not (Path(rd) / "config.yaml").exists():
        return None
    config = _run_config(rd)
    data = config.get("data", {})
    id_col, label_col = data.get("id_col", "image_id"), data.get("label_col", "label")
    oof = pd.read_csv(path, dtype={id_col: str, label_col: str}, keep_default_na=False)
    classes = [c for c in oof.columns if c not in (id_col, label_col, "fold")]
    return honest_cv(oof, label_col, classes, data.get("metric", "macro_f1"), _chosen_on(config), task=task_of(data))


def run_task(rd: Path) -> Task:
    """The task of a run folder, from its config.yaml (one class per image before it has one)."""
    return task_of(_run_config(rd).get("data", {}))


def assemble_oof(cfg: Config, train_ids: list[str], folds: list[int]) -> pd.DataFrame | None:
    """``runs/E/oof.csv`` from every fold's oof.csv, in ``train_ids`` order, when every fold is done.

    Returns None (and writes nothing) while a fold is missing. Raises if the folds do not cover every id exactly
    once (the folds file changed under the run)."""
    parts = []
    for k in folds:
        f = fold_dir(cfg.exp, k) / "oof.csv"
        if not (fold_dir(cfg.exp, k) / "done.json").exists() or not f.exists():
            return None
        parts.append(read_oof(f, cfg))
    oof = pd.concat(parts, ignore_index=True)
    idc = cfg.data.id_col
    dup = oof[idc][oof[idc].duplicated()]
    if len(dup):
        raise RuntimeError(f"id {dup.iloc[0]!r} is in the OOF of two folds; folds/folds.csv changed during the run "
                           f"(retrain with --overwrite)")
    missing = set(train_ids) - set(oof[idc])
    if missing:
        raise RuntimeError(f"{len(missing)} train ids (e.g. {sorted(missing)[0]!r}) have no OOF prediction; "
                           f"folds/folds.csv changed during the run (retrain with --overwrite)")
    oof = oof.set_index(idc).loc[list(train_ids)].reset_index()
    write_csv(run_dir(cfg.exp) / "oof.csv", oof)
    return oof


def forget_oof_views(exp: str) -> None:
    """A freshly assembled oof.csv holds plain (identity) predictions: drop what `comp predict --oof` recorded
    about the previous one (its TTA views in predict.json and its oof.train.csv backup), so `comp ensemble`
    warns when test.csv was made with other views."""
    run = run_dir(exp)
    (run / "oof.train.csv").unlink(missing_ok=True)
    info_path = run / "predict.json"
    if info_path.exists():
        info = json.loads(info_path.read_text(encoding="utf-8"))
        if info.pop("oof_views", None) is not None:
            write_text(info_path, json.dumps(info, indent=2))


def read_done(fd: Path) -> dict | None:
    """The done.json summary of a fold (or full-data run) folder, or None when it is not finished."""
    p = Path(fd) / "done.json"
    if not p.exists():
        return None
    return read_json_file(p, f"delete it and train {Path(fd).name} again (comp train --exp {Path(fd).parent.name} "
                             f"... --overwrite)")


def read_json_file(path: Path, fix: str) -> dict:
    """A JSON object comp wrote (done.json, model.json); a damaged one is a ConfigError naming it and ``fix``."""
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path} is damaged (not valid JSON: {e}); comp writes it whole, so it was cut short or "
                          f"edited outside comp: {fix}") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{path} is damaged (a JSON object was expected, found {type(value).__name__}): {fix}")
    return value


def fold_done(exp: str, fold: int) -> dict | None:
    """The fold's done.json summary, or None when it is not finished."""
    return read_done(fold_dir(exp, fold))
