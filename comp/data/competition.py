"""The competition's tables: train rows (id, label, group, path) and test rows (id, path), read per ``data``.

Reading a table never opens an image; ``comp check`` does that. Ids whose path escapes the image folder get
``path = None`` here so no later step can open them.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pandas as pd

from comp.config import Config, ConfigError
from comp.errors import DataError  # noqa: F401  (DataError: imported from here too)
from comp.tasks import task_of

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


CSV_HINT = ("give every row as many cells as the header, put a cell that holds a comma or a line break in double "
            "quotes (\"a, b\"), and write a quote inside a quoted cell as two (\"\")")


def read_csv_str(path: Path) -> pd.DataFrame:
    """Read a csv with every cell as a string (labels like 'NA' or '001' stay as written); a UTF-8 byte-order mark
    is dropped. A ragged or badly quoted file is a DataError naming the line, never a parser traceback."""
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except FileNotFoundError:
        raise DataError(f"{path} not found (check data.root / data.train_csv in comp.yaml)") from None
    except pd.errors.EmptyDataError:
        raise DataError(f"{path} is empty: expected a header row and one row per image") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path} is not UTF-8 ({e.reason} at byte {e.start}); re-save it as UTF-8") from None
    except pd.errors.ParserError as e:
        where = csv_shape_problem(path, parse_failed=True) or f"pandas could not parse it ({str(e).strip()})"
        raise DataError(f"{path} {where}; {CSV_HINT}") from None
    where = csv_shape_problem(path)  # pandas fills a row with too few cells silently
    if where:
        raise DataError(f"{path} {where}; {CSV_HINT}")
    return df


def csv_shape_problem(path: Path, parse_failed: bool = False) -> str | None:
    """'line N: ...' of the first row whose cell count differs from the header's, or (when pandas failed to parse
    it) of a quote never closed: the last record, whose cell then runs over lines to the end of the file."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            return None
        start, prev = reader.line_num + 1, None
        for row in reader:
            if prev is not None and prev[1] and len(prev[1]) != len(header):
                return f"line {prev[0]}: {len(prev[1])} cell(s), but the header has {len(header)}"
            prev, start = (start, row), reader.line_num + 1
    if prev is None or not prev[1]:
        return None
    if parse_failed and any("\n" in c for c in prev[1]):
        return f"line {prev[0]}: a double quote opened in this row is never closed (its cell runs to the file's end)"
    if len(prev[1]) != len(header):
        return f"line {prev[0]}: {len(prev[1])} cell(s), but the header has {len(header)}"
    return None


def _require_columns(df: pd.DataFrame, cols: list[str], path: Path, keys: list[str]) -> None:
    for col, key in zip(cols, keys):
        if col not in df.columns:
            raise DataError(
                f"{path}: no column '{col}' (config key {key}); columns are: {', '.join(df.columns)}. "
                f"Fix it with `comp init --{key.split('.')[-1].replace('_', '-')} NAME` or edit comp.yaml."
            )


def safe_join(folder: Path, name: str) -> Path | None:
    """``folder/name`` if it stays inside ``folder``; None for ids like ``../secret.png`` or absolute paths."""
    if not name or "\x00" in name:
        return None
    p = Path(name)
    if p.is_absolute():
        return None
    folder = folder.resolve()
    full = (folder / p).resolve()
    try:
        full.relative_to(folder)
    except ValueError:
        return None
    return full


def image_name(cfg: Config, image_id: str, test: bool = False) -> str:
    """The file name of an id: the id itself, or id + data.ext (a test id: + data.test_ext when it is set)."""
    if cfg.data.id_has_ext:
        return image_id
    return f"{image_id}{test_ext(cfg) if test else cfg.data.ext}"


def test_ext(cfg: Config) -> str:
    """The extension test ids take when ids carry none: data.test_ext, else data.ext."""
    return cfg.data.ext if cfg.data.test_ext is None else cfg.data.test_ext


def load_train(cfg: Config) -> pd.DataFrame:
    """Columns: ``id``, ``label``, ``group`` (when set), ``path`` (absolute str or None), ``row`` (csv line)."""
    d = cfg.data
    root = cfg.root
    train_dir = root / d.train_dir
    if d.layout == "folders":
        if not train_dir.is_dir():
            raise DataError(f"data.train_dir: {train_dir} is not a folder")
        rows = []
        for cls_dir in sorted(p for p in train_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
            for f in sorted(cls_dir.rglob("*")):
                rel = f.relative_to(train_dir)
                # Image files only (as torchvision's ImageFolder): comp's own reports/ or runs/.cache files, or a
                # stray README.txt, inside the tree are not training images.
                if (f.is_file() and f.suffix.lower() in IMAGE_EXTS
                        and not any(part.startswith(".") for part in rel.parts)):
                    rows.append({"id": f.relative_to(train_dir).as_posix(), "label": cls_dir.name, "path": str(f)})
        if not rows:
            raise DataError(f"{train_dir}: no images found in class folders (<train_dir>/<class>/<image>)")
        df = pd.DataFrame(rows)
        df["row"] = range(1, len(df) + 1)
        return df
    if not d.train_csv:
        raise ConfigError("data.train_csv is empty; set it, or data.layout: folders for a class-per-folder tree")
    csv = root / d.train_csv
    raw = read_csv_str(csv)
    cols, keys = [d.id_col], ["data.id_col"]
    if d.label_cols:
        cols += list(d.label_cols)
        keys += ["data.label_cols"] * len(d.label_cols)
    else:
        cols.append(d.label_col)
        keys.append("data.label_col")
    if d.group_col:
        cols.append(d.group_col)
        keys.append("data.group_col")
    _require_columns(raw, cols, csv, keys)
    if raw.empty:
        raise DataError(f"{csv}: no rows below the header; expected one row per training image")
    # Labels are stripped like ids: "cat " in a hand-edited csv is the class "cat", not a class of its own.
    if not d.label_cols:
        labels = raw[d.label_col].str.strip()
    else:  # one 0/1 (or probability) column per class: the task reads them into label strings
        labels = task_of(cfg).column_labels(raw, list(d.label_cols), csv)
    df = pd.DataFrame({"id": raw[d.id_col].str.strip(), "label": labels})
    if d.group_col:
        df["group"] = raw[d.group_col].str.strip()  # "p1 " is patient p1: one group, never split across folds
    paths = [safe_join(train_dir, image_name(cfg, i)) for i in df["id"]]
    # object dtype: pandas 3 would store None as NaN in a str column, and later steps test ``path is None``
    df["path"] = pd.Series([str(p) if p is not None else None for p in paths], dtype=object, index=df.index)
    df["row"] = range(2, len(df) + 2)  # line number in train.csv (1 is the header)
    return df


def _test_csv_ids(cfg: Config) -> list[str] | None:
    d = cfg.data
    if not d.test_csv:
        return None
    path = cfg.root / d.test_csv
    raw = read_csv_str(path)
    col = d.id_col if d.id_col in raw.columns else raw.columns[0]
    return raw[col].str.strip().tolist()


def _agree(test_ids: list[str], sample_ids: list[str], cfg: Config) -> None:
    """test.csv and the sample submission must list the same ids; the error names the difference."""
    a, b = set(test_ids), set(sample_ids)
    if a == b and len(test_ids) == len(sample_ids):
        return
    only_t, only_s = sorted(a - b), sorted(b - a)
    parts = []
    if only_t:
        parts.append(f"{len(only_t)} id(s) only in {cfg.data.test_csv}: {only_t[:5]}")
    if only_s:
        parts.append(f"{len(only_s)} id(s) only in {cfg.data.sample_submission}: {only_s[:5]}")
    if not parts:
        parts.append(f"{len(test_ids)} rows in {cfg.data.test_csv} vs {len(sample_ids)} in "
                     f"{cfg.data.sample_submission} (a duplicated id)")
    raise DataError(f"{cfg.data.test_csv} and {cfg.data.sample_submission} disagree on the test ids: "
                    + "; ".join(parts) + ". Fix the files, or clear data.test_csv in comp.yaml to use the sample's ids")


def load_test(cfg: Config) -> pd.DataFrame:
    """Columns: ``id``, ``path``. Ids and their order come from sample_submission.csv when there is one, else from
    ``data.test_csv``, else from the files of ``data.test_dir``; test.csv and the sample must agree."""
    d = cfg.data
    root = cfg.root
    if not d.test_dir:
        raise ConfigError("data.test_dir is not set in comp.yaml: there are no test images to predict")
    test_dir = root / d.test_dir
    csv_ids = _test_csv_ids(cfg)
    if d.sample_submission and (root / d.sample_submission).exists():
        sub = read_csv_str(root / d.sample_submission)
        _require_columns(sub, [d.id_col], root / d.sample_submission, ["data.id_col"])
        ids = sub[d.id_col].str.strip().tolist()
        if csv_ids is not None:
            _agree(csv_ids, ids, cfg)
    elif csv_ids is not None:
        ids = csv_ids
    else:
        if not test_dir.is_dir():
            raise DataError(f"data.test_dir: {test_dir} is not a folder")
        files = sorted(p for p in test_dir.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTS)
        ids = [f.relative_to(test_dir).as_posix() for f in files]
        if not d.id_has_ext:
            ext = test_ext(cfg)
            ids = [i[: -len(ext)] if ext and i.endswith(ext) else i for i in ids]
        if d.layout == "csv" and d.train_dir == d.test_dir and d.train_csv:  # one folder for both splits
            train_ids = set(read_csv_str(root / d.train_csv)[d.id_col].str.strip())
            ids = [i for i in ids if i not in train_ids]
    paths = [safe_join(test_dir, image_name(cfg, i, test=True)) for i in ids]
    path_col = pd.Series([str(p) if p is not None else None for p in paths], dtype=object)
    return pd.DataFrame({"id": ids, "path": path_col})


def class_names(labels) -> list[str]:
    """The sorted class names; the order of probability columns everywhere."""
    return sorted({str(x) for x in labels})


def label_map(cfg: Config) -> dict[str, str]:
    """``data.label_map`` (json ``{"0": "Healthy", ...}``) as {class: readable name}; {} when unset.

    For reports only: files and submissions keep the class names of train.csv."""
    if not cfg.data.label_map:
        return {}
    path = cfg.root / cfg.data.label_map
    try:
        m = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"data.label_map: {path} not found") from None
    except json.JSONDecodeError as e:
        raise DataError(f"data.label_map: {path} is not valid json ({e})") from None
    if not isinstance(m, dict):
        raise DataError(f'data.label_map: {path} must be a json object like {{"0": "Healthy", "1": "Rust"}}')
    return {str(k): str(v) for k, v in m.items()}


def read_folds(cfg: Config) -> pd.DataFrame:
    """``folds/folds.csv`` as written by ``comp folds``: columns id, label, [group], fold (int)."""
    from comp.config import resolve

    path = resolve(cfg, cfg.folds.file)
    if not path.exists():
        raise DataError(f"{path} not found: run `comp folds` first")
    raw = read_csv_str(path)
    d = cfg.data
    _require_columns(raw, [d.id_col, d.label_col, "fold"], path, ["data.id_col", "data.label_col", "folds.file"])
    fold = pd.to_numeric(raw["fold"].str.strip(), errors="coerce")
    bad = np.flatnonzero(fold.isna().to_numpy() | (fold % 1 != 0).to_numpy() | (fold < 0).to_numpy())
    if len(bad):
        raise DataError(f"{path} line {bad[0] + 2}: fold {raw['fold'].iloc[bad[0]]!r} is not a fold number "
                        f"(0, 1, ..., K-1; {len(bad)} such row(s)); fix the file or write it again with comp folds")
    return pd.DataFrame({"id": raw[d.id_col].str.strip(), "label": raw[d.label_col].str.strip(),
                         "fold": fold.astype(int)})
