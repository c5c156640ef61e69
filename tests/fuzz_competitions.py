"""A seeded generator of Kaggle-style competition folders, and the check that comp reads each one as it was meant
(issue 35). tests/test_fuzz.py runs a fixed-seed subset in CI; the long run is this file as a script:

    python tests/fuzz_competitions.py --n 200 [--first 0] [--out /tmp/fuzz]   (prints one line a folder, then totals)

Each folder varies, drawn from its seed:
    task/layout  single-label: a label column or one-hot columns (the sample: id,label or one probability column a
                 class); multi-label: space-separated names in a column, or 0/1 columns (a wide sample)
    label names  spaces inside ("Ankle boot", single-label only: spaces separate multi-label names), Unicode,
                 numeric strings with leading zeros ("007"), True/NA/None/null as names, case variants ("cat", "Cat"),
                 stray whitespace around some cells, a UTF-8 byte-order mark
    ids          with or without an extension, mixed extensions (png and jpg), ids that look like numbers ("0012")
    rows         a tiny class (1-2 rows) beside the others
    test folder  extra files the sample does not list, or a listed file missing

The outcome must be a submission in the sample's shape (its columns, its ids) with the task and class count the
generator meant, or a clear error (exit code 1 or 2, no traceback) that names a file, row, column or key. Never a
traceback, and never another task or class count.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

PLAIN = ["cat", "dog", "bird", "fish", "frog", "horse", "deer"]
SPACED = ["Ankle boot", "T-shirt top", "Sport shoe", "앵클 부츠", "Éclair au café", "sea  lion"]
UNICODE = ["猫", "犬", "Éclair", "ñandú", "Ωmega", "café"]
ZEROS = ["007", "010", "001", "0", "42"]
NULLS = ["True", "False", "NA", "None", "null", "nan", "N/A"]
CASES = [["cat", "Cat"], ["dog", "DOG"], ["Bird", "bird", "BIRD"]]
TINY = ["model.name=test_resnet", "input.size=16", "train.epochs=1", "train.batch_size=16", "train.lr=3e-3",
        "infer.tta=[identity]", "train.fit_minutes=600"]
# what a clear error names: a file, a csv line or row, a column, a config key, or a flag to pass
NAMES_WHERE = re.compile(r"\.csv|\.ya?ml|\.png|\.jpg|line \d|row \d|column|data\.\w+|--\w+|folder|image")


@dataclass
class Spec:
    seed: int
    task: str  # multiclass | multilabel
    layout: str  # column | onehot (multiclass); column | wide (multilabel)
    classes: list[str]
    id_ext: bool
    mixed_ext: bool
    numeric_ids: bool
    bom: bool
    stray: bool
    tiny: bool
    test_extra: bool
    test_missing: bool
    notes: list[str] = field(default_factory=list)

    def text(self) -> str:
        flags = [k for k in ("id_ext", "mixed_ext", "numeric_ids", "bom", "stray", "tiny", "test_extra",
                             "test_missing") if getattr(self, k)]
        return f"seed {self.seed}: {self.task}/{self.layout}, {len(self.classes)} classes {self.classes}, {flags}"


def draw(seed: int) -> Spec:
    rng = np.random.default_rng(seed)
    task = "multilabel" if rng.random() < 0.35 else "multiclass"
    layout = str(rng.choice(["column", "wide"] if task == "multilabel" else ["column", "column", "onehot"]))
    k = int(rng.integers(2, 6))
    pools = [PLAIN, UNICODE, ZEROS, NULLS] + ([SPACED] if task == "multiclass" else [])
    names: list[str] = []
    if rng.random() < 0.3:
        names += list(CASES[int(rng.integers(len(CASES)))])
    while len(names) < k:
        pool = pools[int(rng.integers(len(pools)))]
        name = str(pool[int(rng.integers(len(pool)))])
        if name not in names and (task == "multiclass" or " " not in name):
            names.append(name)
    if layout != "column":  # column headers: pandas reads a header "nan" or "" as a name, kept as written
        names = [n.strip() or "blank" for n in names]
    return Spec(seed, task, layout, names, id_ext=bool(rng.random() < 0.5), mixed_ext=bool(rng.random() < 0.25),
                numeric_ids=bool(rng.random() < 0.3), bom=bool(rng.random() < 0.3), stray=bool(rng.random() < 0.4),
                tiny=bool(rng.random() < 0.3), test_extra=bool(rng.random() < 0.2),
                test_missing=bool(rng.random() < 0.1))


def _targets(spec: Spec, rng, n: int, tiny: bool) -> np.ndarray:
    """n x classes 0/1: one 1 a row (multiclass), else 1-3 (each class alone in some row, and in combinations);
    with ``tiny`` the last class keeps 1-2 rows."""
    k = len(spec.classes)
    y = np.zeros((n, k), int)
    for i in range(n):
        if spec.task == "multiclass" or i < k:
            y[i, i % k] = 1
        else:
            y[i, rng.choice(k, size=int(rng.integers(1, min(3, k) + 1)), replace=False)] = 1
    if tiny:
        last = np.flatnonzero(y[:, -1])
        y[last[int(rng.integers(1, 3)):], -1] = 0
        empty = y.sum(1) == 0
        y[empty, 0] = 1
    return y[rng.permutation(n)]


def _image(path: Path, label_bits: np.ndarray, rng) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    a = rng.integers(0, 60, (20, 20, 3)).astype(np.uint8)
    for j in np.flatnonzero(label_bits):  # a class is a bright band at its own place: learnable, not required
        a[(3 * j) % 18:(3 * j) % 18 + 3] += 150
    Image.fromarray(a).save(path, quality=95) if path.suffix == ".jpg" else Image.fromarray(a).save(path)


def _cells(spec: Spec, y: np.ndarray, rng) -> list[str]:
    out = []
    for row in y:
        names = [spec.classes[j] for j in np.flatnonzero(row)]
        cell = " ".join(names)
        if spec.stray and rng.random() < 0.2:
            cell = str(rng.choice([" ", "  ", "\t"])) * int(rng.random() < 0.3) + cell + " "
        out.append(cell)
    return out


def _frame(spec: Spec, ids: list[str], y: np.ndarray, rng, wide: bool) -> pd.DataFrame:
    if not wide:
        return pd.DataFrame({"image_id": ids, "label": _cells(spec, y, rng)})
    df = pd.DataFrame(y, columns=spec.classes).astype(str)
    df.insert(0, "image_id", ids)
    return df


def write(spec: Spec, out: Path, n_train: int = 36, n_test: int = 10) -> None:
    """OUT/{train.csv, train/, test/, sample_submission.csv, solution.csv} for ``spec``."""
    rng = np.random.default_rng(spec.seed + 10_000)
    out.mkdir(parents=True)
    n = n_train + n_test
    y = np.concatenate([_targets(spec, rng, n_train, spec.tiny), _targets(spec, rng, n_test, False)])
    stems = [f"{i:04d}" if spec.numeric_ids else f"img_{i}" for i in rng.permutation(n)]
    exts = [".jpg" if spec.mixed_ext and rng.random() < 0.5 else ".png" for _ in stems]
    if not spec.id_ext and spec.mixed_ext:
        exts = [".jpg"] * n
    for i, (stem, ext) in enumerate(zip(stems, exts)):
        _image(out / ("train" if i < n_train else "test") / (stem + ext), y[i], rng)
    ids = [s + e if spec.id_ext else s for s, e in zip(stems, exts)]
    tr, te = slice(0, n_train), slice(n_train, n)
    enc = "utf-8-sig" if spec.bom else "utf-8"
    wide_train = spec.layout in ("onehot", "wide")
    _frame(spec, ids[tr], y[tr], rng, wide_train).to_csv(out / "train.csv", index=False, encoding=enc)
    sample = _frame(spec, ids[te], np.zeros_like(y[te]), rng, wide_train)
    if not wide_train:
        sample["label"] = spec.classes[0]
    sample.to_csv(out / "sample_submission.csv", index=False, encoding=enc)
    solution = _frame(spec, ids[te], y[te], rng, wide_train)
    if not wide_train:
        solution["label"] = solution["label"].str.strip()
    solution.to_csv(out / "solution.csv", index=False)
    if spec.test_extra:
        _image(out / "test" / "extra_not_listed.png", y[0], rng)
    if spec.test_missing:
        gone = out / "test" / (stems[n_train] + exts[n_train])
        gone.unlink()
        spec.notes.append(f"removed {gone.name}")


@dataclass
class Outcome:
    spec: Spec
    kind: str  # ok | clear-error | traceback | misread | unclear-error | bad-submission
    step: str = ""
    detail: str = ""
    seconds: float = 0.0


def _invoke(args: list[str]):
    from click.testing import CliRunner

    from comp.cli import cli

    return CliRunner().invoke(cli, args, catch_exceptions=True)


def _failure(step: str, r) -> tuple[str, str]:
    """('traceback' | 'unclear-error' | 'clear-error', the message) of a failed command."""
    if r.exc_info and not isinstance(r.exception, SystemExit):
        return "traceback", "".join(traceback.format_exception(*r.exc_info))[-3000:]
    text = r.output.strip()
    if "Traceback" in text:
        return "traceback", text[-3000:]
    return ("clear-error" if NAMES_WHERE.search(text) else "unclear-error"), text[-600:]


def _read_as(spec: Spec, work: Path) -> tuple[str, int]:
    from comp.config import load_config
    from comp.data.competition import class_names, load_train
    from comp.tasks.labels import task_classes

    cfg = load_config(work / "comp.yaml")
    train = load_train(cfg)
    if cfg.data.task == "multilabel":
        return "multilabel", len(task_classes(cfg.data.label_cols, train["label"], cfg.data.label_sep))
    return "multiclass", len(cfg.data.label_cols) if cfg.data.label_cols else len(class_names(train["label"]))


def _submission_problem(spec: Spec, folder: Path, work: Path) -> str | None:
    """What is wrong with the submission: its columns, its ids, or a label that is not one of the classes as
    written (a class '007' submitted as '7')."""
    sample = pd.read_csv(folder / "sample_submission.csv", dtype=str, keep_default_na=False, encoding="utf-8-sig")
    sub = pd.read_csv(work / "submissions" / "fz.csv", dtype=str, keep_default_na=False)
    if list(sub.columns) != list(sample.columns):
        return f"columns {list(sub.columns)} != the sample's {list(sample.columns)}"
    if sorted(sub.iloc[:, 0].str.strip()) != sorted(sample.iloc[:, 0].str.strip()):
        return "ids differ from the sample's"
    if "label" in sub.columns:
        names = {n for cell in sub["label"] for n in (cell.split() if spec.task == "multilabel" else [cell])}
        if not names <= set(spec.classes):
            return f"labels {sorted(names - set(spec.classes))[:5]} are not among the classes {spec.classes}"
    return None


def run_one(seed: int, root: Path) -> Outcome:
    """Generate folder ``seed`` under ``root`` and run init, check, folds, train, predict, ensemble and score."""
    import os

    spec = draw(seed)
    folder, work = root / f"c{seed}", root / f"w{seed}"
    write(spec, folder)
    work.mkdir()
    t0 = time.perf_counter()
    sets = [a for s in TINY for a in ("--set", s)]
    steps = [("init", ["init", str(folder)]), ("check", ["check"]), ("folds", ["folds", "--n-splits", "2"]),
             ("train", ["train", "--exp", "fz", "--all-folds", *sets]), ("predict", ["predict", "--exp", "fz", *sets]),
             ("ensemble", ["ensemble", "--exp", "fz", "--name", "fz"]),
             ("score", ["score", "submissions/fz.csv", "--solution", str(folder / "solution.csv")])]
    here = os.getcwd()
    os.chdir(work)
    try:
        for step, args in steps:
            r = _invoke(args)
            if r.exit_code != 0:
                kind, text = _failure(step, r)
                if step == "score" and kind == "clear-error":  # comp score refused comp's own submission
                    kind = "bad-submission"
                return Outcome(spec, kind, step, text, time.perf_counter() - t0)
            if step == "init":
                task, k = _read_as(spec, work)
                if (task, k) != (spec.task, len(spec.classes)):
                    return Outcome(spec, "misread", step, f"read as {task} with {k} classes:\n{r.output[-1500:]}",
                                   time.perf_counter() - t0)
            if step == "ensemble":
                bad = _submission_problem(spec, folder, work)
                if bad:
                    return Outcome(spec, "bad-submission", step, bad, time.perf_counter() - t0)
        return Outcome(spec, "ok", seconds=time.perf_counter() - t0)
    finally:
        os.chdir(here)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--first", type=int, default=0)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    import tempfile

    root = Path(a.out or tempfile.mkdtemp(prefix="comp-fuzz-"))
    root.mkdir(parents=True, exist_ok=True)
    counts: dict[str, int] = {}
    for seed in range(a.first, a.first + a.n):
        o = run_one(seed, root)
        counts[o.kind] = counts.get(o.kind, 0) + 1
        print(f"{o.kind:14s} {o.step:9s} {o.seconds:5.1f}s {o.spec.text()}", flush=True)
        if o.kind not in ("ok", "clear-error"):
            print("    " + o.detail.replace("\n", "\n    "), flush=True)
        elif o.kind == "clear-error":
            print("    " + o.detail.splitlines()[-1][:300], flush=True)
    print(f"\n{a.n} folders (seeds {a.first}-{a.first + a.n - 1}) under {root}: {counts}")
    sys.exit(0 if set(counts) <= {"ok", "clear-error"} else 1)


if __name__ == "__main__":
    main()
