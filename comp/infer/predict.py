"""``comp predict``: test (and optionally OOF) probabilities of an experiment's fold models, with TTA.

Every fold model in ``runs/E/fold_k/model.safetensors`` sees every test image through every view; the
softmax probabilities are averaged over views, then over folds, and written to ``runs/E/test.csv``
(``<id>``, one column per class); ``runs/E/test_folds.csv`` keeps each fold model's own probabilities (``<id>``,
``fold``, classes: what fold-safe pseudo-labelling needs, see comp.techniques.pseudo). ``oof=True`` runs each
fold model over its own validation rows with the same views and rewrites ``runs/E/oof.csv`` (the trainer's file
is kept as ``runs/E/oof.train.csv``), so that ensemble weights and biases are fit on what the test will see.

Which models (``use``, ``folds``), and where their mean goes:

    use="folds"         every fold model             runs/E/test.csv (+ test_folds.csv)
    folds=[k, ...]      fold k's model alone, each    runs/E/test_fold{k}.csv (a single model's figure)
    use="full"          every runs/E/full_s*/ model   runs/E/test_full.csv
    use="both"          folds and full models         runs/E/test_both.csv: 0.5 x the fold models' mean
                                                      + 0.5 x the full models' mean

``both`` weighs the two groups equally, not each model: the full models saw every row, and K fold models would
otherwise outvote a few of them; each group stays an ensemble of its own. The full models have no OOF
(comp.train.refit), so ``oof`` goes with fold models only.

Images are decoded once per input size (comp.data.cache). Under several processes (``torchrun``/``accelerate
launch``) the rows are sharded by accelerate, gathered with ``gather_for_metrics`` together with their row
numbers, every row is checked to arrive exactly once, and only the main process writes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from comp.accel import inference_accelerator
from comp.config import Config, ConfigError
from comp.data.competition import DataError, load_test, load_train, read_csv_str
from comp.errors import OutputExists
from comp.files import digest_file, recipe_path, record_recipe, same_recipe, write_csv, write_text
from comp.infer.models import (
    FoldModel,
    Timing,
    check_same_classes,
    find_fold_models,
    find_full_models,
    predict_size,
    run_models,
)
from comp.infer.tta import check_views
from comp.runs import run_dir
from comp.tasks import task_of

FLOAT_FORMAT = "%.7g"
ENGINES = ("torch", "onnxruntime")


USES = ("folds", "full", "both")


def output_name(use: str = "folds", fold: int | None = None) -> str:
    """The file (under runs/E/) of a prediction: test.csv, test_full.csv, test_both.csv or test_fold{k}.csv."""
    if fold is not None:
        return f"test_fold{fold}.csv"
    return "test.csv" if use == "folds" else f"test_{use}.csv"


def _check_paths(df: pd.DataFrame, what: str, fix: str) -> None:
    bad = df[df["path"].isna()]
    if len(bad):
        raise DataError(f"{what} id {bad['id'].iloc[0]!r} (and {len(bad) - 1} more) has no usable path; {fix}")
    missing = df[[not os.path.isfile(p) for p in df["path"]]]
    if len(missing):
        raise DataError(f"{what} id {missing['id'].iloc[0]!r}: {missing['path'].iloc[0]} not found ({len(missing)} of "
                        f"{len(df)} {what} ids name no file); check data.{what}_dir, data.id_has_ext and data.ext"
                        f"{' / data.test_ext' if what == 'test' else ''} in comp.yaml, or {fix}")


def _size_text(cfg: Config, fm: FoldModel, onnx: bool) -> str:
    size = predict_size(cfg, fm, onnx)
    return f"{size}px" + (f" (infer.size; trained at {fm.size}px)" if size != fm.size else "")


def predict(
    cfg: Config,
    tta: list[str] | None = None,
    oof: bool = False,
    overwrite: bool = False,
    echo: Callable[[str], None] = print,
    progress: bool = True,
    engine: str = "torch",
    use: str = "folds",
    folds: Sequence[int] | None = None,
) -> pd.DataFrame:
    """Write ``runs/E/test.csv`` (E = ``cfg.exp``) and return it; with ``oof`` also rewrite ``runs/E/oof.csv``.

    tta: view names (comp.infer.tta), default ``infer.tta``. An existing output is refused unless ``overwrite``.
    progress: tqdm bars (main process only).
    engine: ``torch``, or ``onnxruntime`` (the ``comp export`` files in runs/E/export/; one process, CPU).
    use: ``folds``, ``full`` or ``both``; folds: only these fold models, each to its own file (module docstring).
    Returns the written mean (with ``folds``: of the models asked for); ``attrs['timing']`` holds the
    inference-loop seconds and images (x views x models), ``attrs['files']`` the files written.
    """
    views, folds = _check_request(cfg, tta, oof, use, folds)
    run = run_dir(cfg.exp)
    outs = [run / output_name(use, k) for k in folds] or [run / output_name(use)]
    fold_models, full_models, oof_df = _choose_models(run, use, folds, oof)
    models = fold_models + full_models
    check_same_classes(models)
    classes = list(models[0].meta["classes"])
    exports = _exports(cfg.exp, engine, models, full_models)
    test = load_test(cfg)
    recipe = _recipe(cfg, views, oof, use, folds, engine, models, test)
    if not overwrite and all(same_recipe(p, recipe) for p in outs + ([run / "oof.csv"] if oof else [])):
        echo(f"predict {cfg.exp}: {', '.join(str(p) for p in outs)} already made by the same models, views and test "
             f"images; nothing to do (pass --overwrite to predict again)")
        done = read_csv_str(outs[0])
        done.attrs["timing"], done.attrs["files"] = Timing(), [str(p) for p in outs]
        return done
    for out_path in outs:
        if out_path.exists() and not overwrite:
            raise OutputExists(f"{out_path} already exists, made {_made_by(out_path)}; pass --overwrite to "
                               f"replace it")

    accelerator = inference_accelerator(cfg.train.precision)
    if exports is not None and accelerator.num_processes > 1:
        raise ConfigError("--engine onnxruntime runs in one process; start comp predict without torchrun")
    main = accelerator.is_main_process
    show = progress and main
    if main:
        where = "onnxruntime (CPU)" if exports is not None else str(accelerator.device)
        which = f"folds {[m.fold for m in fold_models]}" if fold_models else ""
        if full_models:
            which += (", " if which else "") + f"full models {[m.name for m in full_models]}"
        echo(f"predict {cfg.exp}: {which}, views {views}, {_size_text(cfg, models[0], exports is not None)}, "
             f"{accelerator.num_processes} process(es) on {where}")
    timing = Timing()

    if test.empty:
        raise DataError("no test images to predict (sample_submission.csv / data.test_dir is empty)")
    _check_paths(test, "test", "run `comp check` to see why")
    probs = run_models(cfg, models, test["path"].tolist(), [np.arange(len(test))] * len(models), views, accelerator,
                       "test", timing, show, exports)
    means, how = _means(probs, len(fold_models), len(full_models), use, bool(folds))

    def frame(p):
        return pd.concat([pd.DataFrame({cfg.data.id_col: test["id"]}), pd.DataFrame(p, columns=classes)], axis=1)

    results = [frame(p) for p in means]
    oof_report = ""
    if oof:
        oof_report = _rewrite_oof(cfg, run, oof_df, fold_models, classes, views, accelerator, timing, show, exports)
    if main:
        out = Written(outs, results, models, fold_models, folds, how, views, timing)
        _write_outputs(cfg, run, out, use, engine, test, probs, oof, echo)
        for path in outs + ([run / "oof.csv"] if oof else []):
            record_recipe(path, recipe)
        if oof_report:
            echo(oof_report)
    accelerator.wait_for_everyone()
    result = results[0] if len(results) == 1 else frame(np.mean(means, axis=0))
    result.attrs["timing"] = timing
    result.attrs["files"] = [str(p) for p in outs]
    return result


def _recipe(cfg: Config, views, oof: bool, use: str, folds, engine: str, models, test: pd.DataFrame) -> dict:
    """What a prediction is made from: the request, each model's weights and the test ids (comp.files recipes)."""
    ids = hashlib.sha256("\n".join(test["id"].astype(str)).encode()).hexdigest()[:20]
    return {"command": "predict", "views": views, "oof": oof, "use": use, "folds": folds, "engine": engine,
            "infer_size": cfg.infer.size, "models": {m.name: digest_file(m.path) for m in models}, "test_ids": ids}


def _made_by(path: Path) -> str:
    """'by other models or views' when a recipe was recorded for ``path``, else 'before recipes were recorded'."""
    return "by other models, views or test images" if recipe_path(path).exists() else "by an earlier command"


def _check_request(cfg: Config, tta, oof: bool, use: str, folds) -> tuple[list[str], list[int]]:
    """The TTA views and the folds asked for, or the ConfigError naming the option that does not fit."""
    if not cfg.exp:
        raise ConfigError("predict needs an experiment: comp predict --exp NAME")
    if use not in USES:
        raise ConfigError(f"--use {use!r}: expected one of {', '.join(USES)}")
    folds = list(dict.fromkeys(folds or []))
    if folds and use != "folds":
        raise ConfigError(f"--fold picks fold models; it goes with --use folds, not --use {use}")
    if oof and use == "full":
        raise ConfigError("--oof rewrites the folds' OOF, and the full models have none (every training row trained "
                          "them): pass --use folds (or both) with --oof")
    if oof and folds:
        raise ConfigError("--oof rewrites every fold's OOF with its own model: leave out --fold")
    try:
        views = check_views(tta if tta else cfg.infer.tta)
    except ValueError as e:
        raise ConfigError(f"{'--tta' if tta else 'infer.tta'}: {e}") from None
    return views, folds


def _choose_models(run: Path, use: str, folds: list[int], oof: bool):
    """(fold models, full models, the trainer's OOF table or None) that ``use`` and ``folds`` ask for."""
    oof_path, oof_df = run / "oof.csv", None
    if oof and not oof_path.exists():
        raise DataError(f"{oof_path} not found: --oof needs the trainer's OOF (comp train --exp {run.name} "
                        f"--all-folds)")
    fold_models: list[FoldModel] = []
    if use in ("folds", "both"):
        expected = folds or None
        if oof_path.exists() and not folds:  # every fold the OOF lists must have its model
            oof_df = read_csv_str(oof_path)
            if "fold" not in oof_df.columns:
                raise DataError(f"{oof_path}: no column 'fold'; columns are: {', '.join(oof_df.columns)}")
            expected = sorted(int(k) for k in oof_df["fold"].astype(int).unique())
        fold_models = find_fold_models(run, expected)
        if folds:
            fold_models = [m for k in folds for m in fold_models if m.fold == k]
    full_models = find_full_models(run) if use in ("full", "both") else []
    return fold_models, full_models, oof_df


def _exports(exp: str, engine: str, models: list[FoldModel], full_models: list[FoldModel]) -> dict | None:
    """fold -> onnxruntime session for ``--engine onnxruntime``; None for torch."""
    if engine not in ENGINES:
        raise ConfigError(f"Unknown engine {engine!r}, expected one of {ENGINES}")
    if engine != "onnxruntime":
        return None
    if full_models:
        raise ConfigError("--engine onnxruntime runs `comp export`'s fold models; the full models are not "
                          "exported: use --engine torch with --use full/both")
    from comp.infer.onnxrt import load_exports

    return load_exports(exp, models)


def _means(probs: list[np.ndarray], n_fold: int, n_full: int, use: str, per_fold: bool):
    """The probabilities each output file gets, and how they were combined (module docstring)."""
    fold_probs, full_probs = probs[:n_fold], probs[n_fold:]
    if per_fold:
        return list(fold_probs), "fold model {} alone"
    if use == "both":
        return ([0.5 * np.mean(fold_probs, axis=0) + 0.5 * np.mean(full_probs, axis=0)],
                f"0.5 x mean of {n_fold} fold model(s) + 0.5 x mean of {n_full} full model(s) (each group weighs half)")
    return [np.mean(probs, axis=0)], f"mean over {len(probs)} {'fold' if use == 'folds' else 'full'} model(s)"


@dataclass
class Written:
    """What predict writes: one output file per result, and how each was made."""

    outs: list[Path]
    results: list[pd.DataFrame]
    models: list[FoldModel]
    fold_models: list[FoldModel]
    folds: list[int]
    how: str
    views: list[str]
    timing: Timing


def _write_outputs(cfg: Config, run: Path, w: Written, use: str, engine: str, test: pd.DataFrame,
                   probs: list[np.ndarray], oof: bool, echo: Callable[[str], None]) -> None:
    """The output files, test_folds.csv (every fold model's own) and predict.json (main process)."""
    id_col, classes = cfg.data.id_col, list(w.models[0].meta["classes"])
    info_path = run / "predict.json"
    info = json.loads(info_path.read_text(encoding="utf-8")) if info_path.exists() else {}
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
    for i, (out_path, result) in enumerate(zip(w.outs, w.results)):
        write_csv(out_path, result, float_format=FLOAT_FORMAT)
        used = [w.fold_models[i]] if w.folds else w.models
        desc = w.how.format(w.folds[i] if w.folds else "")
        # images_per_s: images x views x models per second of inference here (comp bundle's run-time estimate)
        info.setdefault("outputs", {})[out_path.name] = dict(views=w.views, models=[m.name for m in used],
                                                             how=desc, time=stamp,
                                                             images_per_s=round(w.timing.images_per_s, 1))
        echo(f"wrote {out_path}: {len(result)} ids x {len(classes)} classes, {desc} x {len(w.views)} view(s); "
             f"{w.timing.images_per_s:.0f} images/s")
    if use == "folds" and not w.folds:
        # Each fold model's own test probabilities: fold k of a pseudo-labelled experiment may use fold k's only.
        by_fold = pd.concat([pd.concat([pd.DataFrame({id_col: test["id"], "fold": m.fold}),
                                        pd.DataFrame(p, columns=classes)], axis=1)
                             for m, p in zip(w.models, probs)], ignore_index=True)
        write_csv(run / "test_folds.csv", by_fold, float_format=FLOAT_FORMAT)
        info.update(test_views=w.views, folds=[m.fold for m in w.models], n_test=len(test), engine=engine,
                    time=stamp)
    if oof:
        info["oof_views"] = w.views
    write_text(info_path, json.dumps(info, indent=2))


def _rewrite_oof(cfg, run, oof_df, models, classes, views, accelerator, timing, show, exports=None) -> str:
    d = cfg.data
    for col in (d.id_col, "fold", d.label_col):
        if col not in oof_df.columns:
            raise DataError(f"{run / 'oof.csv'}: no column '{col}'; columns are: {', '.join(oof_df.columns)}")
    cls_cols = [c for c in oof_df.columns if c not in (d.id_col, "fold", d.label_col)]
    if sorted(cls_cols) != sorted(classes):
        raise DataError(f"{run / 'oof.csv'}: its class columns {cls_cols} differ from the fold models' {classes}")
    train = load_train(cfg).set_index("id")
    ids = oof_df[d.id_col]
    unknown = ids[~ids.isin(train.index)]
    if len(unknown):
        raise DataError(f"{run / 'oof.csv'}: id {unknown.iloc[0]!r} is not in the train table; was it made from "
                        "another train.csv?")
    paths = train.loc[ids, "path"].tolist()
    _check_paths(pd.DataFrame({"id": ids, "path": paths}), "train", "run `comp check` to see why")
    folds = oof_df["fold"].astype(int).to_numpy()
    rows = [np.flatnonzero(folds == m.fold) for m in models]
    probs = run_models(cfg, models, paths, rows, views, accelerator, "oof", timing, show, exports)
    new = np.zeros((len(oof_df), len(classes)))
    for r, p in zip(rows, probs):
        new[r] = p
    task = task_of(cfg)  # macro F1 (of the labels at 0.5 for several per image)
    y = task.truth(oof_df[d.label_col], classes)
    before = task.cv(y, oof_df[classes].astype(float).to_numpy(), classes, "macro_f1").macro_f1
    after = task.cv(y, new, classes, "macro_f1").macro_f1
    if not accelerator.is_main_process:
        return ""
    backup = run / "oof.train.csv"
    if not backup.exists():
        shutil.copyfile(run / "oof.csv", backup)
    out = oof_df[[d.id_col, "fold", d.label_col]].copy()
    out = pd.concat([out.reset_index(drop=True), pd.DataFrame(new, columns=classes)], axis=1)
    write_csv(run / "oof.csv", out, float_format=FLOAT_FORMAT)
    return (f"rewrote {run / 'oof.csv'} with views {views}: OOF macro F1 {after:.4f} "
            f"(before: {before:.4f}; the trainer's OOF is kept in {backup})")
