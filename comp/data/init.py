"""``comp init DIR``: write ``comp.yaml`` for a competition folder, saying what was detected and why.

Two layouts: a csv (``train.csv`` with an id and a label column, images in a folder) or a class-per-folder
tree (``DIR/<class>/*.jpg`` or ``DIR/train/<class>/*.jpg``, as torchvision's ImageFolder reads it).
Every guess can be overridden by a flag; when nothing fits, the error names the flag to pass.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import yaml

from comp import weights
from comp.accel import has_accelerator
from comp.config import Config, ConfigError, from_dict, load_config
from comp.data.competition import (
    IMAGE_EXTS,
    DataError,
    class_names,
    load_test,
    load_train,
    read_csv_str,
)
from comp.data.init_multilabel import column_task, wide_target
from comp.data.sizes import FIT_MIN_SIDE, fitted_size, summarize_sizes
from comp.errors import OutputExists
from comp.files import write_text
from comp.tasks import TASKS
from comp.tasks.columns import onehot_labels, wide_labels
from comp.tasks.labels import check_label_cells, label_classes, split_labels, wide_sep

ID_NAMES = ("image_id", "id", "image", "image_name", "filename", "file_name", "file", "img", "name", "path")
LABEL_NAMES = ("label", "labels", "class", "class_name", "category", "target", "species", "y")
PROBE = 50  # ids tried when looking for the image folder and extension

HINT = """
# Other sections (defaults shown; see `comp train --help`). Experiments: configs/<exp>.yaml holds
# model/input/augment/train/infer sections; `--set section.key=value` overrides any key.
# Left unset, input.size, train.batch_size, lr and epochs are fitted to the data and the machine, and training
# prints each with its reason (docs/configuration.md "Defaults fitted to the data").
# folds: {n_splits: 5, seed: 42}
# model: {name: resnet18, pretrained: auto (hub weights when the local cache has them, else from scratch)}
# input: {size: small images: their median short side; larger: fitted to this machine and train.fit_minutes}
# train: {epochs: 30 from scratch / 10 fine-tuning, batch_size: 64 (CPU: 128 from 2048 rows), lr: 3e-3 / 2e-3, loss: ce}
# infer: {tta: [identity]}
# data.metric: macro_f1 (default), accuracy, log_loss, qwk, roc_auc -- set the competition's own metric.
"""


def _subdirs(folder: Path, depth: int = 2) -> list[Path]:
    """``folder`` and its non-hidden subfolders down to ``depth`` levels, shallow first."""
    out, level = [folder], [folder]
    for _ in range(depth):
        nxt = []
        for d in level:
            try:
                nxt += sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith("."))
            except OSError:
                pass
        out += nxt
        level = nxt
    return out


def _images_in(folder: Path, limit: int = 1) -> int:
    n = 0
    try:
        for p in folder.iterdir():
            if p.is_file() and p.suffix.lower() in IMAGE_EXTS:
                n += 1
                if n >= limit:
                    break
    except OSError:
        pass
    return n


def _class_tree(folder: Path) -> list[Path]:
    """Subfolders of ``folder`` that hold images directly (candidate class folders)."""
    try:
        subs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:
        return []
    return [p for p in subs if _images_in(p)]


def _resolve_ids(folder: Path, ids: list[str]) -> tuple[int, bool, str]:
    """How many of ``ids`` name a file in ``folder``: (hits, ids carry the extension, extension to add)."""
    with_ext, exts = 0, Counter()
    for i in ids:
        if (folder / i).is_file():
            with_ext += 1
            continue
        for e in IMAGE_EXTS + tuple(e.upper() for e in IMAGE_EXTS):
            if (folder / f"{i}{e}").is_file():
                exts[e] += 1
                break
    without = sum(exts.values())
    if with_ext >= without:
        return with_ext, True, ""
    return without, False, exts.most_common(1)[0][0]


def _find_image_folder(root: Path, ids: list[str], prefer: str) -> tuple[str, bool, str, int] | None:
    """The folder (relative to root) where most of ``ids`` exist; ties go to a name starting with ``prefer``."""
    best = None
    for d in _subdirs(root):
        hits, has_ext, ext = _resolve_ids(d, ids)
        if not hits:
            continue
        rel = d.relative_to(root).as_posix()
        key = (hits, d.name.lower().startswith(prefer), -len(d.parts))
        if best is None or key > best[0]:
            best = (key, rel, has_ext, ext, hits)
    return None if best is None else best[1:]


def _pick_csv(root: Path, words: tuple[str, ...], exclude: tuple[str, ...] = ()) -> Path | None:
    csvs = sorted(p for p in root.glob("*.csv") if not any(x in p.name.lower() for x in exclude))
    for w in words:
        exact = root / f"{w}.csv"
        if exact.exists():
            return exact
    for w in words:
        for p in csvs:
            if w in p.name.lower():
                return p
    return None


def _rel(path: Path, base: Path) -> str:
    """``path`` relative to ``base`` when it lies inside it, else absolute."""
    path, base = path.resolve(), base.resolve()
    try:
        return path.relative_to(base).as_posix() or "."
    except ValueError:
        return str(path)


def _pick_id_col(train: pd.DataFrame, sample: pd.DataFrame | None, sample_name: str) -> tuple[str, str]:
    cols = list(train.columns)
    if sample is not None and len(sample.columns) and sample.columns[0] in cols:
        return sample.columns[0], f"matches {sample_name}'s first column"
    lower = {c.lower(): c for c in cols}
    for n in ID_NAMES:
        c = lower.get(n)
        if c is not None and train[c].is_unique:
            return c, "its name says id and every value is unique"
    for c in cols:
        if train[c].is_unique:
            return c, "first column whose values are all unique"
    raise DataError(f"could not tell the id column of train.csv (columns: {', '.join(cols)}); pass --id-col NAME")


def _unit_cols(train: pd.DataFrame, cols: list[str]) -> list[str]:
    """Columns whose every cell is a number in [0, 1] (one-hot or probability columns)."""
    out = []
    for c in cols:
        v = pd.to_numeric(train[c], errors="coerce")
        if v.notna().all() and v.between(0, 1).all():
            out.append(c)
    return out


def _pick_label_col(train: pd.DataFrame, id_col: str, sample: pd.DataFrame | None, sample_name: str,
                    group_col: str | None) -> tuple[str | list[str], str]:
    """A label column, or a list of one-hot columns; stops (DataError naming the flags) when it can't tell."""
    cols = [c for c in train.columns if c not in (id_col, group_col)]
    sample_cols = [c for c in sample.columns[1:]] if sample is not None else []
    unit = _unit_cols(train, cols)
    if len(unit) >= 2:
        sums = train[unit].apply(pd.to_numeric).sum(axis=1)
        if (sums - 1).abs().max() <= 1e-3:
            if set(unit) <= set(sample_cols):
                return unit, (f"{len(unit)} columns of 0/1 (or probabilities) that sum to 1 on every row, and "
                              f"{sample_name} has the same columns: a one-hot multi-class target")
            raise DataError(
                f"train.csv columns {', '.join(unit)} hold 0/1 values that sum to 1 on every row (a one-hot label?), "
                f"but {sample_name or 'no sample submission'} does not list them as columns, so comp can't tell. "
                f"Pass --label-cols {','.join(unit)} for a one-hot target, or --label-col NAME for one label column"
            )
    if len(sample_cols) >= 2:  # a wide sample: the label column is the one whose values are its class columns
        for c in cols:
            if set(train[c]) == set(sample_cols):
                return c, f"its values are {sample_name}'s {len(sample_cols)} class columns"
    if sample_cols and sample_cols[0] in cols:
        return sample_cols[0], f"matches {sample_name}'s second column"
    lower = {c.lower(): c for c in cols}
    for n in LABEL_NAMES:
        if n in lower:
            return lower[n], "its name says label"
    repeat = [c for c in cols if train[c].nunique() < len(train)]
    if len(repeat) == 1:
        c = repeat[0]
        return c, f"the only column besides the id with repeated values ({train[c].nunique()} distinct)"
    if len(repeat) > 1:  # a silent wrong guess trains the wrong competition: ask instead
        shown = ", ".join(f"{c} ({train[c].nunique()} values)" for c in repeat[:8])
        raise DataError(
            f"could not tell the label column of train.csv: several columns could be it: {shown}. "
            "Pass --label-col NAME (and --group-col NAME for a column that groups related images), or "
            "--label-cols a,b,c for one-hot columns"
        )
    raise DataError(
        f"could not tell the label column of train.csv (columns: {', '.join(train.columns)}); pass --label-col NAME"
    )


def _find_label_map(root: Path, train_csv: Path, labels: set[str]) -> Path | None:
    """A json object beside train.csv whose keys are the (integer) class names: readable names for reports."""
    for p in sorted(set(train_csv.parent.glob("*.json")) | set(root.glob("*.json"))):
        try:
            m = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(m, dict) and m and labels <= {str(k) for k in m} and all(
                isinstance(v, str) for v in m.values()):
            return p
    return None


def _require_col(df: pd.DataFrame, col: str, flag: str, name: str) -> None:
    if col not in df.columns:
        raise DataError(f"{flag} {col!r}: {name} has no such column; its columns are: {', '.join(df.columns)}")


def _pick_columns(train: pd.DataFrame, train_csv: Path, sample: pd.DataFrame | None, sample_name: str,
                  id_col: str | None, label_col: str | None, label_cols: list[str] | None, group_col: str | None,
                  why: list[str], task: str | None = None, ml: dict | None = None,
                  ) -> tuple[str, str, list[str] | None, pd.Series]:
    """The id column, the label column (or one-hot columns, then the label column comp adds) and the labels.

    ``ml`` (a dict) receives ``task`` and ``label_sep`` when the target is multi-label (comp.data.init_multilabel)."""
    ml = {} if ml is None else ml
    if id_col:
        _require_col(train, id_col, "--id-col", train_csv.name)
        why.append(f"id column: {id_col} (--id-col)")
    else:
        id_col, reason = _pick_id_col(train, sample, sample_name)
        why.append(f"id column: {id_col} ({reason}; else pass --id-col)")
    if group_col:
        _require_col(train, group_col, "--group-col", train_csv.name)
    if label_cols and label_col:
        raise DataError("--label-col names one label column and --label-cols one-hot columns: pass one of them")
    for c in label_cols or []:
        _require_col(train, c, "--label-cols", train_csv.name)
    several = TASKS[task].sigmoid if task else None  # --task: several labels per image, or one; None: detect
    wide = None if label_col else wide_target(train, id_col, group_col, sample, sample_name, label_cols, several)
    if wide is not None:
        label_cols, reason = wide
        sep = wide_sep(label_cols)
        ml.update(task="multilabel", label_sep=sep)
        why.append(f"label columns: {', '.join(label_cols)} ({reason}; else pass --task multiclass)")
        label_col = "label" if "label" not in train.columns else "label_"
        return id_col, label_col, label_cols, wide_labels(train, label_cols, train_csv, sep)
    if label_cols:
        for c in label_cols:
            _require_col(train, c, "--label-cols", train_csv.name)
        why.append(f"label columns: {', '.join(label_cols)} (--label-cols: one-hot, the label is the largest)")
    elif label_col:
        _require_col(train, label_col, "--label-col", train_csv.name)
        why.append(f"label column: {label_col} (--label-col)")
    else:
        picked, reason = _pick_label_col(train, id_col, sample, sample_name, group_col)
        if isinstance(picked, list):
            label_cols = picked
            why.append(f"label columns: {', '.join(picked)} ({reason}; else pass --label-cols or --label-col)")
        else:
            label_col = picked
            why.append(f"label column: {label_col} ({reason}; else pass --label-col)")
    if label_cols:
        if id_col in label_cols:
            raise DataError(f"the id column '{id_col}' is also a label column; pass --id-col and --label-cols")
        label_col = "label" if "label" not in train.columns else "label_"
        labels = onehot_labels(train, list(label_cols), train_csv)
    else:
        if label_col == id_col:
            raise DataError(f"the id and label columns are both '{id_col}'; pass --id-col and --label-col")
        labels = train[label_col]
        multi, reason = column_task(labels, label_col, TASKS[task].sigmoid if task else None)
        if multi:
            check_label_cells(labels, " ", train_csv, label_col)
            ml.update(task="multilabel", label_sep=" ")
            why.append(f"task: multilabel ({reason}; else pass --task multiclass)")
        elif reason:
            why.append(f"task: single-label ({reason}; else pass --task multilabel)")
    return id_col, label_col, label_cols, labels


def _strip_cells(train: pd.DataFrame, train_csv: Path, why: list[str]) -> pd.DataFrame:
    """train.csv's cells with whitespace around them stripped (a spreadsheet export's "Ankle boot "), as every
    later stage reads them; says how many cells changed."""
    stripped = train.apply(lambda c: c.str.strip())
    changed = (stripped != train).sum()
    if changed.sum():
        cols = ", ".join(f"{c} {n}" for c, n in changed.items() if n)
        why.append(f"whitespace: stripped around {changed.sum()} cells of {train_csv.name} ({cols}); comp reads "
                   f"them stripped at every stage")
    return stripped


def _describe_labels(root: Path, train_csv: Path, train: pd.DataFrame, labels: pd.Series, group_col: str | None,
                     why: list[str], sep: str | None = None) -> str | None:
    """Say how many classes and which group column; the label map (a json of class names) for integer labels."""
    if sep is not None:  # multi-label: the classes are the names the cells hold
        names = label_classes(labels, sep)
        per = labels.map(lambda v: len(split_labels(v, sep))).mean()
        why.append(f"classes: {len(names)} labels in {len(train)} rows, {per:.2f} labels per image")
        values = set(names)
    else:
        why.append(f"classes: {labels.nunique()} in {len(train)} rows")
        values = set(labels.astype(str))
    label_map = None
    if all(v.strip().lstrip("-").isdigit() for v in values):
        why.append("labels are integers: kept as written end to end (graded? comp init --task ordinal trains one "
                   "regression output on the grade, scored by qwk)")
        found = _find_label_map(root, train_csv, values)
        if found is not None:
            label_map = _rel(found, root)
            why.append(f"label names: {found.name} (data.label_map; reports only, submissions keep the integers)")
    if group_col:
        why.append(f"group column: {group_col} (--group-col; folds keep a group together)")
    else:
        why.append("group column: none (pass --group-col NAME to keep related images in one fold)")
    return label_map


def _train_images(root: Path, train_csv: Path, train: pd.DataFrame, id_col: str, train_dir: str | None,
                  why: list[str]) -> tuple[str, bool, str]:
    """The train image folder (given or found from the first ids), whether ids carry the extension, and which."""
    ids = [i.strip() for i in train[id_col].head(PROBE)]
    if train_dir is not None:
        hits, has_ext, ext = _resolve_ids(root / train_dir, ids)
        if not hits:
            raise DataError(f"--train-dir {train_dir}: none of the first ids of {train_csv.name} (e.g. "
                            f"'{ids[0]}') names a file there")
        why.append(f"train images: {train_dir}/ (--train-dir)")
    else:
        found = _find_image_folder(root, ids, "train")
        if found is None:
            raise DataError(
                f"could not find the images named in {train_csv.name}'s '{id_col}' column (e.g. '{ids[0]}') in "
                f"{root} or its subfolders; pass --train-dir FOLDER"
            )
        train_dir, has_ext, ext, hits = found
        why.append(f"train images: {train_dir}/ ({hits} of the first {len(ids)} ids found there)")
    why.append(f"ids carry the extension: {'yes' if has_ext else f'no, files are <id>{ext}'}")
    return train_dir, has_ext, ext


def _test_ids(root: Path, train_csv: Path, sample: pd.DataFrame | None, sample_name: str, id_col: str,
              why: list[str]) -> tuple[Path | None, list[str] | None]:
    """test.csv (when there is one with rows) and the test ids, from it or else from the sample submission."""
    test_csv = _pick_csv(root, ("test",), exclude=("sample", "submission", "solution"))
    test_ids = None
    if test_csv is not None and test_csv != train_csv:
        t = read_csv_str(test_csv)
        col = id_col if id_col in t.columns else (t.columns[0] if len(t.columns) else None)
        if col is None or t.empty:
            test_csv = None
        else:
            test_ids = [i.strip() for i in t[col]]
            why.append(f"test ids: {test_csv.name} ({len(test_ids)} ids in column '{col}'"
                       + (f"; must agree with {sample_name})" if sample is not None else ")"))
    else:
        test_csv = None
    if test_ids is None and sample is not None and id_col in sample.columns:
        test_ids = [i.strip() for i in sample[id_col]]
    return test_csv, test_ids


def detect(
    root: Path,
    id_col: str | None = None,
    label_col: str | None = None,
    group_col: str | None = None,
    train_dir: str | None = None,
    test_dir: str | None = None,
    label_cols: list[str] | None = None,
    task: str | None = None,
) -> tuple[dict, list[str]]:
    """The ``data`` section for the competition in ``root`` and one line per choice saying why.

    ``task`` (``--task``): multiclass or multilabel instead of detecting it (comp.data.init_multilabel)."""
    why: list[str] = []
    for flag, val in (("--train-dir", train_dir), ("--test-dir", test_dir)):
        if val is not None and not (root / val).is_dir():
            raise DataError(f"{flag} {val}: {root / val} is not a folder")
    train_csv = _pick_csv(root, ("train", "labels", "train_labels"), exclude=("sample", "submission", "solution",
                                                                               "test"))
    if train_csv is None:
        return _detect_folders(root, train_dir, test_dir, why), why
    train = read_csv_str(train_csv)
    if train.empty or len(train.columns) < 2:
        raise DataError(f"{train_csv}: expected a header and rows with an id and a label column")
    why.append(f"layout: csv ({train_csv.name} lists the train images)")
    train = _strip_cells(train, train_csv, why)
    sample_csv = _pick_csv(root, ("sample_submission", "sample", "submission"), exclude=("solution",))
    sample = read_csv_str(sample_csv) if sample_csv else None
    sample_name = sample_csv.name if sample_csv else ""
    if sample_csv:
        why.append(f"sample submission: {sample_csv.name}")
    else:
        why.append("sample submission: none found (test ids will come from the test image folder)")
    ml: dict = {}
    id_col, label_col, label_cols, labels = _pick_columns(train, train_csv, sample, sample_name, id_col, label_col,
                                                          label_cols, group_col, why, task, ml)
    label_map = _describe_labels(root, train_csv, train, labels, group_col, why, ml.get("label_sep"))
    train_dir, has_ext, ext = _train_images(root, train_csv, train, id_col, train_dir, why)
    test_csv, test_ids = _test_ids(root, train_csv, sample, sample_name, id_col, why)
    test_ext = None
    if test_dir is not None:
        why.append(f"test images: {test_dir}/ (--test-dir)")
    else:
        test_dir, found_ext = _find_test_dir(root, test_ids, has_ext, ext, train_dir, why)
        if found_ext != ext:
            test_ext = found_ext
    if test_dir is not None and test_dir == train_dir:
        why.append("train and test images share one folder (test ids are told apart by the csv files)")
    wide = sample is not None and len(sample.columns) > 2
    metric, chosen = "macro_f1", TASKS.get(task or "")
    if chosen is not None and chosen.init_metric:  # --task ordinal: its metric, and numeric grades
        chosen().classes(labels.astype(str), None, class_names)
        metric, ml["task"] = chosen.init_metric, task
        why.append(chosen.init_note)
    elif ml and wide:
        metric = "roc_auc"
        why.append("metric: roc_auc (a wide multi-label sample is scored from probabilities, by mean column-wise ROC "
                   "AUC; data.metric: macro_f1, micro_f1, samples_f1, f2, map or roc_auc)")
    elif ml:
        why.append("metric: macro_f1 at tuned per-class thresholds (data.metric; set the competition's own: "
                   "micro_f1, samples_f1, f2 (samples), map, roc_auc)")
    else:
        why.append("metric: macro_f1 (data.metric; set the competition's own: accuracy, log_loss, qwk, roc_auc"
                   + ("; a wide sample submission is usually scored by log_loss or roc_auc)" if wide else ")"))
    data = {
        "layout": "csv", "train_csv": _rel(train_csv, root), "train_dir": train_dir, "test_dir": test_dir,
        "sample_submission": _rel(sample_csv, root) if sample_csv else None,
        "test_csv": _rel(test_csv, root) if test_csv else None,
        "id_col": id_col, "label_col": label_col, "label_cols": list(label_cols) if label_cols else None,
        "group_col": group_col, "id_has_ext": has_ext, "ext": ext, "test_ext": test_ext, "label_map": label_map,
        "metric": metric, **ml,
    }
    data = {k: v for k, v in data.items() if v is not None or k in ("test_dir", "sample_submission", "group_col")}
    return data, why


def _find_test_dir(root: Path, test_ids: list[str] | None, has_ext: bool, ext: str, train_dir: str,
                   why: list[str]) -> tuple[str | None, str]:
    """The test image folder and the extension its files add to the test ids (detected on its own: train
    images may be .png and test images .jpg)."""
    if test_ids:
        ids = test_ids[:PROBE]
        best = None
        for d in _subdirs(root):
            if has_ext:
                hits, found_ext = sum((d / n).is_file() for n in ids), ""
            else:
                hits, with_ext, found_ext = _resolve_ids(d, ids)
                if with_ext:  # the test files are the ids themselves: none of them has an extension to add
                    hits = 0
            rel = d.relative_to(root).as_posix()
            key = (hits, found_ext == ext, d.name.lower().startswith("test"))
            if hits and (best is None or key > best[0]):
                best = (key, rel, found_ext)
        if best is not None:
            why.append(f"test images: {best[1]}/ ({best[0][0]} of the first {len(ids)} test ids found there)")
            if best[2] != ext:
                why.append(f"test ids carry no extension either: files are <id>{best[2]} (data.test_ext)")
            return best[1], best[2]
    for d in _subdirs(root, depth=1)[1:]:
        rel = d.relative_to(root).as_posix()
        if d.name.lower().startswith("test") and rel != train_dir and _images_in(d):
            why.append(f"test images: {rel}/ (folder named test* holding images)")
            return rel, ext
    why.append("test images: none found (pass --test-dir FOLDER to predict)")
    return None, ext


def _check_test_files(cfg: Config, echo: Callable[[str], None]) -> None:
    """Every test id must name a file: none found is an error (a wrong folder or extension), some missing a warning
    (comp predict refuses them, naming the id and path)."""
    test = load_test(cfg)
    if test.empty:
        return
    missing = test[[p is None or not os.path.isfile(p) for p in test["path"]]]
    if not len(missing):
        return
    first = missing.iloc[0]
    where = first["path"] or f"{cfg.data.test_dir}/{first['id']} (outside the folder)"
    msg = (f"{len(missing)} of {len(test)} test ids name no file (e.g. id {first['id']!r}: {where} not found); "
           f"check data.test_dir, data.id_has_ext and data.test_ext (or pass --test-dir FOLDER)")
    if len(missing) == len(test):
        raise DataError(msg)
    echo(f"warning: {msg}")


def _detect_folders(root: Path, train_dir: str | None, test_dir: str | None, why: list[str]) -> dict:
    """A class-per-folder tree: <train_dir>/<class>/<image>."""
    if train_dir is None:
        named = [p for p in _subdirs(root, depth=1)[1:] if p.name.lower().startswith("train") and _class_tree(p)]
        if named:
            train_dir = named[0].relative_to(root).as_posix()
            reason = "folder named train* holding class folders"
        elif _class_tree(root):
            train_dir = "."
            reason = "class folders right in the competition folder"
        else:
            raise DataError(
                f"{root}: no train.csv and no class folders of images (DIR/<class>/*.jpg or DIR/train/<class>/*.jpg); "
                "pass --train-dir FOLDER"
            )
    else:
        reason = "--train-dir"
    classes = _class_tree(root / train_dir)
    if not classes:
        raise DataError(f"{root / train_dir}: no class folders holding images (<train_dir>/<class>/<image>)")
    if test_dir is None:
        for d in _subdirs(root, depth=1)[1:]:
            if d.name.lower().startswith("test") and _images_in(d) and d not in classes:
                test_dir = d.relative_to(root).as_posix()
                why.append(f"test images: {test_dir}/ (folder named test* holding images)")
                break
        else:
            why.append("test images: none found (pass --test-dir FOLDER to predict)")
    else:
        why.append(f"test images: {test_dir}/ (--test-dir)")
    if train_dir == "." and test_dir and (root / test_dir) in classes:
        raise DataError(f"{test_dir}/ would also be read as a class; move the class folders into train/ or "
                        "pass --train-dir")
    why.insert(0, f"layout: folders ({len(classes)} class folders in {train_dir}/: {reason})")
    shown = ", ".join(repr(c.name) for c in classes[:6]) + (", ..." if len(classes) > 6 else "")
    why.insert(1, f"classes: {shown}")
    sample_csv = _pick_csv(root, ("sample_submission", "sample", "submission"), exclude=("solution",))
    return {
        "layout": "folders", "train_csv": None, "train_dir": train_dir, "test_dir": test_dir,
        "sample_submission": _rel(sample_csv, root) if sample_csv else None,
        "id_has_ext": True, "ext": "",
    }


def image_sizes(cfg: Config) -> str:
    """What the training images' headers say about their size, and the input size training will fit from it."""
    try:
        paths = [p for p in load_train(cfg)["path"] if p]
    except (DataError, ConfigError, OSError) as e:
        return f"image sizes: not read ({e})"
    s = summarize_sizes(paths)
    if s is None:
        return f"image sizes: no header of {len(paths)} training images could be read (comp check names the files)"
    size = fitted_size(s.median_short, has_accelerator())
    head = f"image sizes: {s.describe()}, short side {s.median_short} (headers of {s.n} training images); "
    if size <= FIT_MIN_SIDE:
        return head + f"training uses input.size {size} unless you set it"
    return head + (f"unless you set input.size, training fits it to this machine (a throughput probe from "
                   f"{FIT_MIN_SIDE} to {size}px) and train.fit_minutes, and prints the estimate before it starts")


def _already_set_up(config_path: Path, root: Path, data: dict, echo: Callable[[str], None]) -> Config:
    """A second `comp init DIR` where config_path already describes DIR: nothing written, the file (and any edit in
    it) kept, what detection would now write differently listed. Another competition's config is refused."""
    try:
        old = (yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}).get("data") or {}
    except (yaml.YAMLError, AttributeError, UnicodeDecodeError):
        old = {}
    old_root = (config_path.resolve().parent / str(old.get("root", ""))).resolve() if old.get("root") else None
    if old_root != root.resolve():
        raise OutputExists(f"{config_path} exists and describes {old_root or 'no data.root'}, not {root}; pass "
                           f"--overwrite to replace it (or -c OTHER.yaml)")
    differ = [f"data.{k}: {old.get(k)!r} (detected now: {v!r})" for k, v in data.items() if old.get(k) != v]
    echo(f"{config_path} already describes {root}: nothing written (pass --overwrite to detect it again)")
    if differ:
        echo(f"  kept as the file has it: {'; '.join(differ)}")
    return load_config(config_path)


def init_competition(
    directory: str | Path,
    config_path: str | Path = "comp.yaml",
    id_col: str | None = None,
    label_col: str | None = None,
    group_col: str | None = None,
    train_dir: str | None = None,
    test_dir: str | None = None,
    overwrite: bool = False,
    echo: Callable[[str], None] = print,
    label_cols: list[str] | None = None,
    task: str | None = None,
) -> Config:
    """Detect the competition layout in ``directory``, write ``config_path`` and return the loaded Config."""
    root = Path(directory)
    if not root.is_dir():
        raise DataError(f"{root} is not a folder")
    config_path = Path(config_path)
    data, why = detect(root, id_col, label_col, group_col, train_dir, test_dir, label_cols, task)
    base = config_path.resolve().parent
    data = {"root": _rel(root, base), **data}
    if config_path.exists() and not overwrite:
        return _already_set_up(config_path, root, data, echo)
    if data.get("test_dir") and data.get("layout") == "csv":  # test.csv and the sample must agree: say so now
        _check_test_files(from_dict({"data": data}, base_dir=str(base)), echo)
    text = (f"# written by `comp init {directory}`; edit freely (unknown keys are errors)\n"
            + yaml.safe_dump({"data": data}, sort_keys=False, allow_unicode=True) + HINT)
    write_text(config_path, text)
    try:
        cfg = load_config(config_path)
    except ConfigError as e:  # a bug here, not the user's: keep the file for a look
        raise ConfigError(f"{config_path} was written but does not load: {e}") from e
    echo(f"competition: {root.resolve()}")
    for line in why:
        echo(f"  {line}")
    echo(f"  {image_sizes(cfg)}")
    echo(f"  {weights.describe_candidates(has_accelerator())}")
    echo(f"wrote {config_path} (data.root: {data['root']})")
    echo("next: comp check" + ("" if os.path.samefile(base, Path.cwd()) else f" -c {config_path}"))
    return cfg
