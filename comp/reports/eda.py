"""``comp eda``: one HTML page (plus PNGs) about the training data, before anything trains.

What is on the page, and how much of the data each part reads:

- class counts (and per fold when ``folds/folds.csv`` exists) — the csv only;
- image sizes, aspect ratios, file formats and colour modes, train and test — every file's header only
  (Pillow's ``Image.open`` reads no pixels);
- brightness/contrast and perceptual hashes (``imagehash.phash``) — every train image (or ``max_images`` of them),
  decoded at reduced size where the format allows (JPEG draft mode);
- per-channel pixel histograms with mean/std (the numbers for ``input.mean`` / ``input.std``) — a random sample
  of ``pixel_sample`` images at full resolution; the page says so;
- exact duplicates (identical decoded pixels, from ``comp check``; identical file bytes without it) and near
  duplicates (phash Hamming distance <= ``near_threshold``) within a class, across classes (label conflicts)
  and across folds (leakage that inflates CV), with thumbnails of both images;
- the problems ``comp check`` found (``check.csv`` in the report folder). Broken files are reported, never fatal.

Images: figures are PNG files beside ``index.html``; thumbnails are PNG files under ``thumbs/``, named by row
position (never by id or class name). The folder is self-contained.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from comp.config import Config
from comp.console import progress_bar
from comp.data.check import PROBLEMS, CheckReport, run_check
from comp.data.competition import DataError, class_names, load_test, load_train, read_folds
from comp.files import write_csv, write_text
from comp.reports.eda_multilabel import label_sections
from comp.reports.page import Img, Report, Section, pyplot, report_dir, save_figure, thumb_src
from comp.tasks.labels import label_classes, split_labels

PIXEL_SAMPLE = 2000  # images read at full resolution for channel histograms and mean/std
HASH_DRAFT = 128  # JPEGs are decoded at about this side for hashing (draft mode); enough for a 32x32 phash
NEAR_THRESHOLD = 3  # phash bits that may differ for a near duplicate (JPEG re-encode / resize / brightness: 0-2)
MAX_PAIRS = 2_000_000  # stop collecting duplicate pairs beyond this (a folder of blank images makes n^2 pairs)
SHOW_PAIRS = 24  # duplicate pairs shown per table
SAMPLES_PER_CLASS = 8
MAX_CLASSES_SHOWN = 100
EXTREMES = 8  # thumbnails per brightness/contrast extreme
SERIAL_BELOW = 256


# ---------------------------------------------------------------- scanning


def _scan_one(path: str | None, level: int, max_pixels: int) -> tuple[dict, np.ndarray | None]:
    """Read one file. level 0: header only; 1: + phash, brightness, contrast; 2: + full-res channel histograms.

    Returns (record, histogram (3, 256) int64 or None). A file that can't be read gets ``problem`` set.
    """
    from PIL import Image

    from comp.data.images import to_rgb

    rec: dict = {"problem": None}
    if path is None:
        rec["problem"] = "unsafe_path"
        return rec, None
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        rec["problem"] = "missing_file" if isinstance(e, FileNotFoundError) else "unreadable"
        return rec, None
    rec["bytes"] = len(data)
    if not data:
        rec["problem"] = "empty_file"
        return rec, None
    try:
        im = Image.open(io.BytesIO(data))
        rec.update(format=im.format or "?", mode=im.mode, width=im.size[0], height=im.size[1],
                   frames=getattr(im, "n_frames", 1))
    except Exception:  # noqa: BLE001 - any decoder failure is a reported problem, never a crash
        rec["problem"] = "not_an_image"
        return rec, None
    if im.size[0] * im.size[1] > max_pixels:
        rec["problem"] = "too_large"
        return rec, None
    if level == 0:
        return rec, None
    hist = None
    try:
        if level == 1:
            im.draft("RGB", (HASH_DRAFT, HASH_DRAFT))  # JPEG only: decode at 1/2..1/8 scale
        im.load()
        rgb = to_rgb(im)
    except Exception:  # noqa: BLE001 - any decoder failure is a reported problem, never a crash
        rec["problem"] = "corrupt"
        return rec, None
    import imagehash

    gray = Image.fromarray(rgb).convert("L")
    g = np.asarray(gray, dtype=np.float32)
    rec["brightness"] = float(g.mean())
    rec["contrast"] = float(g.std())
    rec["phash"] = int(str(imagehash.phash(gray)), 16)
    if level == 2:
        hist = np.stack([np.bincount(rgb[..., c].ravel(), minlength=256) for c in range(3)]).astype(np.int64)
    return rec, hist


def _scan_chunk(args: tuple[list, list, int]) -> tuple[list[dict], np.ndarray]:
    paths, levels, max_pixels = args
    recs, total = [], np.zeros((3, 256), np.int64)
    for p, lv in zip(paths, levels):
        rec, hist = _scan_one(p, lv, max_pixels)
        recs.append(rec)
        if hist is not None:
            total += hist
    return recs, total


def scan_images(paths: list, levels: list[int], max_pixels: int, workers: int | None = None,
                progress: bool = True, desc: str = "eda scan") -> tuple[pd.DataFrame, np.ndarray]:
    """Scan files (see :func:`_scan_one`) in a process pool: (one record per path, summed histograms (3, 256))."""
    n = len(paths)
    workers = workers or os.cpu_count() or 1
    hist = np.zeros((3, 256), np.int64)
    recs: list[dict] = []
    bar = progress_bar(total=n, desc=desc, unit="img", enabled=progress and n > 0)
    if n < SERIAL_BELOW or workers == 1:
        for p, lv in zip(paths, levels):
            rec, h = _scan_one(p, lv, max_pixels)
            recs.append(rec)
            if h is not None:
                hist += h
            bar.update()
    else:
        size = max(16, min(512, n // (workers * 8)))
        chunks = [(paths[i : i + size], levels[i : i + size], max_pixels) for i in range(0, n, size)]
        with ProcessPoolExecutor(workers) as pool:
            for (cp, _, _), (r, h) in zip(chunks, pool.map(_scan_chunk, chunks)):
                recs.extend(r)
                hist += h
                bar.update(len(cp))
    bar.close()
    cols = ["problem", "bytes", "format", "mode", "width", "height", "frames", "brightness", "contrast", "phash"]
    df = pd.DataFrame.from_records(recs, columns=cols)
    return df, hist


# ---------------------------------------------------------------- duplicates


def near_pairs(hashes: np.ndarray, threshold: int, max_pairs: int = MAX_PAIRS) -> tuple[np.ndarray, ...]:
    """All pairs (i < j) of 64-bit hashes within ``threshold`` differing bits: (i, j, distance, complete).

    Vectorised in row blocks (XOR + popcount over the upper triangle): about 15 s for 100k hashes on one core,
    with bounded memory. ``complete`` is False when more than ``max_pairs`` pairs exist (the rest are dropped).
    """
    h = np.ascontiguousarray(hashes, dtype=np.uint64)
    n = len(h)
    block = max(1, (1 << 22) // max(n, 1))
    out_i, out_j, out_d, total = [], [], [], 0
    for s in range(0, n, block):
        e = min(n, s + block)
        d = np.bitwise_count(h[s:e, None] ^ h[None, s:])
        r, c = np.nonzero(d <= threshold)
        keep = c > r  # columns start at s: upper triangle only
        r, c = r[keep], c[keep]
        out_i.append((r + s).astype(np.int64))
        out_j.append((c + s).astype(np.int64))
        out_d.append(d[r, c].astype(np.int16))
        total += len(r)
        if total > max_pairs:
            break
    if not out_i:
        z = np.zeros(0, np.int64)
        return z, z, z.astype(np.int16), True
    i, j, dist = np.concatenate(out_i), np.concatenate(out_j), np.concatenate(out_d)
    complete = total <= max_pairs
    return i[:max_pairs], j[:max_pairs], dist[:max_pairs], complete


def exact_pairs(keys: pd.Series, max_pairs: int = MAX_PAIRS) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (i < j) of positions with equal non-null keys."""
    ii, jj, total = [], [], 0
    k = keys.dropna()
    groups = k.groupby(k, sort=False).indices if len(k) else {}
    for idx in groups.values():
        if len(idx) < 2:
            continue
        pos = k.index.to_numpy()[idx]
        a, b = np.triu_indices(len(pos), 1)
        ii.append(pos[a])
        jj.append(pos[b])
        total += len(a)
        if total > max_pairs:
            break
    if not ii:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(ii)[:max_pairs].astype(np.int64), np.concatenate(jj)[:max_pairs].astype(np.int64)


def find_duplicates(table: pd.DataFrame, near_threshold: int = NEAR_THRESHOLD,
                    max_pairs: int = MAX_PAIRS) -> tuple[pd.DataFrame, bool]:
    """Duplicate pairs of ``table`` rows (columns id, label, fold, exact_key, phash).

    Returns (pairs with columns a, b, id_a, id_b, label_a, label_b, fold_a, fold_b, kind (exact|near), distance,
    same_label, cross_fold; complete flag).
    """
    hashed = table.index[table["phash"].notna()].to_numpy()
    hashes = table.loc[hashed, "phash"].astype("uint64").to_numpy()
    i, j, dist, complete = near_pairs(hashes, near_threshold, max_pairs)
    near = pd.DataFrame({"a": hashed[i], "b": hashed[j], "distance": dist.astype(int)})
    ea, eb = exact_pairs(table["exact_key"], max_pairs)
    exact = pd.DataFrame({"a": np.minimum(ea, eb), "b": np.maximum(ea, eb), "distance": 0})
    complete = complete and len(exact) < max_pairs
    exact["kind"] = "exact"
    near["kind"] = "near"
    pairs = pd.concat([exact, near], ignore_index=True).drop_duplicates(["a", "b"], keep="first")
    pairs = pairs.reset_index(drop=True)
    t = table
    for side in ("a", "b"):
        pos = pairs[side].to_numpy()
        pairs[f"id_{side}"] = t["id"].to_numpy()[pos]
        pairs[f"label_{side}"] = t["label"].to_numpy()[pos]
        pairs[f"fold_{side}"] = t["fold"].to_numpy()[pos]
    # "near" pairs whose pixels turned out identical are exact
    if len(pairs):
        ka, kb = t["exact_key"].to_numpy()[pairs["a"]], t["exact_key"].to_numpy()[pairs["b"]]
        same = pd.notna(ka) & (ka == kb)
        pairs.loc[same, "kind"] = "exact"
    pairs["same_label"] = pairs["label_a"].astype(str) == pairs["label_b"].astype(str)
    fa, fb = pd.to_numeric(pairs["fold_a"]), pd.to_numeric(pairs["fold_b"])
    pairs["cross_fold"] = fa.notna() & fb.notna() & (fa != fb)
    order = pairs["kind"].map({"exact": 0, "near": 1})
    pairs = pairs.assign(_o=order).sort_values(["_o", "distance", "a", "b"], kind="stable").drop(columns="_o")
    return pairs.reset_index(drop=True), complete


# ---------------------------------------------------------------- figures


def _bar_counts(counts: pd.Series, path: Path, title: str) -> Path:
    plt = pyplot()
    n = len(counts)
    fig, ax = plt.subplots(figsize=(8, max(2.5, 0.25 * min(n, 60) + 1)))
    shown = counts.iloc[:60]
    ax.barh(range(len(shown)), shown.to_numpy(), color="#4c72b0")
    ax.set_yticks(range(len(shown)), [str(c)[:30] for c in shown.index], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("images")
    ax.set_title(title + ("" if n <= 60 else f" (largest 60 of {n})"))
    return save_figure(fig, path)


def _fold_figure(ct: pd.DataFrame, path: Path) -> Path:
    plt = pyplot()
    share = ct.div(ct.sum(axis=0), axis=1)  # per fold, each class's share
    fig, ax = plt.subplots(figsize=(8, 3.5))
    bottom = np.zeros(share.shape[1])
    cmap = plt.get_cmap("tab20")
    for k, (cls, row) in enumerate(share.iterrows()):
        ax.bar([str(c) for c in share.columns], row.to_numpy(), bottom=bottom, color=cmap(k % 20),
               label=str(cls)[:20] if k < 20 else None)
        bottom += row.to_numpy()
    ax.set_xlabel("fold")
    ax.set_ylabel("class share")
    ax.set_title("class share per fold (bars alike = stratified)")
    if len(share) <= 20:
        ax.legend(fontsize=7, bbox_to_anchor=(1.01, 1), loc="upper left")
    return save_figure(fig, path)


def _size_figures(sizes: pd.DataFrame, out: Path) -> list[Path]:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 5))
    for split, grp in sizes.groupby("split"):
        g = grp.sample(min(len(grp), 20000), random_state=0) if len(grp) > 20000 else grp
        ax.scatter(g["width"], g["height"], s=6, alpha=0.3, label=f"{split} ({len(grp):,})")
    ax.set_xlabel("width (px)")
    ax.set_ylabel("height (px)")
    ax.set_title("image sizes")
    ax.legend()
    p1 = save_figure(fig, out / "image_sizes.png")
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for split, grp in sizes.groupby("split"):
        ar = np.log2((grp["width"] / grp["height"]).to_numpy(dtype=float))
        ax.hist(ar, bins=40, alpha=0.6, label=split)
    ticks = [-2, -1, 0, 1, 2]
    ax.set_xticks(ticks, ["1:4", "1:2", "1:1", "2:1", "4:1"])
    ax.set_xlabel("aspect ratio (width:height, log scale)")
    ax.set_ylabel("images")
    ax.legend()
    p2 = save_figure(fig, out / "aspect_ratios.png")
    return [p1, p2]


def _pixel_figure(hist: np.ndarray, path: Path) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 3.5))
    x = np.arange(256)
    for c, (name, color) in enumerate(zip("RGB", ("#d62728", "#2ca02c", "#1f77b4"))):
        h = hist[c] / max(1, hist[c].sum())
        ax.plot(x, h, color=color, label=name)
    ax.set_yscale("log")
    ax.set_xlabel("pixel value")
    ax.set_ylabel("share of pixels (log)")
    ax.set_title("per-channel pixel histograms")
    ax.legend()
    return save_figure(fig, path)


def _brightness_figure(t: pd.DataFrame, path: Path) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    ok = t[t["brightness"].notna()]
    out = ok["outlier"]
    ax.scatter(ok.loc[~out, "brightness"], ok.loc[~out, "contrast"], s=5, alpha=0.3, label="images")
    ax.scatter(ok.loc[out, "brightness"], ok.loc[out, "contrast"], s=12, color="#d62728", label="outliers")
    ax.set_xlabel("brightness (mean gray, 0-255)")
    ax.set_ylabel("contrast (gray std)")
    ax.legend()
    return save_figure(fig, path)


# ---------------------------------------------------------------- the report


def _robust_z(x: pd.Series) -> pd.Series:
    med = x.median()
    mad = (x - med).abs().median() * 1.4826
    return (x - med) / (mad if mad > 0 else (x.std() or 1.0))


@dataclass
class _Scanned:
    """The train table after the scan (train rows, their fold, one scan record each) and how much was read."""

    t: pd.DataFrame
    hist: np.ndarray  # summed per-channel pixel histograms (3, 256) of the full-resolution sample
    n_hashed: int
    n_pix: int
    sampled_hash: bool
    sampled_pix: bool
    exact_def: str  # what "exact duplicate" means on this page

    @property
    def n(self) -> int:
        return len(self.t)


@dataclass
class _Page:
    """Where a section goes: the page, the folder it is staged in, its thumbnails, and the config."""

    cfg: Config
    rep: Report
    tmp: Path
    thumbs: Path


@dataclass
class _Found:
    """What the sections found that the overview, summary.json and the last message repeat."""

    classes: list
    counts: pd.Series
    ratio: float
    n_test: int
    n_bad: int
    pairs: pd.DataFrame
    has_folds: bool
    mean: list | None
    std: list | None


def run_eda(
    cfg: Config,
    out: str | Path = "reports/eda",
    echo: Callable[[str], None] = print,
    max_images: int | None = None,
    near_threshold: int = NEAR_THRESHOLD,
    pixel_sample: int = PIXEL_SAMPLE,
    workers: int | None = None,
    progress: bool = True,
    seed: int = 0,
) -> Path:
    """Write the data report to ``out/index.html`` (PNGs, thumbs/, check.csv, images.csv, duplicates.csv beside it).

    max_images: hash and measure brightness of at most this many train images (a random sample; headers are
    still read for all). pixel_sample: images read at full resolution for channel statistics. Problem images
    are reported, never fatal. Returns the path of index.html.
    """
    t0 = time.time()
    out = Path(out)
    rng = np.random.default_rng(seed)
    train = load_train(cfg).reset_index(drop=True)
    n = len(train)
    sep = cfg.data.label_sep if cfg.data.task == "multilabel" else None
    classes = label_classes(train["label"], sep) if sep is not None else class_names(train["label"])
    echo(f"eda: {n:,} train rows, {len(classes)} classes -> {out}")

    with report_dir(out) as tmp:
        thumbs = tmp / "thumbs"
        thumbs.mkdir()
        check = run_check(cfg, out_dir=tmp, workers=workers, echo=lambda s: echo(s.replace(str(tmp), str(out))),
                          progress=progress)
        have_folds_file, fold_note = _attach_folds(cfg, train)
        s = _scan_train(cfg, train, check.digests, rng, max_images, pixel_sample, workers, progress)
        test_sizes = _scan_test(cfg, workers, progress, echo)

        rep = Report("comp eda", f"{cfg.root} — {n:,} train rows, {len(classes)} classes")
        page = _Page(cfg, rep, tmp, thumbs)
        ov = rep.section("Overview", "overview")
        if sep is not None:
            counts, ratio, _ = label_sections(rep, tmp, s.t, classes, sep, _bar_counts, fold_note)
        else:
            counts, ratio = _class_counts_section(page, s.t, have_folds_file, fold_note)
        _sizes_sections(page, s.t, test_sizes)
        mean, std = _pixels_section(page, s)
        _brightness_section(page, s)
        _samples_section(page, s.t, counts, classes, rng, sep)
        pairs, has_folds = _duplicates_section(page, s, near_threshold)
        _problems_section(page, check)

        found = _Found(classes, counts, ratio, len(test_sizes), len(check.problems), pairs, has_folds, mean, std)
        secs = time.time() - t0
        _overview(ov, s, found, near_threshold, secs)
        _write_tables(page, s, found, near_threshold, secs)
        rep.write(tmp)
    echo(f"eda: {n:,} images, {found.n_bad:,} problem rows, {int((pairs['kind'] == 'exact').sum()):,} exact and "
         f"{int((pairs['kind'] == 'near').sum()):,} near duplicate pairs, "
         f"{int((~pairs['same_label']).sum()):,} label conflicts ({time.time() - t0:.1f} s)")
    echo(f"wrote {out / 'index.html'}")
    return out / "index.html"


def _attach_folds(cfg: Config, train: pd.DataFrame) -> tuple[bool, str]:
    """Add the ``fold`` column from ``folds/folds.csv`` (NaN without one): (a folds file exists, note for the page)."""
    fold_note = ""
    try:
        folds = read_folds(cfg)
        train["fold"] = train["id"].map(dict(zip(folds["id"], folds["fold"])))
        missing = int(train["fold"].isna().sum())
        if missing:
            fold_note = (f"{missing:,} train rows have no fold in {cfg.folds.file} (left out by "
                         "`comp folds --skip-bad`, or the folds file is older than train.csv)")
    except DataError:
        folds = None
        train["fold"] = np.nan
        fold_note = "no folds file yet: run `comp folds` to see class counts per fold and leakage across folds"
    return folds is not None, fold_note


def _scan_train(cfg: Config, train: pd.DataFrame, digests: dict | None, rng: np.random.Generator,
                max_images: int | None, pixel_sample: int, workers: int | None, progress: bool) -> _Scanned:
    """Headers of all train images; hashes of all or ``max_images``; full-resolution pixels of a sample."""
    n = len(train)
    levels = np.zeros(n, np.int8)
    healthy = np.flatnonzero(train["path"].notna().to_numpy())
    hashed = healthy if max_images is None or max_images >= len(healthy) else np.sort(
        rng.choice(healthy, max_images, replace=False))
    levels[hashed] = 1
    pix = hashed if len(hashed) <= pixel_sample else rng.choice(hashed, pixel_sample, replace=False)
    levels[pix] = 2
    scan, hist = scan_images(train["path"].tolist(), levels.tolist(), cfg.data.max_pixels, workers, progress,
                             desc="eda train")
    t = pd.concat([train, scan], axis=1)
    t["split"] = "train"
    n_hashed = int(t["phash"].notna().sum())
    n_pix = int(((levels == 2) & t["problem"].isna().to_numpy()).sum())
    sampled_hash, sampled_pix = len(hashed) < len(healthy), len(pix) < len(hashed)
    if digests:
        t["exact_key"] = t["path"].map(lambda p: digests.get(p))
        exact_def = "identical decoded pixels"
    else:
        t["exact_key"] = [_file_sha1(p) if p and r is None else None for p, r in zip(t["path"], t["problem"])]
        exact_def = "identical file bytes"
    return _Scanned(t, hist, n_hashed, n_pix, sampled_hash, sampled_pix, exact_def)


def _class_counts_section(page: _Page, t: pd.DataFrame, have_folds_file: bool,
                          fold_note: str) -> tuple[pd.Series, float]:
    """Images per class (and per fold): (counts, largest first; largest/smallest ratio)."""
    n = len(t)
    counts = t["label"].astype(str).value_counts()
    counts = counts.reindex(sorted(counts.index, key=lambda c: (-counts[c], c)))
    sec = page.rep.section("Class counts", "class-counts")
    _bar_counts(counts, page.tmp / "class_counts.png", "images per class")
    sec.image("class_counts.png", "images per class")
    sec.table(pd.DataFrame({"class": counts.index, "images": counts.to_numpy(),
                            "share": (counts / max(1, n)).round(4).to_numpy()}))
    ratio = counts.iloc[0] / max(1, counts.iloc[-1])
    if ratio >= 3:
        sec.note(f"imbalanced: the largest class has {ratio:.1f}x the images of the smallest; macro F1 weighs "
                 "every class equally, consider train.sampler: balanced or train.class_weights")
    if have_folds_file and t["fold"].notna().any():
        ct = pd.crosstab(t["label"].astype(str), t["fold"].astype("Int64"))
        ct = ct.reindex(counts.index)
        _fold_figure(ct, page.tmp / "class_counts_by_fold.png")
        sec.p("Class counts per fold:")
        sec.image("class_counts_by_fold.png", "class share per fold")
        sec.table(ct.reset_index().rename(columns={"label": "class"}).rename(columns=str))
    if fold_note:
        sec.note(fold_note)
    return counts, ratio


def _sizes_sections(page: _Page, t: pd.DataFrame, test_sizes: pd.DataFrame) -> None:
    """Image sizes and aspect ratios; file formats and colour modes (train and test, from the headers)."""
    sizes = pd.concat([t[["split", "width", "height", "format", "mode", "bytes", "path"]], test_sizes],
                      ignore_index=True)
    read = sizes[sizes["width"].notna()].copy()
    read[["width", "height"]] = read[["width", "height"]].astype(int)
    sec = page.rep.section("Image sizes and aspect ratios", "sizes")
    sec.p("From every file's header (no pixels decoded). Sizes are as stored, before EXIF rotation.")
    if len(read):
        _size_figures(read, page.tmp)
        sec.image("image_sizes.png", "image sizes")
        sec.image("aspect_ratios.png", "aspect ratios")
        common = (read.assign(size=read["width"].astype(str) + "x" + read["height"].astype(str))
                  .groupby(["split", "size"]).size().rename("images").reset_index()
                  .sort_values(["split", "images"], ascending=[False, False]).groupby("split").head(10))
        sec.table(common, caption="most common sizes")
        desc = read.groupby("split")[["width", "height"]].describe(percentiles=[0.05, 0.5, 0.95]).round(1)
        desc.columns = [f"{a} {b}" for a, b in desc.columns]
        for c in [c for c in desc.columns if c.endswith(" count")]:
            desc[c] = desc[c].astype(int)
        sec.table(desc.reset_index())
    sec = page.rep.section("File formats and colour modes", "formats")
    if len(read):
        ext = read["path"].map(lambda p: Path(p).suffix.lower().lstrip(".") if p else "")
        fm = (read.assign(extension=ext).groupby(["split", "format", "mode", "extension"]).size()
              .rename("images").reset_index().sort_values(["split", "images"], ascending=[False, False]))
        sec.table(fm)
        mism = read[[_ext_mismatch(e, f) for e, f in zip(ext, read["format"])]]
        if len(mism):
            sec.note(f"{len(mism):,} files have an extension that does not match their format "
                     "(harmless for comp, which reads the header, but some tools trust the extension)")
        modes = set(read["mode"])
        if modes - {"RGB"}:
            sec.p("Every mode is converted to 8-bit RGB by comp (transparency on white, 16-bit scaled, "
                  "EXIF rotation applied): " + ", ".join(sorted(modes)))


def _pixels_section(page: _Page, s: _Scanned) -> tuple[list | None, list | None]:
    """Per-channel histograms and the mean/std to put in comp.yaml: (mean, std), None when nothing was read."""
    sec = page.rep.section("Pixel statistics (normalisation)", "pixels")
    hist = s.hist
    npix = hist[0].sum()
    mean = std = None
    if npix:
        v = np.arange(256) / 255.0
        mean = [(hist[c] * v).sum() / npix for c in range(3)]
        std = [float(np.sqrt(max(0.0, (hist[c] * v * v).sum() / npix - mean[c] ** 2))) for c in range(3)]
        _pixel_figure(hist, page.tmp / "pixel_histograms.png")
        sec.note(f"computed on a random sample of {s.n_pix:,} of {s.n:,} train images at full resolution "
                 f"({npix:,} pixels per channel)" if s.sampled_pix or s.sampled_hash else
                 f"computed on all {s.n_pix:,} readable train images at full resolution")
        sec.image("pixel_histograms.png", "per-channel pixel histograms")
        sec.table([{"channel": ch, "mean": mean[c], "std": std[c]} for c, ch in enumerate("RGB")])
        sec.p("To normalise with these instead of the model's pretrained statistics (usually better only "
              "when training from scratch), put in comp.yaml:")
        sec.code(f"input:\n  mean: [{', '.join(f'{m:.4f}' for m in mean)}]\n"
                 f"  std: [{', '.join(f'{x:.4f}' for x in std)}]")
    else:
        sec.note("no image could be read", "bad")
    return mean, std


def _brightness_section(page: _Page, s: _Scanned) -> None:
    """Brightness/contrast scatter and the extremes; adds the ``outlier`` column to the train table."""
    t, thumbs = s.t, page.thumbs
    sec = page.rep.section("Brightness and contrast outliers", "brightness")
    b = t["brightness"]
    t["outlier"] = False
    if b.notna().any():
        z = pd.concat([_robust_z(b).abs(), _robust_z(t["contrast"]).abs()], axis=1).max(axis=1)
        t["outlier"] = (z > 4).fillna(False)
        _brightness_figure(t, page.tmp / "brightness_contrast.png")
        if s.sampled_hash:
            sec.note(f"measured on a random sample of {s.n_hashed:,} of {s.n:,} train images (max_images)")
        sec.p("Brightness is the mean gray level, contrast its standard deviation (0-255). Outliers are more "
              f"than 4 robust standard deviations from the median: {int(t['outlier'].sum()):,} images.")
        sec.image("brightness_contrast.png", "brightness vs contrast")
        ok = t[b.notna()]
        for title, col, asc in (("darkest", "brightness", True), ("brightest", "brightness", False),
                                ("lowest contrast", "contrast", True), ("highest contrast", "contrast", False)):
            picks = ok.sort_values(col, ascending=asc, kind="stable").head(EXTREMES)
            sec.gallery([Img(_thumb(t, i, thumbs), f"{title} {t.at[i, 'id']}",
                             f"{t.at[i, 'id']}\n{t.at[i, 'label']}\n{col} {t.at[i, col]:.1f}")
                         for i in picks.index], label=title)


def _samples_section(page: _Page, t: pd.DataFrame, counts: pd.Series, classes: list,
                     rng: np.random.Generator, sep: str | None = None) -> None:
    """A few random readable images of each (of the largest) classes, in class order (multi-label, ``sep``:
    images that hold the label)."""
    sec = page.rep.section("Samples per class", "samples")
    good = t[t["problem"].isna()]
    shown_classes = list(counts.index[:MAX_CLASSES_SHOWN])
    if len(counts) > MAX_CLASSES_SHOWN:
        sec.note(f"showing the {MAX_CLASSES_SHOWN} largest of {len(counts)} classes")
    for cls in sorted(shown_classes, key=lambda c: classes.index(c)):
        has = (good["label"].astype(str).map(lambda v, c=cls: c in split_labels(v, sep)) if sep is not None
               else good["label"].astype(str) == cls)
        idx = good.index[has.to_numpy(bool)].to_numpy()
        pick = idx if len(idx) <= SAMPLES_PER_CLASS else np.sort(rng.choice(idx, SAMPLES_PER_CLASS, replace=False))
        sec.gallery([Img(_thumb(t, i, page.thumbs), f"{cls} {t.at[i, 'id']}", str(t.at[i, "id"])) for i in pick],
                    label=f"{cls} ({counts[cls]:,})")


def _duplicates_section(page: _Page, s: _Scanned, near_threshold: int) -> tuple[pd.DataFrame, bool]:
    """Exact and near duplicates (writes duplicates.csv), then one table per kind: (pairs, the rows have folds)."""
    t = s.t
    sec = page.rep.section("Duplicates and leakage", "duplicates")
    pairs, complete = find_duplicates(t, near_threshold)
    write_csv(page.tmp / "duplicates.csv", pairs.drop(columns=["a", "b"]).rename(
        columns={"id_a": f"{page.cfg.data.id_col}_a", "id_b": f"{page.cfg.data.id_col}_b"}))
    has_folds = t["fold"].notna().any()
    sec.p(f"Exact duplicates: {s.exact_def}. Near duplicates: perceptual hashes (imagehash.phash, 64 bits) "
          f"differing in at most {near_threshold} bits, computed on "
          + (f"all {s.n_hashed:,} readable train images." if not s.sampled_hash
             else f"a random sample of {s.n_hashed:,} train images (max_images); pairs outside it are not seen."))
    if not complete:
        sec.note(f"more than {MAX_PAIRS:,} pairs: counting stopped there (many identical images?)", "bad")
    med_side = float(np.nanmedian(np.minimum(t["width"], t["height"]))) if t["width"].notna().any() else 0
    if med_side and med_side < 64:
        sec.note(f"images are small (median side {med_side:.0f} px): perceptual hashes of tiny images are "
                 "coarse, so some near pairs are look-alikes rather than copies; check the thumbnails")
    rows = []
    for kind in ("exact", "near"):
        p = pairs[pairs["kind"] == kind]
        rows.append({"kind": kind, "pairs": len(p), "same class": int(p["same_label"].sum()),
                     "label conflicts (different classes)": int((~p["same_label"]).sum()),
                     "across folds (leakage)": int(p["cross_fold"].sum()) if has_folds else None,
                     "images involved": len(set(p["a"]) | set(p["b"]))})
    sec.table(rows)
    sec.link("duplicates.csv", "all pairs: duplicates.csv")
    _duplicate_tables(page, t, pairs, has_folds)
    return pairs, has_folds


def _duplicate_tables(page: _Page, t: pd.DataFrame, pairs: pd.DataFrame, has_folds: bool) -> None:
    """Label conflicts, pairs across folds and pairs within a class, each a section with thumbnails."""
    for title, sel, msg in (
        ("Label conflicts: same image, different classes", ~pairs["same_label"],
         "one of each pair is probably mislabelled, or the classes overlap"),
        ("Across folds: leakage that inflates CV", pairs["cross_fold"],
         ("the same image is trained on in one fold and scored in another; group them (data.group_col) "
          "or drop one")),
        ("Within a class", pairs["same_label"], "copies add weight to one image; usually drop one"),
    ):
        p = pairs[sel]
        sub = page.rep.section(title, "dup-" + title.split(":")[0].lower().replace(" ", "-"))
        if title.startswith("Across") and not has_folds:
            sub.note("no folds file yet: run `comp folds`, then `comp eda` again")
            continue
        if p.empty:
            sub.note("none found", "ok")
            continue
        sub.note(f"{len(p):,} pairs — {msg}", "bad" if not title.startswith("Within") else "note")
        sub.table([_pair_row(t, r, page.thumbs) for r in p.head(SHOW_PAIRS).itertuples(index=False)])
        if len(p) > SHOW_PAIRS:
            sub.p(f"showing {SHOW_PAIRS} of {len(p):,}; all are in duplicates.csv")


def _problems_section(page: _Page, check: CheckReport) -> None:
    """What ``comp check`` found (its check.csv is already in the folder)."""
    sec = page.rep.section("Problems found by comp check", "problems")
    probs = check.problems
    if probs.empty:
        sec.note(f"no problems in {check.n_rows:,} rows and {check.n_images:,} images", "ok")
    else:
        sec.note(f"{len(probs):,} problem rows: fix them, or train with --skip-bad to leave them out", "bad")
        sec.table([{"problem": k, "rows": v, "meaning": PROBLEMS.get(k, "")} for k, v in check.summary.items()])
        sec.table(probs.rename(columns={"id": page.cfg.data.id_col}), max_rows=200)
    sec.link("check.csv", "all problems: check.csv")


def _overview(ov: Section, s: _Scanned, f: _Found, near_threshold: int, secs: float) -> None:
    """The overview table at the top of the page (filled last: it repeats what the sections found)."""
    pairs, mean, std = f.pairs, f.mean, f.std
    ov.table([
        {"what": "train rows", "value": f"{s.n:,}"},
        {"what": "classes", "value": f"{len(f.classes):,} (largest/smallest {f.ratio:.1f}x)"},
        {"what": "test images", "value": f"{f.n_test:,}" if f.n_test else "not found"},
        {"what": "problem rows (comp check)", "value": f"{f.n_bad:,}"},
        {"what": "exact duplicate pairs", "value": f"{int((pairs['kind'] == 'exact').sum()):,}"},
        {"what": f"near duplicate pairs (phash <= {near_threshold} bits)",
         "value": f"{int((pairs['kind'] == 'near').sum()):,}"},
        {"what": "label conflicts (duplicates across classes)", "value": f"{int((~pairs['same_label']).sum()):,}"},
        {"what": "duplicates across folds", "value": f"{int(pairs['cross_fold'].sum()):,}" if f.has_folds else
         "no folds yet"},
        {"what": "pixel mean / std (RGB, 0-1)", "value": (
            f"{[round(float(m), 3) for m in mean]} / {[round(float(x), 3) for x in std]}" if mean else "n/a")},
        {"what": "read", "value": f"headers of all files; hashes of {s.n_hashed:,}; full pixels of {s.n_pix:,}"},
        {"what": "time", "value": f"{secs:.1f} s"},
    ])
    if f.n_bad:
        ov.note(f"{f.n_bad:,} problem rows: see Problems below", "bad")


def _write_tables(page: _Page, s: _Scanned, f: _Found, near_threshold: int, secs: float) -> None:
    """summary.json (the overview's numbers) and images.csv (one row per train image, with its scan)."""
    pairs, t = f.pairs, s.t
    summary = {
        "train_rows": s.n, "classes": len(f.classes), "class_counts": {str(k): int(v) for k, v in f.counts.items()},
        "problem_rows": f.n_bad, "hashed_images": s.n_hashed, "pixel_sample": s.n_pix,
        "pixel_mean": [float(m) for m in f.mean] if f.mean else None,
        "pixel_std": [float(x) for x in f.std] if f.std else None,
        "exact_pairs": int((pairs["kind"] == "exact").sum()), "near_pairs": int((pairs["kind"] == "near").sum()),
        "label_conflicts": int((~pairs["same_label"]).sum()),
        "cross_fold_pairs": int(pairs["cross_fold"].sum()) if f.has_folds else None,
        "outliers": int(t["outlier"].sum()), "near_threshold": near_threshold, "seconds": round(secs, 2),
    }
    write_text(page.tmp / "summary.json", json.dumps(summary, indent=2, ensure_ascii=False))
    imgs = t.drop(columns=["path", "exact_key"]).assign(
        phash=t["phash"].map(lambda h: f"{int(h):016x}" if pd.notna(h) else ""))
    write_csv(page.tmp / "images.csv", imgs.rename(columns={"id": page.cfg.data.id_col}))


def _file_sha1(path: str) -> str | None:
    try:
        return hashlib.sha1(Path(path).read_bytes()).hexdigest()
    except OSError:
        return None


_EXT_FORMAT = {"jpg": "JPEG", "jpeg": "JPEG", "png": "PNG", "bmp": "BMP", "gif": "GIF", "tif": "TIFF",
               "tiff": "TIFF", "webp": "WEBP"}


def _ext_mismatch(ext: str, fmt) -> bool:
    want = _EXT_FORMAT.get(ext)
    return want is not None and isinstance(fmt, str) and fmt != want and fmt != "MPO"


def _scan_test(cfg: Config, workers, progress, echo) -> pd.DataFrame:
    """Header-only scan of the test images (sizes, formats) for the train/test comparison."""
    cols = ["split", "width", "height", "format", "mode", "bytes", "path"]
    if not cfg.data.test_dir:
        return pd.DataFrame(columns=cols)
    try:
        test = load_test(cfg)
    except Exception as e:  # noqa: BLE001 - the report goes on without test images
        echo(f"eda: test images skipped ({e})")
        return pd.DataFrame(columns=cols)
    paths = test["path"].tolist()
    scan, _ = scan_images(paths, [0] * len(paths), cfg.data.max_pixels, workers, progress, desc="eda test")
    scan["split"] = "test"
    scan["path"] = paths
    return scan[cols]


def _thumb(t: pd.DataFrame, i: int, folder: Path) -> str:
    return thumb_src(t.at[i, "path"], i, folder)


def _pair_row(t: pd.DataFrame, r, thumbs: Path) -> dict:
    def fold(v):
        return "" if pd.isna(v) else int(v)

    return {"image A": Img(_thumb(t, r.a, thumbs), f"A {r.id_a}"), "id A": r.id_a, "class A": r.label_a,
            "fold A": fold(r.fold_a), "image B": Img(_thumb(t, r.b, thumbs), f"B {r.id_b}"), "id B": r.id_b,
            "class B": r.label_b, "fold B": fold(r.fold_b), "kind": r.kind, "phash distance": int(r.distance)}
