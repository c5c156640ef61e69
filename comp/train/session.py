"""A training run: ``train_folds`` (comp train --fold / --all-folds), ``train_full`` (comp train --full) and
``train_helper`` (a technique's helper model). Each builds one ``Session`` (the accelerator, the pool of rows
and its images decoded once) and trains its units one after another with comp.train.loop.train_unit, the
lifecycle of one fold; the CV is assembled when the last fold of an experiment finishes."""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import replace
from functools import partial

import numpy as np

from comp import runs
from comp.config import Config, ConfigError, fold_config
from comp.data.cache import load_images
from comp.data.competition import load_train
from comp.files import locked, write_text
from comp.tasks import competition_metric, task_of
from comp.train.defaults import fit_defaults
from comp.train.epochs import FILE as EPOCHS_FILE
from comp.train.epochs import fixed_epoch_cv
from comp.train.fold import Session
from comp.train.loop import Stopped, TrainingError, train_unit
from comp.train.rows import Helper, Source, make_pool, prepare_sources
from comp.train.setup import check_config, make_accelerator, num_workers


def _say(accelerator, echo):
    return echo if accelerator.is_main_process else (lambda *_: None)


def train_folds(cfg: Config, folds: list[int] | None = None, resume: bool = False, overwrite: bool = False,
                skip_bad: bool = False, echo: Callable[[str], None] = print,
                on_epoch: Callable[[int, dict], None] | None = None, sources: Sequence[Source] = ()) -> dict:
    """Train ``folds`` (None: every fold in folds.csv) of experiment ``cfg.exp``.

    Finished folds are skipped; interrupted ones continue with ``resume`` or restart with ``overwrite``; a run
    directory made with another config is refused unless ``overwrite``. When every fold is done, writes
    runs/E/oof.csv and returns its macro F1 as ``cv_macro_f1``.

    ``on_epoch(fold, row)``, when given, is called on the main process after each epoch is committed, with the
    metrics.csv row plus ``best_score`` (data.metric) and ``best_epoch`` so far (``comp tune`` reports it to Ray Tune).

    ``sources``: the techniques plugged into each fold's training set (comp.techniques.sources(cfg); rows.py).

    Returns {"folds": {k: {"score", "epoch", ...}}, "cv_macro_f1": float | None, "run_dir": str,
    "interrupted": bool}.
    """
    if resume and overwrite:
        raise ConfigError("--resume continues a run and --overwrite discards it: pass one of them")
    check_config(cfg)
    accelerator = make_accelerator(cfg)
    say = _say(accelerator, echo)
    pool = make_pool(cfg, skip_bad, say, sources, accelerator)
    table, classes = pool.table, pool.classes
    fit_defaults(cfg, lambda: pool.paths, len(classes), say, probe=accelerator.num_processes == 1,
                 workers=num_workers(cfg), folds=int(table["fold"].nunique()))
    cm = competition_metric(cfg, classes)
    all_folds = sorted(table["fold"].unique().tolist())
    folds = all_folds if folds is None else list(dict.fromkeys(folds))
    bad = [k for k in folds if k not in all_folds]
    if bad:
        raise ConfigError(f"--fold {bad[0]}: {cfg.folds.file} has folds {all_folds}")
    # Every rank checks the run directory (so all refuse together); the main process writes it.
    runs.check_run(cfg, overwrite)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        runs.prepare_run(cfg, overwrite=overwrite, echo=say)
    accelerator.wait_for_everyone()

    todo = [k for k in folds if overwrite or runs.fold_done(cfg.exp, k) is None]
    prepare_sources(pool, sources, todo)  # e.g. data.pseudo's test images, teachers checked row by row
    images = _decode(cfg, accelerator, pool.paths) if todo else None
    s = Session(cfg, accelerator, pool, images, say, on_epoch, sources)
    pool.helper = partial(train_helper, s)  # e.g. data.relabel's pair models, trained when a fold needs them
    units = [(k, replace(s, cfg=fold_config(cfg, k)), None) for k in folds]  # train.fold_epochs
    results, interrupted = _run_units(s, units, resume, overwrite)
    out = {"folds": results, "cv_macro_f1": None, "run_dir": str(runs.run_dir(cfg.exp)), "interrupted": interrupted}
    if not interrupted and accelerator.is_main_process:
        oof_path = runs.run_dir(cfg.exp) / "oof.csv"
        if todo or not oof_path.exists():
            oof = runs.assemble_oof(cfg, table["id"].tolist(), all_folds)
            if oof is not None:
                runs.forget_oof_views(cfg.exp)
        else:
            # Nothing trained: keep runs/E/oof.csv as it is (it may hold `comp predict --oof` TTA views).
            oof = runs.read_oof(oof_path, cfg)
        if oof is not None:
            cv = runs.honest_cv(oof, cfg.data.label_col, classes, cm.name, cfg.search.folds, task=task_of(cfg))
            out.update(cv_macro_f1=cv.macro_f1, cv_acc=cv.acc, metric=cv.metric, cv_score=cv.score,
                       cv_all_folds=cv.all_folds_score, cv_note=cv.note)
            scores = ", ".join(f"{k}: {runs.fold_done(cfg.exp, k)['score']:.4f}" for k in all_folds)
            head = f"CV {cm.name} {out['cv_score']:.4f}, macro F1" if cm.name != "macro_f1" else "CV macro F1"
            say(f"{head} {out['cv_macro_f1']:.4f} (accuracy {out['cv_acc']:.4f}; folds' {cm.name} {scores}) "
                f"-> {runs.run_dir(cfg.exp) / 'oof.csv'}")
            fixed = fixed_epoch_cv(runs.run_dir(cfg.exp), cm)
            if fixed is not None:
                out.update(cv_fixed_epoch=fixed.score)
                say(f"  fixed-epoch CV {cm.name} {fixed.score:.4f} (each fold at the epoch the other folds' curves "
                    f"chose: {fixed.epochs}; own best epochs {fixed.own_score:.4f})")
            if cv.note:
                say(f"  CV over {cv.note}; all folds {cm.name} {cv.all_folds_score:.4f} (optimistic: the search "
                    f"{cfg.search.source} chose this config on folds {cfg.search.folds})")
        else:
            left = [k for k in all_folds if runs.fold_done(cfg.exp, k) is None]
            say(f"folds {left} still to train before runs/{cfg.exp}/oof.csv is assembled")
    return out


def _decode(cfg: Config, accelerator, paths: list[str]) -> np.ndarray:
    """Every image of ``paths`` at the input size, decoded once (the main process fills a disk cache first; the
    others then read the finished file)."""
    with accelerator.main_process_first():
        return load_images(paths, cfg.input.size, cfg.input.resize, cfg.data.max_pixels,
                           cache=cfg.train.cache, cache_dir=runs.RUNS_DIR / ".cache",
                           progress=accelerator.is_local_main_process, desc="decode (once)")


def _run_units(s: Session, units: list, resume: bool, overwrite: bool) -> tuple[dict, bool]:
    """Train each (key, session, full) in turn; ({key: summary}, interrupted by train.stop_after_epochs)."""
    cfg, accelerator = s.cfg, s.accelerator
    if accelerator.trackers is not None and cfg.train.trackers:
        accelerator.init_trackers(cfg.exp, config=_flat_config(cfg))
    results, interrupted = {}, False
    try:
        for k, session, full in units:
            results[k] = train_unit(session, k, resume=resume, overwrite=overwrite, full=full)
    except Stopped:
        interrupted = True
    finally:
        if cfg.train.trackers:
            accelerator.end_training()
    return results, interrupted


def train_full(cfg: Config, seeds: int = 1, resume: bool = False, overwrite: bool = False, skip_bad: bool = False,
               echo: Callable[[str], None] = print, sources: Sequence[Source] = ()) -> dict:
    """``comp train --full``: train ``runs/E/full_s{i}`` (i < ``seeds``) on every training row with E's recipe.

    The length (and raw or EMA weights) come from E's finished folds (comp.train.refit); full_s{i} uses
    train.seed + i. ``cfg`` must be E's config (runs/E/config.yaml): only train.epochs and train.seed change, and
    they are part of each run's state digest. Finished seeds are skipped; ``resume``/``overwrite`` as for folds
    (``overwrite`` retrains the full models only, never E's folds).

    Returns {"full": {"full_s0": done.json summary, ...}, "epochs", "why", "ema", "run_dir", "interrupted"}.
    """
    from comp.train.refit import plan_full

    if resume and overwrite:
        raise ConfigError("--resume continues a run and --overwrite discards it: pass one of them")
    check_config(cfg)
    fit_defaults(cfg, lambda: load_train(cfg)["path"].tolist(), echo=echo, probe=False, workers=num_workers(cfg))
    changes = runs.check_run(cfg, overwrite=True)  # listed, never acted on: --full never rewrites runs/E
    if changes:
        shown = "; ".join(changes[:5]) + (f" (+{len(changes) - 5} more)" if len(changes) > 5 else "")
        raise ConfigError(f"--full trains the recipe of {runs.run_dir(cfg.exp)}, but this config differs from its "
                          f"config.yaml ({shown}); drop those --set options, or train the new recipe as another "
                          f"experiment (--exp NEW --all-folds, then --full)")
    plan = plan_full(cfg, seeds)
    for c in plan.configs:
        try:
            check_config(c)
        except ConfigError as e:
            raise ConfigError(f"--full ({plan.epochs} epochs): {e}") from None
    accelerator = make_accelerator(cfg)
    say = _say(accelerator, echo)
    say(f"--full epochs: {plan.why}")
    say(f"--full weights: {plan.ema_why}")
    if cfg.train.patience is not None:
        say("--full: train.patience is ignored (no validation rows; the length is fixed)")
    pool = make_pool(cfg, skip_bad, say, sources, accelerator)
    todo = [i for i in range(seeds) if overwrite or runs.read_done(runs.full_dir(cfg.exp, i)) is None]
    images = _decode(cfg, accelerator, pool.paths) if todo else None
    s = Session(cfg, accelerator, pool, images, say, None, sources)
    pool.helper = partial(train_helper, s)  # data.relabel accepting every suggestion reads (or trains) pair models
    # One session per seed: its config has the full run's epochs and seed (every draw follows from them).
    units = [(runs.full_name(i), replace(s, cfg=c), plan.info(i)) for i, c in enumerate(plan.configs)]
    results, interrupted = _run_units(s, units, resume, overwrite)
    if not interrupted:
        say(f"--full: {len(results)} model(s) {', '.join(str(runs.run_dir(cfg.exp) / n) for n in results)}; "
            f"predict with comp predict --exp {cfg.exp} --use full (or both)")
    return {"full": results, "epochs": plan.epochs, "why": plan.why, "ema": plan.ema,
            "run_dir": str(runs.run_dir(cfg.exp)), "interrupted": interrupted}


def train_fold(cfg: Config, fold: int, resume: bool = False, overwrite: bool = False, skip_bad: bool = False,
               echo: Callable[[str], None] = print, on_epoch: Callable[[int, dict], None] | None = None,
               sources: Sequence[Source] = ()) -> dict:
    """Train one fold (see train_folds); returns its summary (best score and epoch, ...)."""
    return train_folds(cfg, [fold], resume=resume, overwrite=overwrite, skip_bad=skip_bad, echo=echo,
                       on_epoch=on_epoch, sources=sources)["folds"][fold]


def train_helper(s: Session, name: str, held_out: Sequence[int]) -> Helper:
    """A technique's helper model in ``runs/E/<name>``: E's recipe trained on the used rows outside folds
    ``held_out``, with their given labels and no technique, then run on the held-out rows.

    Nothing about it is chosen on the held-out labels: it trains for train.epochs (no early stopping, raw weights,
    a plateau schedule becomes cosine) and what it returns is its last epoch's probabilities (val_epochs.npz), not
    the best epoch's. Trained once: a finished helper of the same split is read back, an interrupted one resumes,
    one made for another split (new folds) is trained again; a second process waits for the first under a lock."""
    t, acc = s.table.copy(), s.accelerator
    fd = runs.run_dir(s.cfg.exp) / name
    held = t["fold"].isin(list(held_out)).to_numpy()
    split = hashlib.sha256(json.dumps([t["id"][held].tolist(), t["id"][~held & t["train_use"]].tolist()])
                           .encode()).hexdigest()[:16]
    t["fold"] = np.where(held, fd.name, "rest").astype(object)
    t["y_train"] = t["y"]
    cfg = copy.deepcopy(s.cfg)
    cfg.train.patience, cfg.train.ema = None, False
    if cfg.train.scheduler == "plateau":
        cfg.train.scheduler = "cosine"
    hs = replace(s, cfg=cfg, pool=replace(s.pool, table=t, helper=None), sources=(), on_epoch=None)
    with locked(fd.parent / f"{fd.name}.lock") if acc.is_main_process else nullcontext():
        acc.wait_for_everyone()  # every rank looks at the folder once the main process holds the lock
        split_file = fd.parent / f"{fd.name}.split.json"  # beside the folder: clearing the folder keeps it
        fresh = split_file.exists() and json.loads(split_file.read_text(encoding="utf-8")).get("split") == split
        trained = not fresh or runs.read_done(fd) is None
        acc.wait_for_everyone()
        if acc.is_main_process and not fresh:
            runs.clear_fold_dir(fd)  # made for another split, or never started
            write_text(split_file, json.dumps({"split": split, "held_out": [int(k) for k in held_out]}))
        acc.wait_for_everyone()
        done = train_unit(hs, fd.name, resume=True, overwrite=False, fd=fd)
    with np.load(fd / EPOCHS_FILE, allow_pickle=False) as z:
        last = int(np.argmax(z["epochs"]))
        ids, probs = z["ids"].astype(str), z["probs"][last].astype(np.float64)
    rows = np.flatnonzero(held)
    if ids.tolist() != t["id"].iloc[rows].astype(str).tolist():
        raise TrainingError(f"{fd / EPOCHS_FILE} does not hold the rows of folds {list(held_out)}; remove {fd}")
    return Helper(rows, probs, trained, float(done.get("seconds", 0.0)))


def _flat_config(cfg: Config) -> dict:
    out = {}
    for section, values in cfg.to_dict().items():
        for k, v in values.items():
            if isinstance(v, (int, float, str, bool)):
                out[f"{section}.{k}"] = v
    return out


