"""``comp synth --exp E``: per-fold class-conditional generators and the images they make, fold-safe.

Fold k's generator trains on fold k's training rows only (the rows of the other folds), so nothing it makes can
carry a fold-k validation image into fold k's training; ``data.synthetic: E`` then adds fold k's images to fold k's
training rows only (comp.techniques.plugins.SynthSource). Validation rows and the OOF never see one.

Writes ``folds/synth/E/``:

    summary.json                 folds digest, classes, options, per fold: counts per class and the cost
    fold_k/generator.safetensors the fold's generator (generator.json: spec, steps, cost)
    fold_k/state/                while training: model + optimizer (safetensors) and progress, for --resume
    fold_k/images.csv            id, class, seed, step (the generator step that made it); written last
    fold_k/<id>.png              the images, at the generator's size (min(input.size, 64))

How many per class: ``per_class`` N of each class; ``fill_to`` F tops each class of the fold's training rows up to F
(none for classes already there); neither: fill to the median class count. ``classes`` limits it to some classes.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from comp.config import Config, ConfigError, resolve
from comp.console import progress_bar
from comp.data.cache import load_images
from comp.data.competition import DataError, read_csv_str
from comp.errors import OutputExists
from comp.files import write_csv, write_text
from comp.techniques import synth_models
from comp.techniques.generator import GenSpec, gen_size, save_generator
from comp.techniques.pseudo import folds_digest
from comp.train.defaults import fit_defaults
from comp.train.rows import load_table

SYNTH_DIR = Path("folds") / "synth"


@dataclass
class SynthOptions:
    """What ``comp synth`` makes (recorded in summary.json; --resume must ask for the same)."""

    per_class: int | None = None
    fill_to: int | None = None
    classes: list[str] | None = None
    kind: str = "gan"  # gan (comp.techniques.gan) or diffusion (comp.techniques.generator)
    steps: int = 0  # generator training steps per fold; 0 = by kind (STEPS)
    batch_size: int = 64
    lr: float = 0.0  # 0 = by kind (synth_models.DEFAULT_LR)
    channels: list[int] = field(default_factory=list)  # widths; [] = by size and kind (generator.default_channels)
    max_size: int = 64  # the generator's side is min(input.size, max_size)
    sample_steps: int = 20  # DDIM steps per image (diffusion)
    guidance: float = 1.0  # classifier-free guidance scale (diffusion; 1: none, one forward per step)
    seed: int = 0
    max_minutes: float = 10.0  # stop a fold's generator training after this long (0: no limit); steps reached kept


def parse_ints(text: str | None, where: str) -> list[int]:
    """"32,64,64" -> [32, 64, 64] ([] for None), or a ConfigError naming ``where``."""
    if not text:
        return []
    try:
        out = [int(v) for v in text.split(",")]
    except ValueError:
        raise ConfigError(f"{where} {text!r}: expected comma-separated integers, e.g. 32,64,64") from None
    if any(v < 8 or v % 8 for v in out):
        raise ConfigError(f"{where} {text!r}: widths must be multiples of 8 (the UNet normalises in groups of 8)")
    return out


STEPS = {"gan": 3000, "diffusion": 1000}


def check_options(opts: SynthOptions) -> None:
    """Refuses bad options (naming the flag) and fills the by-kind defaults (steps, lr)."""
    if opts.kind not in synth_models.KINDS:
        raise ConfigError(f"--kind {opts.kind!r}: expected one of {', '.join(synth_models.KINDS)}")
    opts.steps = opts.steps or STEPS[opts.kind]
    opts.lr = opts.lr or synth_models.DEFAULT_LR[opts.kind]
    for name in ("steps", "batch_size", "sample_steps", "max_size"):
        if getattr(opts, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} {getattr(opts, name)}: expected a positive integer")
    for name in ("per_class", "fill_to"):
        v = getattr(opts, name)
        if v is not None and v < 0:
            raise ConfigError(f"--{name.replace('_', '-')} {v}: expected a count >= 0")
    if opts.max_minutes < 0:
        raise ConfigError(f"--max-minutes {opts.max_minutes}: expected minutes >= 0 (0: no limit)")
    if opts.lr <= 0 or opts.guidance < 0:
        raise ConfigError(f"--lr {opts.lr} / --guidance {opts.guidance}: expected a positive lr and guidance >= 0")


def synth_dir(cfg: Config, exp: str) -> Path:
    """folds/synth/EXP beside the folds file's folder (relative to the config file, as folds.file is)."""
    return resolve(cfg, str(SYNTH_DIR / exp))


def check_amount(opts: SynthOptions) -> None:
    if opts.per_class is not None and opts.fill_to is not None:
        raise ConfigError("choose one of --per-class N (N images of each class) or --fill-to F (top each class up "
                          "to F training images)")


def wanted(counts: np.ndarray, classes: list[str], opts: SynthOptions) -> np.ndarray:
    """Images to make per class, from the fold's training counts per class (by default: each class topped up to
    the median class count)."""
    check_amount(opts)
    chosen = np.ones(len(classes), bool)
    if opts.classes:
        unknown = [c for c in opts.classes if c not in classes]
        if unknown:
            raise ConfigError(f"--classes: {unknown[0]!r} is not a class of this competition ({', '.join(classes)})")
        chosen = np.isin(classes, opts.classes)
    if opts.per_class is not None:
        n = np.full(len(classes), opts.per_class)
    else:
        target = opts.fill_to if opts.fill_to is not None else int(np.median(counts))
        n = np.maximum(0, target - counts)
    return np.where(chosen, n, 0).astype(int)


def image_seed(seed: int, fold: int, cls: int, i: int) -> int:
    h = hashlib.sha256(f"{seed}|{fold}|{cls}|{i}".encode()).digest()
    return int.from_bytes(h[:4], "little")


def check_folder(cfg: Config, out: Path, opts: SynthOptions, classes: list[str], overwrite: bool,
                 resume: bool) -> dict:
    """The summary to (re)write; refuses an existing folder unless resumed with the same folds and options."""
    digest = folds_digest(cfg)
    summary = {"exp": cfg.exp, "folds_digest": digest, "classes": classes, "input_size": cfg.input.size,
               "options": asdict(opts), "folds": {}}
    if out.exists() and overwrite:
        shutil.rmtree(out)
    elif out.exists():
        path = out / "summary.json"
        old = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
        same = all(old.get(k) == summary[k] for k in ("folds_digest", "classes", "input_size", "options"))
        if not resume and not same:  # the same command again continues it (its finished folds are kept)
            raise OutputExists(f"{out} already exists, made with other folds or options; pass --resume to "
                               f"continue it or --overwrite to make it again")
        if old.get("folds_digest") != digest:
            raise DataError(f"{out} was made for another folds file than {cfg.folds.file} (digest "
                            f"{old.get('folds_digest')!r}, now {digest!r}): its generators saw other folds' rows "
                            f"and are not fold-safe; pass --overwrite to make it again")
        if old.get("options") != summary["options"] or old.get("classes") != classes:
            raise ConfigError(f"{out} was made with other options ({old.get('options')}); --resume needs the same "
                              f"ones, or pass --overwrite")
        summary["folds"] = old.get("folds", {})
    return summary


def make_synth(cfg: Config, opts: SynthOptions, folds: list[int] | None = None, overwrite: bool = False,
               resume: bool = False, echo: Callable[[str], None] = print, progress: bool = True) -> Path:
    """Train fold k's generator on the rows of the other folds and write its images, for each fold."""
    import torch

    if resume and overwrite:
        raise ConfigError("--resume continues folds/synth/E and --overwrite discards it: pass one of them")
    check_options(opts)
    check_amount(opts)
    table, classes = load_table(cfg, skip_bad=False, echo=echo)
    if cfg.input.size is None:  # fitted from the image headers (or runs/E/config.yaml), as training does
        fit_defaults(cfg, lambda: table["path"].tolist(), len(classes), echo=echo, probe=False)
    out = synth_dir(cfg, cfg.exp)
    summary = check_folder(cfg, out, opts, classes, overwrite, resume)
    all_folds = sorted(table["fold"].unique().tolist())
    bad = [k for k in (folds or []) if k not in all_folds]
    if bad:
        raise ConfigError(f"--fold {bad[0]}: {cfg.folds.file} has folds {all_folds}")
    if all((out / f"fold_{k}" / "images.csv").exists() for k in folds or all_folds):
        echo(f"{out}: every fold's images already made with these folds and options; nothing to do (pass "
             f"--overwrite to make them again)")
        return out
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "summary.json", json.dumps(summary, indent=2, ensure_ascii=False))
    size = gen_size(cfg.input.size, opts.max_size)
    images = load_images(table["path"].tolist(), size, cfg.input.resize, cfg.data.max_pixels, cache="memory",
                         progress=progress, desc=f"decode {size}px")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    echo(f"synth {cfg.exp}: a class-conditional {opts.kind} generator per fold at {size} px ({len(classes)} classes, "
         f"{opts.steps} steps of {opts.batch_size}); images -> {out}/fold_k/")
    for k in folds or all_folds:
        summary["folds"][str(k)] = synth_fold(cfg, opts, table, classes, images, int(k), out / f"fold_{k}", echo,
                                              progress)
        write_text(out / "summary.json", json.dumps(summary, indent=2, ensure_ascii=False))
    echo(f"wrote {out}; train on it with data.synthetic: {cfg.exp} (e.g. comp train --exp NEW --set "
         f"data.synthetic={cfg.exp} --all-folds)")
    return out


def synth_fold(cfg: Config, opts: SynthOptions, table: pd.DataFrame, classes: list[str], images: np.ndarray,
               k: int, fd: Path, echo: Callable[[str], None], progress: bool) -> dict:
    """Fold k: train (or resume) its generator on the other folds' rows, then write its images and images.csv."""
    if (fd / "images.csv").exists():
        info = json.loads((fd / "fold.json").read_text(encoding="utf-8"))
        echo(f"fold {k}: done ({info['n_images']} images), skipped")
        return info
    fd.mkdir(parents=True, exist_ok=True)
    train = table[table["fold"] != k]
    y = train["y"].to_numpy()
    counts = np.bincount(y, minlength=len(classes))
    spec = GenSpec(size=images.shape[1], n_classes=len(classes), channels=list(opts.channels), kind=opts.kind)
    gen_path = fd / "generator.safetensors"
    if gen_path.exists():
        model, spec, meta = synth_models.load(gen_path)
        step, train_s = meta["step"], meta["train_seconds"]
    else:
        bar = progress_bar(total=opts.steps, desc=f"generator fold {k}", unit="step", enabled=progress)
        echo(f"fold {k}: training the generator on {len(train)} rows of folds "
             f"{sorted(set(train['fold']))} (never fold {k}'s)")
        model, info = synth_models.train(spec, images[train.index.to_numpy()], y, opts.steps, opts.batch_size, opts.lr,
                                      opts.seed + k, fd / "state", echo, bar, block=max(1, min(100, opts.steps)),
                                      max_seconds=opts.max_minutes * 60 or None)
        bar.close()
        n_params = sum(p.numel() for p in model.parameters())
        save_generator(gen_path, model, spec, info, {"fold": k, "params": n_params, "train_rows": len(train),
                                                     "folds_digest": folds_digest(cfg)})
        shutil.rmtree(fd / "state", ignore_errors=True)
        step, train_s = info.step, info.seconds
    n = wanted(counts, classes, opts)
    rows = [(c, i) for c in range(len(classes)) for i in range(n[c])]
    t0 = time.perf_counter()
    labels = np.array([c for c, _ in rows], np.int64)
    seeds = np.array([image_seed(opts.seed, k, c, i) for c, i in rows], np.int64)
    ids = [f"f{k}_c{c}_{i:05d}.png" for c, i in rows]
    bar = progress_bar(total=len(rows), desc=f"sample fold {k}", unit="img", enabled=progress)
    for lo in range(0, len(rows), 256):  # written as they come: a kill loses one block
        todo = [j for j in range(lo, min(lo + 256, len(rows))) if not (fd / ids[j]).exists()]
        if todo:
            imgs = synth_models.sample(model, spec, labels[todo], seeds[todo], opts.sample_steps, opts.guidance)
            for j, img in zip(todo, imgs):
                write_png(fd / ids[j], img)
        bar.update(min(lo + 256, len(rows)) - lo)
    bar.close()
    sample_s = time.perf_counter() - t0
    df = pd.DataFrame({"id": ids, "class": [classes[c] for c in labels], "seed": seeds, "step": step})
    info = {"n_images": len(rows), "per_class": {c: int(v) for c, v in zip(classes, n)},
            "train_rows": len(train), "train_seconds": round(train_s, 1), "sample_seconds": round(sample_s, 1),
            "steps": step}
    write_text(fd / "fold.json", json.dumps(info, indent=2, ensure_ascii=False))
    write_csv(fd / "images.csv", df)
    per = ", ".join(f"{c} {v}" for c, v in zip(classes, n) if v)
    echo(f"fold {k}: {len(rows)} images ({per or 'none'}); cost: generator {train_s:.0f} s for {step} steps, "
         f"sampling {sample_s:.0f} s ({len(rows) / max(sample_s, 1e-9):.1f} images/s)")
    return info


def write_png(path: Path, img: np.ndarray) -> None:
    from PIL import Image

    tmp = path.with_name(path.name + ".tmp")
    Image.fromarray(img).save(tmp, format="PNG")
    tmp.replace(path)


@dataclass
class Synthetic:
    """data.synthetic, read for training: per fold, its images (id, class, path)."""

    folder: Path
    folds: dict[int, pd.DataFrame]


def load_synthetic(cfg: Config, classes: list[str], folds: list[int]) -> Synthetic | None:
    """``data.synthetic``'s images of ``folds`` (None when unset), checked against the folds file and classes."""
    if not cfg.data.synthetic:
        return None
    name = cfg.data.synthetic
    folder = synth_dir(cfg, name)
    path = folder / "summary.json"
    if not path.exists():
        raise ConfigError(f"data.synthetic: {path} not found; make it with comp synth --exp {name}")
    info = json.loads(path.read_text(encoding="utf-8"))
    if info.get("folds_digest") != folds_digest(cfg):
        raise DataError(f"data.synthetic: {folder} was made for another folds file than {cfg.folds.file}; its "
                        f"generators saw other folds' rows and are not fold-safe. Re-run comp synth --exp {name} "
                        f"--overwrite")
    out = {}
    for k in folds:
        csv = folder / f"fold_{k}" / "images.csv"
        if not csv.exists():
            raise DataError(f"data.synthetic: {csv} not found: fold {k} has no generated images yet (fold {k} may "
                            f"only use its own generator's); run comp synth --exp {name} --resume")
        df = read_csv_str(csv)
        unknown = df[~df["class"].isin(classes)]
        if len(unknown):
            raise DataError(f"{csv} line {unknown.index[0] + 2}: class {unknown['class'].iloc[0]!r} is not a class "
                            f"of this competition; re-run comp synth --exp {name} --overwrite")
        df["path"] = [str(csv.parent / i) for i in df["id"]]
        missing = [p for p in df["path"] if not Path(p).exists()]
        if missing:
            raise DataError(f"{csv}: image {missing[0]} is missing; re-run comp synth --exp {name} --overwrite")
        df["id"] = f"fold_{k}/" + df["id"]  # the pool's key: each fold's images are its own
        out[k] = df[["id", "class", "path"]]
    return Synthetic(folder, out)
