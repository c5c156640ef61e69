"""``comp check``: validate every row and image before anything trains.

Rows: empty id, empty label, duplicated id, an id whose path escapes the image folder (refused, never opened),
missing file. Images are decoded once, in parallel, with the shared loader (:func:`comp.images.load_rgb`):
zero-byte, truncated, non-image and over-large files are problems; CMYK, RGBA, palette, 16-bit, grayscale
and EXIF-rotated images are not. Identical decoded pixels under different labels are a label conflict.

Per-image results are cached under ``runs/.cache/check-*.json`` keyed by path, size and mtime, so the check
that ``comp folds`` and ``comp train`` run first decodes only what changed since the last one.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from comp.config import Config
from comp.console import progress_bar
from comp.data.competition import DataError, image_name, load_test, load_train
from comp.data.images import ImageProblem, load_rgb
from comp.files import write_csv, write_text
from comp.tasks import task_of

PROBLEMS = {  # code -> what it means; the order of the summary table
    "empty_id": "the id cell is empty",
    "empty_label": "the label cell is empty",
    "duplicate_id": "the same id is on more than one row",
    "unsafe_path": "the id's path leaves the image folder (refused, never opened)",
    "missing_file": "no image file for the id",
    "empty_file": "the file is 0 bytes",
    "truncated": "the file ends before the image does",
    "not_an_image": "the file is not an image Pillow can read",
    "too_large": "more pixels than data.max_pixels (decompression bomb?)",
    "corrupt": "the image data can't be decoded",
    "unreadable": "the file can't be opened",
    "label_conflict": "identical pixels under different labels",
}
COLUMNS = ["id", "file", "problem", "detail", "split", "row"]
# Below either figure, decode in this process: starting a pool and shipping results costs more than it saves
# (4000 28x28 PNGs: serial 0.8 s, 2-process pool 1.1 s; 2000 384x384 JPEGs: serial 2.7 s, pool 1.4 s).
SERIAL_BELOW = 256
SERIAL_BELOW_BYTES = 16 << 20
CACHE_DIR = Path("runs/.cache")


@dataclass
class CheckReport:
    ok: bool
    problems: pd.DataFrame  # columns: id, file, problem, detail, split, row (csv line; None for folder layouts)
    n_rows: int  # train rows (+ test rows when checked)
    n_images: int  # distinct image files decoded
    summary: dict = field(default_factory=dict)  # problem -> count
    digests: dict = field(default_factory=dict)  # absolute path -> sha1 of the decoded pixels (healthy images)
    csv_path: Path | None = None

    def bad_rows(self, split: str = "train") -> set:
        p = self.problems
        return set(p.loc[p["split"] == split, "row"].tolist())


def inspect_image(path: str, max_pixels: int) -> tuple[str | None, str, str | None]:
    """(problem or None, detail, sha1 of the decoded RGB pixels and shape) for one file."""
    try:
        arr = load_rgb(path, max_pixels)
    except ImageProblem as e:
        return e.problem, e.detail, None
    except Exception as e:  # noqa: BLE001 - a decoder bug must not stop the whole check
        return "corrupt", f"{path}: {type(e).__name__}: {e}", None
    h = hashlib.sha1(f"{arr.shape}".encode())
    h.update(arr.tobytes())
    return None, f"{arr.shape[1]}x{arr.shape[0]}", h.hexdigest()


def _inspect_chunk(args: tuple[list[str], int]) -> list[tuple[str | None, str, str | None]]:
    paths, max_pixels = args
    return [inspect_image(p, max_pixels) for p in paths]


def _cache_file(cfg: Config, cache_dir: Path) -> Path:
    key = hashlib.sha1(f"{cfg.root}|{cfg.data.max_pixels}".encode()).hexdigest()[:16]
    return cache_dir / f"check-{key}.json"


def _stat(path: str) -> list[int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def inspect_images(
    paths: list[str],
    max_pixels: int,
    workers: int | None = None,
    progress: bool = True,
    cache: Path | None = None,
) -> dict[str, tuple[str | None, str, str | None]]:
    """Decode every path once (in a process pool when there are many): path -> (problem, detail, digest)."""
    stats = {p: _stat(p) for p in paths}
    cached: dict = {}
    if cache is not None and cache.exists():
        try:
            cached = json.loads(cache.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            cached = {}
    results: dict = {}
    todo = []
    for p in paths:
        hit = cached.get(p)
        if hit is not None and stats[p] is not None and hit[0] == stats[p]:
            results[p] = tuple(hit[1])
        else:
            todo.append(p)
    workers = workers or os.cpu_count() or 1
    bar = progress_bar(total=len(todo), desc="check images", unit="img", enabled=progress and bool(todo))
    todo_bytes = sum(stats[p][0] for p in todo if stats[p] is not None)
    if len(todo) < SERIAL_BELOW or todo_bytes < SERIAL_BELOW_BYTES or workers == 1:
        for p in todo:
            results[p] = inspect_image(p, max_pixels)
            bar.update()
    else:
        # Processes, not threads: decoding is CPU work and a decompression bomb must not take the main process.
        size = max(8, min(256, len(todo) // (workers * 8)))
        chunks = [todo[i : i + size] for i in range(0, len(todo), size)]
        with ProcessPoolExecutor(workers) as pool:
            for chunk, out in zip(chunks, pool.map(_inspect_chunk, [(c, max_pixels) for c in chunks])):
                results.update(zip(chunk, out))
                bar.update(len(chunk))
    bar.close()
    if cache is not None and todo:
        keep = {p: [stats[p], list(results[p])] for p in paths if stats[p] is not None}
        try:
            write_text(cache, json.dumps(keep))
        except OSError:
            pass  # a read-only working folder only costs the next run a re-decode
    return results


def _display(folder: str, name: str) -> str:
    """The file as a user would type it: relative to the competition folder, as written (never resolved)."""
    return (Path(folder) / name).as_posix() if folder else name


def _row_problems(df: pd.DataFrame, cfg: Config, split: str, folder: str, has_label: bool) -> list[dict]:
    out, task = [], task_of(cfg)
    ids = df["id"].astype(str)
    counts = ids.value_counts()
    dup_rows: dict = {}
    for i, r in zip(ids, df["row"]):
        if counts.get(i, 0) > 1:
            dup_rows.setdefault(i, []).append(r)
    for rec in df.itertuples(index=False):
        name = image_name(cfg, rec.id, test=split == "test") if cfg.data.layout == "csv" else rec.id
        base = {"id": rec.id, "file": _display(folder, name), "split": split, "row": rec.row}
        if not rec.id.strip():
            out.append({**base, "problem": "empty_id", "detail": "the id cell is empty"})
            continue
        if has_label and not str(rec.label).strip() and not task.empty_label_ok:
            out.append({**base, "problem": "empty_label", "detail": "the label cell is empty"})
        if rec.id in dup_rows:
            others = [str(r) for r in dup_rows[rec.id] if r != rec.row]
            out.append({**base, "problem": "duplicate_id", "detail": f"id also on row(s) {', '.join(others)}"})
        if rec.path is None:
            out.append({**base, "problem": "unsafe_path",
                        "detail": f"'{name}' leaves {folder or 'the image folder'}; refused, not opened"})
        elif not os.path.isfile(rec.path):
            out.append({**base, "problem": "missing_file", "detail": f"{rec.path} does not exist"})
    return out


def _conflicts(df: pd.DataFrame, digests: dict, cfg: Config, folder: str) -> list[dict]:
    """Rows whose decoded pixels equal another row's under a different label (every row of such a group)."""
    seen = df[df["path"].map(lambda p: p is not None and p in digests)]
    if seen.empty:
        return []
    seen = seen.assign(digest=seen["path"].map(digests))
    out = []
    for _, grp in seen.groupby("digest", sort=False):
        labels = sorted(set(grp["label"].astype(str)))
        if len(labels) < 2:
            continue
        for rec in grp.itertuples(index=False):
            others = [
                f"row {r} '{i}' ({lab})" for i, lab, r in zip(grp["id"], grp["label"], grp["row"]) if r != rec.row
            ]
            name = image_name(cfg, rec.id) if cfg.data.layout == "csv" else rec.id
            out.append({
                "id": rec.id, "file": _display(folder, name), "split": "train", "row": rec.row,
                "problem": "label_conflict",
                "detail": f"label '{rec.label}' but same pixels as {', '.join(others[:5])}",
            })
    return out


def run_check(
    cfg: Config,
    out_dir: str | Path | None = "reports",
    workers: int | None = None,
    echo: Callable[[str], None] = print,
    progress: bool = True,
    include_test: bool = True,
    cache_dir: str | Path | None = CACHE_DIR,
) -> CheckReport:
    """Check the train rows (and test rows when ``include_test``) and their images.

    Writes ``out_dir/check.csv`` (one row per problem, header only when there is none) unless out_dir is None,
    and echoes a summary table. ``report.ok`` is False when anything is wrong.
    """
    t0 = time.time()
    d = cfg.data
    train = load_train(cfg)
    train_folder = d.train_dir
    problems = _row_problems(train, cfg, "train", train_folder, has_label=True)
    frames = [("train", train, train_folder)]
    if include_test and d.test_dir:
        try:
            test = load_test(cfg)
        except DataError as e:
            echo(f"test images not checked: {e}")
        else:
            from_sub = bool(d.sample_submission) and (cfg.root / d.sample_submission).exists()
            # row: the line in sample_submission.csv, or None when the test ids come from the folder listing
            test = test.assign(label="", row=list(range(2, len(test) + 2)) if from_sub else None)
            problems += _row_problems(test, cfg, "test", d.test_dir, has_label=False)
            frames.append(("test", test, d.test_dir))
    refused = {(p["split"], p["row"], p["id"]) for p in problems if p["problem"] in ("unsafe_path", "missing_file")}
    paths = []
    for split, df, _ in frames:
        for rec in df.itertuples(index=False):
            if rec.path is not None and (split, rec.row, rec.id) not in refused and rec.id.strip():
                paths.append(rec.path)
    paths = list(dict.fromkeys(paths))
    cache = _cache_file(cfg, Path(cache_dir)) if cache_dir else None
    results = inspect_images(paths, d.max_pixels, workers=workers, progress=progress, cache=cache)
    digests = {p: r[2] for p, r in results.items() if r[0] is None}
    for split, df, folder in frames:
        for rec in df.itertuples(index=False):
            r = results.get(rec.path) if rec.path is not None else None
            if r is not None and r[0] is not None:
                name = image_name(cfg, rec.id, test=split == "test") if d.layout == "csv" else rec.id
                problems.append({"id": rec.id, "file": _display(folder, name), "split": split,
                                 "row": rec.row, "problem": r[0], "detail": r[1]})
    problems += _conflicts(train, digests, cfg, train_folder)
    table = pd.DataFrame(problems, columns=COLUMNS)
    order = {k: i for i, k in enumerate(PROBLEMS)}
    if len(table):
        table = table.assign(_o=table["problem"].map(order).fillna(len(order)), _s=table["split"] != "train")
        table = table.sort_values(["_s", "_o", "row"], kind="stable").drop(columns=["_o", "_s"]).reset_index(drop=True)
    summary = dict(Counter(table["problem"]))
    summary = {k: summary[k] for k in sorted(summary, key=lambda k: order.get(k, len(order)))}
    n_rows = sum(len(df) for _, df, _ in frames)
    report = CheckReport(ok=table.empty, problems=table, n_rows=n_rows, n_images=len(paths), summary=summary,
                         digests=digests)
    if out_dir is not None:
        report.csv_path = write_csv(Path(out_dir) / "check.csv", table.rename(columns={"id": d.id_col}))
    _echo_summary(report, frames, time.time() - t0, echo)
    return report


def _echo_summary(report: CheckReport, frames, seconds: float, echo: Callable[[str], None]) -> None:
    parts = ", ".join(f"{len(df)} {split} rows" for split, df, _ in frames)
    echo(f"checked {parts}, {report.n_images} images decoded or cached ({seconds:.1f} s)")
    if report.ok:
        echo("no problems found")
    else:
        p = report.problems
        rows = []
        for prob, n in report.summary.items():
            splits = ", ".join(f"{s}: {c}" for s, c in p.loc[p["problem"] == prob, "split"].value_counts().items())
            rows.append((prob, str(n), splits, PROBLEMS.get(prob, "")))
        head = ("problem", "rows", "where", "meaning")
        widths = [max(len(r[i]) for r in [head, *rows]) for i in range(3)]
        for r in [head, *rows]:
            echo("  ".join(c.ljust(w) for c, w in zip(r[:3], widths)) + "  " + r[3])
        for rec in p.head(5).itertuples(index=False):
            where = f"{rec.split} row {rec.row}" if rec.row is not None and not pd.isna(rec.row) else rec.split
            echo(f"  {where} '{rec.id}': {rec.problem}: {rec.detail}")
        if len(p) > 5:
            echo(f"  ... and {len(p) - 5} more")
    if report.csv_path is not None:
        echo(f"wrote {report.csv_path} ({len(report.problems)} problem rows)")


def describe(problems: pd.DataFrame, limit: int = 5) -> str:
    """The first few problems as one line each: "row 7 'img_3' (missing_file: ...)"."""
    lines = []
    for rec in problems.head(limit).itertuples(index=False):
        where = f"row {rec.row}" if rec.row is not None and not pd.isna(rec.row) else "file"
        lines.append(f"{where} '{rec.id}': {rec.problem} ({rec.detail})")
    more = f"; and {len(problems) - limit} more" if len(problems) > limit else ""
    return "; ".join(lines) + more


def clean_train(cfg: Config, skip_bad: bool = False, echo: Callable[[str], None] = print) -> pd.DataFrame:
    """The train table (id, label, [group], path, row) with no problem rows.

    Raises DataError naming --skip-bad when problems exist and skip_bad is False; with skip_bad the bad rows
    (every row of a label conflict) are left out and listed through ``echo``.
    """
    report = run_check(cfg, out_dir=None, echo=lambda s: None, progress=True, include_test=False)
    df = load_train(cfg)
    if report.ok:
        return df.reset_index(drop=True)
    p = report.problems
    bad = report.bad_rows("train")
    counts = ", ".join(f"{k}: {v}" for k, v in report.summary.items())
    if not skip_bad:
        raise DataError(
            f"{len(bad)} of {len(df)} train rows have problems ({counts}): {describe(p)}. "
            "Run `comp check` for the full list in reports/check.csv, fix them, or pass --skip-bad to leave "
            "those rows out."
        )
    keep = df[~df["row"].isin(bad)].reset_index(drop=True)
    echo(f"--skip-bad: leaving out {len(bad)} of {len(df)} train rows ({counts}):")
    for rec in p.drop_duplicates("row").sort_values("row").head(20).itertuples(index=False):
        echo(f"  row {rec.row} '{rec.id}': {rec.problem} ({rec.detail})")
    if len(bad) > 20:
        echo(f"  ... and {len(bad) - 20} more (run `comp check` for the full list)")
    if keep.empty:
        raise DataError("every train row has a problem; run `comp check` and fix the data")
    return keep
