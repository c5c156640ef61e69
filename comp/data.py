"""The competition's tables: train rows (id, label, group, path) and test rows (id, path), read per ``data``.

Reading a table never opens an image; ``comp check`` does that. Ids whose path escapes the image folder get
``path = None`` here so no later step can open them.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from comp.config import Config, ConfigError

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


class DataError(ValueError):
    """A problem with the competition files a user must fix; the message names the file, column or row."""


def read_csv_str(path: Path) -> pd.DataFrame:
    """Read a csv with every cell as a string (labels like 'NA' or '001' stay as written)."""
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{path} not found (check data.root / data.train_csv in comp.yaml)") from None
    except pd.errors.EmptyDataError:
        raise DataError(f"{path} is empty: expected a header row and one row per image") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path} is not UTF-8 ({e.reason} at byte {e.start}); re-save it as UTF-8") from None


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


def image_name(cfg: Config, image_id: str) -> str:
    return image_id if cfg.data.id_has_ext else f"{image_id}{cfg.data.ext}"


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
    cols, keys = [d.id_col, d.label_col], ["data.id_col", "data.label_col"]
    if d.group_col:
        cols.append(d.group_col)
        keys.append("data.group_col")
    _require_columns(raw, cols, csv, keys)
    if raw.empty:
        raise DataError(f"{csv}: no rows below the header; expected one row per training image")
    df = pd.DataFrame({"id": raw[d.id_col].str.strip(), "label": raw[d.label_col]})
    if d.group_col:
        df["group"] = raw[d.group_col]
    paths = [safe_join(train_dir, image_name(cfg, i)) for i in df["id"]]
    # object dtype: pandas 3 would store None as NaN in a str column, and later steps test ``path is None``
    df["path"] = pd.Series([str(p) if p is not None else None for p in paths], dtype=object, index=df.index)
    df["row"] = range(2, len(df) + 2)  # line number in train.csv (1 is the header)
    return df


def load_test(cfg: Config) -> pd.DataFrame:
    """Columns: ``id``, ``path``. Ids and their order come from sample_submission.csv when there is one."""
    d = cfg.data
    root = cfg.root
    if not d.test_dir:
        raise ConfigError("data.test_dir is not set in comp.yaml: there are no test images to predict")
    test_dir = root / d.test_dir
    if d.sample_submission and (root / d.sample_submission).exists():
        sub = read_csv_str(root / d.sample_submission)
        _require_columns(sub, [d.id_col], root / d.sample_submission, ["data.id_col"])
        ids = sub[d.id_col].str.strip().tolist()
    else:
        if not test_dir.is_dir():
            raise DataError(f"data.test_dir: {test_dir} is not a folder")
        files = sorted(p for p in test_dir.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTS)
        ids = [f.relative_to(test_dir).as_posix() for f in files]
        if not d.id_has_ext:
            ids = [i[: -len(d.ext)] if d.ext and i.endswith(d.ext) else i for i in ids]
    paths = [safe_join(test_dir, image_name(cfg, i)) for i in ids]
    path_col = pd.Series([str(p) if p is not None else None for p in paths], dtype=object)
    return pd.DataFrame({"id": ids, "path": path_col})


def class_names(labels) -> list[str]:
    """The sorted class names; the order of probability columns everywhere."""
    return sorted({str(x) for x in labels})


def read_folds(cfg: Config) -> pd.DataFrame:
    """``folds/folds.csv`` as written by ``comp folds``: columns id, label, [group], fold (int)."""
    from comp.config import resolve

    path = resolve(cfg, cfg.folds.file)
    if not path.exists():
        raise DataError(f"{path} not found: run `comp folds` first")
    raw = read_csv_str(path)
    d = cfg.data
    _require_columns(raw, [d.id_col, d.label_col, "fold"], path, ["data.id_col", "data.label_col", "folds.file"])
    df = pd.DataFrame({"id": raw[d.id_col], "label": raw[d.label_col], "fold": raw["fold"].astype(int)})
    return df
