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

import copy
import json
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from comp.config import Config, ConfigError
from comp.console import progress_bar
from comp.data.cache import load_images
from comp.data.competition import DataError, load_test, load_train, read_csv_str
from comp.files import write_csv, write_text
from comp.infer.decision import macro_f1
from comp.infer.tta import check_views, create_views
from comp.runs import run_dir
from comp.train.model import create_model, load_checkpoint

FLOAT_FORMAT = "%.7g"
ENGINES = ("torch", "onnxruntime")


USES = ("folds", "full", "both")


@dataclass
class FoldModel:
    fold: int | None  # None: a full-data model (runs/E/full_s{i})
    path: Path
    meta: dict

    @property
    def name(self) -> str:
        return f"fold {self.fold}" if self.fold is not None else self.path.parent.name

    @property
    def size(self) -> int:
        s = self.meta["input_size"]
        return int(s[-1] if isinstance(s, (list, tuple)) else s)

    @property
    def resize(self) -> str:
        return self.meta.get("resize", "stretch")


def _saved_models(run: Path, prefix: str, finished: bool = False) -> list[tuple[int, Path, dict]]:
    """(index, model.safetensors, model.json's meta) of each ``run/<prefix><index>/`` holding both files (and
    done.json when ``finished``), by index."""
    out = []
    for d in run.glob(f"{prefix}*"):
        i, f = d.name[len(prefix):], d / "model.safetensors"
        done = not finished or (d / "done.json").exists()
        if i.isdigit() and f.exists() and f.with_suffix(".json").exists() and done:
            out.append((int(i), f, json.loads(f.with_suffix(".json").read_text(encoding="utf-8"))))
    return sorted(out, key=lambda x: x[0])


def check_same_classes(models: Sequence[FoldModel]) -> None:
    """Models averaged together must predict the same classes, in the same order."""
    classes = list(models[0].meta["classes"])
    for m in models[1:]:
        if list(m.meta["classes"]) != classes:
            raise DataError(f"{m.path}: its classes differ from {models[0].name}'s; retrain it with the same data")


def find_fold_models(run: Path, expected: Sequence[int] | None = None) -> list[FoldModel]:
    """The fold models of a run, sorted by fold; all of ``expected`` must be there and agree on the classes."""
    models = [FoldModel(k, f, meta) for k, f, meta in _saved_models(run, "fold_")]
    exp = run.name
    if not models:
        raise DataError(f"{run}: no fold models (fold_k/model.safetensors); train them: "
                        f"comp train --exp {exp} --all-folds")
    have = {m.fold for m in models}
    missing = sorted(set(expected or ()) - have)
    if missing:
        k = missing[0]
        raise DataError(
            f"{run}: no model for fold(s) {missing} that {run / 'oof.csv'} lists; "
            f"train them first: comp train --exp {exp} --fold {k} (or --all-folds)"
        )
    check_same_classes(models)
    return models


def find_full_models(run: Path) -> list[FoldModel]:
    """The finished full-data models of a run (``full_s*/`` with done.json), by seed index."""
    models = [FoldModel(None, f, meta) for _, f, meta in _saved_models(run, "full_s", finished=True)]
    if not models:
        raise DataError(f"{run}: no finished full-data models (full_sI/done.json); train them: "
                        f"comp train --exp {run.name} --full")
    return models


def output_name(use: str = "folds", fold: int | None = None) -> str:
    """The file (under runs/E/) of a prediction: test.csv, test_full.csv, test_both.csv or test_fold{k}.csv."""
    if fold is not None:
        return f"test_fold{fold}.csv"
    return "test.csv" if use == "folds" else f"test_{use}.csv"


def make_accelerator(cfg: Config):
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState

    from comp.train.loop import _has_accelerator, resolve_precision

    # One process may train and predict several experiments (tests, notebooks): start accelerate's shared
    # state afresh (keeping the process group), as comp.train.loop does.
    AcceleratorState._reset_state(reset_partial_state=False)
    GradientState._reset_state()
    # cpu=True when there is no accelerator: accelerate then sets up gloo for several CPU processes (torchrun).
    return Accelerator(mixed_precision=resolve_precision(cfg.train.precision), cpu=not _has_accelerator())


def _load_model(cfg: Config, fm: FoldModel, device: torch.device) -> torch.nn.Module:
    mcfg = copy.deepcopy(cfg)
    mcfg.model.name = fm.meta.get("model_name", cfg.model.name)
    mcfg.model.pretrained, mcfg.model.pretrained_file = False, None  # the fold's own weights replace them
    model = create_model(mcfg, len(fm.meta["classes"]))
    load_checkpoint(fm.path, model)
    model.eval().to(device)
    if cfg.train.channels_last:
        model.to(memory_format=torch.channels_last)
    return model


@dataclass
class Timing:
    seconds: float = 0.0  # in the inference loops only (no decoding, no model loading)
    images: int = 0  # images x views x folds that went through a model

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds else 0.0


def _memory_format(model: torch.nn.Module) -> torch.memory_format:
    """channels_last when the model's convolution weights are (train.channels_last), else contiguous."""
    w = next((p for p in model.parameters() if p.dim() == 4), None)
    cl = w is not None and w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous()
    return torch.channels_last if cl else torch.contiguous_format


@torch.inference_mode()
def predict_images(
    model: torch.nn.Module,
    images: np.ndarray,
    rows: np.ndarray,
    views: Sequence[str],
    mean: Sequence[float],
    std: Sequence[float],
    accelerator,
    batch_size: int = 128,
    timing: Timing | None = None,
    bar=None,  # a progress_bar to advance
) -> np.ndarray:
    """Softmax probabilities of ``images[rows]`` averaged over ``views``: (len(rows), C), in ``rows`` order.

    ``images`` is uint8 NHWC (every process holds it; each one predicts its shard). Returns the gathered
    result on every process; raises if any row came back missing or twice.
    """
    from torch.utils.data import DataLoader

    fns = create_views(views)
    fmt = _memory_format(model)
    n = len(rows)
    loader = accelerator.prepare_data_loader(DataLoader(torch.arange(n), batch_size=batch_size), device_placement=False)
    device = accelerator.device
    scale = torch.tensor([1 / (255.0 * s) for s in std], device=device).view(1, 3, 1, 1)
    shift = torch.tensor([m / s for m, s in zip(mean, std)], device=device).view(1, 3, 1, 1)
    out = None
    seen = np.zeros(n, np.int64)
    t0 = time.perf_counter()
    for pos in loader:
        idx = rows[pos.numpy()]
        lo, hi = int(idx[0]), int(idx[-1]) + 1
        batch = images[lo:hi] if hi - lo == len(idx) and np.all(np.diff(idx) == 1) else images[idx]
        # NHWC uint8 -> NCHW float in the model's memory format (a mismatch costs ~15% on CPU), reordered
        # while still uint8 (a quarter of the bytes)
        x = torch.from_numpy(np.ascontiguousarray(batch)).to(device, non_blocking=True).permute(0, 3, 1, 2)
        x = x.contiguous(memory_format=fmt).float().mul_(scale).sub_(shift)
        probs = None
        with accelerator.autocast():
            for fn in fns:
                p = model(fn(x)).float().softmax(1)
                probs = p if probs is None else probs.add_(p)
        probs /= len(fns)
        g_pos, g_probs = accelerator.gather_for_metrics((pos.to(device), probs))
        g_pos, g_probs = g_pos.cpu().numpy(), g_probs.cpu().numpy()
        if out is None:
            out = np.zeros((n, g_probs.shape[1]), np.float64)
        out[g_pos] = g_probs
        np.add.at(seen, g_pos, 1)
        if bar is not None:
            bar.update(len(g_pos))
    if timing is not None:
        timing.seconds += time.perf_counter() - t0
        timing.images += n * len(fns)
    bad = np.flatnonzero(seen != 1)
    if len(bad):
        raise RuntimeError(
            f"prediction gathered {len(bad)} row(s) missing or duplicated across processes "
            f"(first: row {int(bad[0])} seen {int(seen[bad[0]])} times); please report this"
        )
    return out


def _decode(cfg: Config, paths: list[str], fm: FoldModel, desc: str, accelerator, progress: bool) -> np.ndarray:
    # The main process decodes first: a disk cache is then written once and read by the others.
    with accelerator.main_process_first():
        return load_images(
            paths, fm.size, fm.resize, max_pixels=cfg.data.max_pixels, cache=cfg.train.cache,
            progress=progress, desc=desc,
        )


def _check_paths(df: pd.DataFrame, what: str, fix: str) -> None:
    bad = df[df["path"].isna()]
    if len(bad):
        raise DataError(f"{what} id {bad['id'].iloc[0]!r} (and {len(bad) - 1} more) has no usable path; {fix}")


def _run_models(
    cfg: Config,
    models: list[FoldModel],
    paths: list[str],
    rows_per_model: list[np.ndarray],
    views: list[str],
    accelerator,
    desc: str,
    timing: Timing,
    progress: bool = True,
    exports: dict | None = None,
) -> list[np.ndarray]:
    """One probability array per model, for its rows; images decoded once per (size, resize).

    exports: fold -> comp.serve.onnx.OnnxFold; those folds run in onnxruntime instead of torch."""
    decoded: dict = {}
    outs = []
    total = sum(len(r) for r in rows_per_model)
    bar = progress_bar(total=total, desc=desc, unit="img", enabled=progress)
    for fm, rows in zip(models, rows_per_model):
        key = (fm.size, fm.resize)
        if key not in decoded:
            decoded[key] = _decode(cfg, paths, fm, f"decode {desc} {fm.size}px", accelerator, progress)
        if exports is not None:  # onnxruntime: normalisation and softmax are inside the exported graph
            t0 = time.perf_counter()
            outs.append(exports[fm.fold].predict(decoded[key], rows, views, cfg.infer.batch_size, bar))
            timing.seconds += time.perf_counter() - t0
            timing.images += len(rows) * len(views)
            continue
        model = _load_model(cfg, fm, accelerator.device)
        mean, std = fm.meta.get("mean"), fm.meta.get("std")
        if mean is None or std is None:
            raise DataError(f"{fm.path.with_suffix('.json')}: no mean/std; retrain fold {fm.fold} with this comp")
        outs.append(predict_images(model, decoded[key], rows, views, mean, std, accelerator,
                                   cfg.infer.batch_size, timing, bar))
        del model
    bar.close()
    return outs


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
    exp = cfg.exp
    if not exp:
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
    run = run_dir(exp)
    outs = [run / output_name(use, k) for k in folds] or [run / output_name(use)]
    for out_path in outs:
        if out_path.exists() and not overwrite:
            raise FileExistsError(f"{out_path} already exists; pass --overwrite to replace it")
    oof_path, oof_df = run / "oof.csv", None
    if oof and not oof_path.exists():
        raise DataError(f"{oof_path} not found: --oof needs the trainer's OOF (comp train --exp {exp} --all-folds)")
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
    models = fold_models + full_models
    check_same_classes(models)
    classes = list(models[0].meta["classes"])
    id_col = cfg.data.id_col
    if engine not in ENGINES:
        raise ConfigError(f"Unknown engine {engine!r}, expected one of {ENGINES}")
    exports = None
    if engine == "onnxruntime":
        if full_models:
            raise ConfigError("--engine onnxruntime runs `comp export`'s fold models; the full models are not "
                              "exported: use --engine torch with --use full/both")
        from comp.serve.onnx import load_exports

        exports = load_exports(exp, models)

    accelerator = make_accelerator(cfg)
    if exports is not None and accelerator.num_processes > 1:
        raise ConfigError("--engine onnxruntime runs in one process; start comp predict without torchrun")
    main = accelerator.is_main_process
    show = progress and main
    if main:
        where = "onnxruntime (CPU)" if exports is not None else str(accelerator.device)
        which = f"folds {[m.fold for m in fold_models]}" if fold_models else ""
        which += (", " if which else "") + (f"full models {[m.name for m in full_models]}" if full_models else "")
        echo(f"predict {exp}: {which}, views {views}, {models[0].size}px, "
             f"{accelerator.num_processes} process(es) on {where}")
    timing = Timing()

    test = load_test(cfg)
    if test.empty:
        raise DataError("no test images to predict (sample_submission.csv / data.test_dir is empty)")
    _check_paths(test, "test", "run `comp check` to see why")
    all_rows = np.arange(len(test))
    probs = _run_models(cfg, models, test["path"].tolist(), [all_rows] * len(models), views, accelerator,
                        "test", timing, show, exports)
    fold_probs, full_probs = probs[:len(fold_models)], probs[len(fold_models):]
    if folds:
        means = list(fold_probs)
        how = "fold model {} alone"
    elif use == "both":
        means = [0.5 * np.mean(fold_probs, axis=0) + 0.5 * np.mean(full_probs, axis=0)]
        how = (f"0.5 x mean of {len(fold_models)} fold model(s) + 0.5 x mean of {len(full_models)} full model(s) "
               f"(each group weighs half)")
    else:
        means = [np.mean(probs, axis=0)]
        how = f"mean over {len(models)} {'fold' if use == 'folds' else 'full'} model(s)"

    def frame(p):
        return pd.concat([pd.DataFrame({id_col: test["id"]}), pd.DataFrame(p, columns=classes)], axis=1)

    results = [frame(p) for p in means]

    oof_report = ""
    if oof:
        oof_report = _rewrite_oof(cfg, run, oof_df, fold_models, classes, views, accelerator, timing, show, exports)

    if main:
        info_path = run / "predict.json"
        info = json.loads(info_path.read_text(encoding="utf-8")) if info_path.exists() else {}
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
        for i, (out_path, result) in enumerate(zip(outs, results)):
            write_csv(out_path, result, float_format=FLOAT_FORMAT)
            used = [fold_models[i]] if folds else models
            desc = how.format(folds[i] if folds else "")
            info.setdefault("outputs", {})[out_path.name] = dict(views=views, models=[m.name for m in used],
                                                                 how=desc, time=stamp)
            echo(f"wrote {out_path}: {len(result)} ids x {len(classes)} classes, {desc} x {len(views)} view(s); "
                 f"{timing.images_per_s:.0f} images/s")
        if use == "folds" and not folds:
            # Each fold model's own test probabilities: fold k of a pseudo-labelled experiment may use fold k's only.
            by_fold = pd.concat([pd.concat([pd.DataFrame({id_col: test["id"], "fold": m.fold}),
                                            pd.DataFrame(p, columns=classes)], axis=1)
                                 for m, p in zip(models, probs)], ignore_index=True)
            write_csv(run / "test_folds.csv", by_fold, float_format=FLOAT_FORMAT)
            info.update(test_views=views, folds=[m.fold for m in models], n_test=len(test), engine=engine, time=stamp)
        if oof:
            info["oof_views"] = views
        write_text(info_path, json.dumps(info, indent=2))
        if oof_report:
            echo(oof_report)
    accelerator.wait_for_everyone()
    result = results[0] if len(results) == 1 else frame(np.mean(means, axis=0))
    result.attrs["timing"] = timing
    result.attrs["files"] = [str(p) for p in outs]
    return result


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
    probs = _run_models(cfg, models, paths, rows, views, accelerator, "oof", timing, show, exports)
    new = np.zeros((len(oof_df), len(classes)))
    for r, p in zip(rows, probs):
        new[r] = p
    y = pd.Categorical(oof_df[d.label_col], categories=classes).codes
    before = macro_f1(y, oof_df[classes].astype(float).to_numpy().argmax(1), len(classes))
    after = macro_f1(y, new.argmax(1), len(classes))
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
