"""``comp pseudo --from TEACHER --exp NEW``: fold-safe pseudo-labelled test rows for experiment NEW.

The teacher is an experiment (``runs/T/test_folds.csv``, written by ``comp predict``) or a submission of
``submissions/ledger.csv`` (its members blended with the ledger's weights). Fold k of NEW trains on the test rows
that the teacher's fold-k model(s) labelled, and only those: a fold-k teacher model never trained on fold k's
validation rows, so nothing it says can carry fold k's labels into fold k's training. Test images never enter a
validation fold: the OOF and the CV stay what they were.

Selection, per fold: ``threshold`` keeps rows whose top probability reaches it; ``top`` keeps that fraction of the
most confident rows. Hard labels are the teacher's argmax; ``soft`` keeps the teacher's probabilities (trained on
with soft-target cross-entropy).

Multi-label (data.task multilabel): a test image's labels are the classes whose probability reaches fold k's
per-class thresholds, fit (comp.tasks.thresholds.fit_thresholds, data.metric or macro F1) on the teacher's OOF rows
outside fold k only, so fold k's labels choose none of them. Its confidence is that of its least sure decision:
min over classes of p (a label) or 1 - p (no label); ``threshold``/``top`` select on it. Hard targets are the
multi-hot decisions; ``soft`` keeps the sigmoids.

Writes ``folds/pseudo/NEW/fold_k.csv`` (``<id>``, ``confidence``, one probability column per class: one-hot when
hard), ``summary.json`` (counts per class and fold, the confidence histogram) and ``confidence.png``; and
``configs/NEW.yaml`` (the teacher's experiment settings plus ``data.pseudo``) when that file does not exist yet.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from comp.config import Config, ConfigError, check_exp_name, resolve
from comp.data.competition import DataError, read_csv_str, read_folds
from comp.errors import OutputExists
from comp.files import atomic_dir, digest_file, write_csv, write_text
from comp.tasks import task_of

PSEUDO_DIR = Path("folds") / "pseudo"
BINS = np.round(np.linspace(0, 1, 21), 2)


def folds_digest(cfg: Config) -> str:
    """A digest of folds.csv: pseudo-labels are only fold-safe for the folds they were made with."""
    return hashlib.sha256(resolve(cfg, cfg.folds.file).read_bytes()).hexdigest()[:16]


def teacher_folds(cfg: Config, source: str) -> tuple[list[str], dict[int, np.ndarray], pd.Index, str, list[str]]:
    """(classes, {fold: test probabilities (N, C)}, test ids, description, members) of an experiment or a
    submission; every member must be fold-safe for the current folds file (comp.techniques.foldsafe)."""
    from comp.infer import ledger
    from comp.runs import run_dir
    from comp.techniques.foldsafe import check_fold_safe

    led = ledger.read()
    sub = led[led["name"] == source]
    by_fold: dict[int, np.ndarray] = {}  # per-fold weights of a submission teacher with auto weights
    if (run_dir(source) / "oof.csv").exists() or sub.empty:
        members, weights = [source], [1.0]
        what = f"experiment {source}"
    else:
        row = sub.iloc[-1]
        members, weights = ledger.members(row)
        what = f"submission {source} ({', '.join(f'{m} x {w:.2f}' for m, w in zip(members, weights))})"
        if len(members) > 1:
            task_of(cfg).refuse("pseudo --from a blend", source=source, members=", ".join(members))
        if len(members) > 1 and json.loads(row.get("options") or "{}").get("weights", "auto") == "auto":
            by_fold = fold_safe_weights(cfg, members)  # the ledger's auto weights saw every fold's labels
            what += "; weights searched again without each fold's rows"
    id_col = cfg.data.id_col
    out: dict[int, np.ndarray] = {}
    classes = ids = None
    folds = read_folds(cfg)
    for m, w in zip(members, weights):
        check_fold_safe(cfg, m, folds)
        path = run_dir(m) / "test_folds.csv"
        if not path.exists():
            raise DataError(f"{path} not found: fold-safe pseudo-labels need each fold model's own test "
                            f"predictions; run comp predict --exp {m} --overwrite")
        df = read_csv_str(path)
        cls = [c for c in df.columns if c not in (id_col, "fold")]
        if classes is None:
            classes = cls
        elif sorted(cls) != sorted(classes):
            raise DataError(f"{path}: classes differ from {members[0]}'s; only experiments on the same classes blend")
        for k, grp in df.groupby(df["fold"].astype(int)):
            grp = grp.set_index(id_col)
            if ids is None:
                ids = grp.index
            p = grp.loc[ids, classes].to_numpy(np.float64)
            wk = by_fold[k][members.index(m)] if k in by_fold else w
            out[k] = out.get(k, 0) + wk * p
    missing = sorted(set(folds["fold"].astype(int)) - set(out))
    if missing:
        raise DataError(f"{what}: no test predictions of fold model(s) {missing}; every fold of {cfg.folds.file} "
                        f"needs its own (comp train --exp {members[0]} --all-folds, then comp predict --overwrite)")
    total = 1.0 if by_fold else sum(weights)
    return classes, {k: v / total for k, v in sorted(out.items())}, ids, what, members


def fold_safe_weights(cfg: Config, members: list[str]) -> dict[int, np.ndarray]:
    """Blend weights for a submission teacher, one set per fold k: the greedy search (comp ensemble's) run again
    on the members' OOF rows outside fold k, so the labels fold k's student is scored on never chose them."""
    from comp.infer.ensemble import greedy_weights, signed_score
    from comp.metrics import create_metric
    from comp.runs import run_dir

    id_col, label_col = cfg.data.id_col, cfg.data.label_col
    oofs = [read_csv_str(run_dir(m) / "oof.csv").set_index(id_col) for m in members]
    ids = oofs[0].index
    classes = sorted(c for c in oofs[0].columns if c not in ("fold", label_col))
    y = pd.Categorical(oofs[0][label_col], categories=classes).codes.astype(np.int64)
    fold = oofs[0]["fold"].astype(int).to_numpy()
    probs = [o.loc[ids, classes].to_numpy(np.float64) for o in oofs]
    score = signed_score(create_metric(cfg.data.metric, classes), classes)
    out = {}
    for k in sorted(set(fold)):
        tr = fold != k
        out[int(k)] = greedy_weights([p[tr] for p in probs], y[tr], "mean",
                                     objective=lambda sc, yt=y[tr]: score(yt, np.exp(sc)))
    return out


def select(probs: np.ndarray, threshold: float | None, top: float | None) -> np.ndarray:
    """Row positions kept: top probability >= threshold, or the ``top`` fraction most confident (ties: row order)."""
    return select_by(probs.max(1), threshold, top)


def select_by(conf: np.ndarray, threshold: float | None, top: float | None) -> np.ndarray:
    """Row positions kept: confidence >= threshold, or the ``top`` fraction most confident (ties: row order)."""
    if threshold is not None:
        return np.flatnonzero(conf >= threshold)
    n = int(round(top * len(conf)))
    return np.sort(np.argsort(-conf, kind="stable")[:n])


def make_pseudo(
    cfg: Config,
    source: str,
    exp: str,
    threshold: float | None = None,
    top: float | None = None,
    soft: bool = False,
    overwrite: bool = False,
    echo: Callable[[str], None] = print,
) -> Path:
    """Write ``folds/pseudo/<exp>/`` from ``source`` (an experiment or a submission name); returns the folder."""
    check_exp_name(exp)
    check_exp_name(source, "--from")
    if (threshold is None) == (top is None):
        raise ConfigError("choose one of --threshold P (keep rows whose top probability reaches P) or --top F "
                          "(keep the fraction F most confident rows)")
    if threshold is not None and not 0 < threshold <= 1:
        raise ConfigError(f"--threshold {threshold}: expected a probability in (0, 1]")
    if top is not None and not 0 < top <= 1:
        raise ConfigError(f"--top {top}: expected a fraction in (0, 1]")
    if exp == source:
        raise ConfigError(f"--exp {exp}: name a new experiment, not the teacher")
    out = PSEUDO_DIR / exp
    teacher = [Path("runs") / source / f for f in ("oof.csv", "test_folds.csv", "test.csv")]
    recipe = {"command": "pseudo", "from": source, "threshold": threshold, "top": top, "soft": soft,
              "folds": folds_digest(cfg), "task": cfg.data.task,
              "teacher": {str(f): digest_file(f) for f in [*teacher, Path("submissions") / f"{source}.csv"]}}
    if not overwrite and _made_from(out, recipe):
        echo(f"{out} already made from teacher {source}'s predictions as they are now, with these options; nothing "
             f"to do (pass --overwrite to make it again)")
        return out
    if out.exists() and not overwrite:
        raise OutputExists(f"{out} already exists, made from another teacher, folds or options; pass --overwrite "
                           f"to make it again")
    classes, per_fold, ids, what, members = teacher_folds(cfg, source)
    id_col = cfg.data.id_col
    summary = {"teacher": source, "teacher_is": what, "soft": soft, "threshold": threshold, "top": top,
               "folds_digest": folds_digest(cfg), "n_test": len(ids), "folds": {}, "task": cfg.data.task,
               "recipe": recipe}  # what made the folder: the same command again finds it here (_made_from)
    rules = fold_rules(cfg, members[0], classes, sorted(per_fold))
    cuts = {str(k): [round(float(t), 3) for t in r.cuts] for k, r in rules.items() if r.cuts is not None}
    if cuts:
        summary["thresholds"] = cuts
    for note in sorted({r.note for r in rules.values()} - {""}):
        echo(note)
    echo(f"pseudo {exp}: teacher {what}, {'soft' if soft else 'hard'} labels, "
         + (f"{task_of(cfg).confidence} >= {threshold}"
            if threshold is not None else f"the {top:.0%} most confident"))
    with atomic_dir(out) as tmp:  # built aside, renamed into place whole: no file of an older folder survives
        _write_folder(tmp, per_fold, ids, classes, id_col, summary, threshold, top, soft, echo, rules)
    cfg_path = Path(cfg.base_dir) / "configs" / f"{exp}.yaml"
    if not cfg_path.exists():
        teacher_cfg = Path(cfg.base_dir) / "configs" / f"{members[0]}.yaml"
        values = yaml.safe_load(teacher_cfg.read_text(encoding="utf-8")) if teacher_cfg.exists() else {}
        values = dict(values or {})
        values["data"] = {**(values.get("data") or {}), "pseudo": str(out)}
        write_text(cfg_path, yaml.safe_dump(values, sort_keys=False, allow_unicode=True))
        echo(f"wrote {cfg_path} (the teacher's settings + data.pseudo: {out})")
    else:
        echo(f"{cfg_path} exists: make sure it sets data.pseudo: {out}")
    echo(f"wrote {out}/fold_k.csv, summary.json, confidence.png; next: comp train --exp {exp} --all-folds")
    return out


def _made_from(out: Path, recipe: dict) -> bool:
    """``out`` holds a pseudo-label folder made from ``recipe`` (its summary.json records it)."""
    try:
        made = json.loads((out / "summary.json").read_text(encoding="utf-8")).get("recipe")
    except (OSError, ValueError):
        return False
    return made == json.loads(json.dumps(recipe, default=str))


def fold_rules(cfg: Config, teacher: str, classes: list[str], folds: list[int]) -> dict:
    """How fold k's teacher model decides a test image, for each k (``Task.fold_rules``): the most likely class, or
    (multi-label) the classes over per-class thresholds fit on the teacher's OOF over the rows of the other folds
    (data.metric when it is a decision metric, else macro F1)."""
    from comp.runs import run_dir

    d = cfg.data
    task = task_of(cfg)

    def teacher_oof() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        path = run_dir(teacher) / "oof.csv"
        oof = read_csv_str(path).set_index(d.id_col)
        y = task.truth(oof[d.label_col], classes, str(path))  # joined by data.label_sep
        return oof[classes].to_numpy(np.float64), y, oof["fold"].astype(int).to_numpy()

    return task.fold_rules(teacher_oof, folds, d.metric)


def _write_folder(folder: Path, per_fold: dict[int, np.ndarray], ids: pd.Index, classes: list[str], id_col: str,
                  summary: dict, threshold: float | None, top: float | None, soft: bool,
                  echo: Callable[[str], None], rules: dict) -> None:
    """fold_k.csv, confidence.png and summary.json of a pseudo-label folder, into ``folder``."""
    from comp.reports.page import pyplot, save_figure

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    confs = []
    for k, p in per_fold.items():
        rule = rules[k]
        conf = rule.confidence(p)
        confs.append(conf)
        keep = select_by(conf, threshold, top)
        q = rule.targets(p[keep], soft)
        df = pd.concat([pd.DataFrame({id_col: np.asarray(ids)[keep], "confidence": conf[keep]}),
                        pd.DataFrame(q, columns=classes)], axis=1)
        write_csv(folder / f"fold_{k}.csv", df, float_format="%.6g")
        counts = pd.Series(rule.counts(p[keep]), index=classes)
        hist, _ = np.histogram(conf, bins=BINS)
        summary["folds"][str(k)] = {"kept": len(keep), "per_class": {c: int(counts.get(c, 0)) for c in classes},
                                    "confidence_hist": hist.tolist()}
        ax.hist(conf, bins=BINS, histtype="step", label=f"fold {k} ({len(keep)} kept)")
        echo(f"  fold {k}: {len(keep)} of {len(ids)} test rows; per class: "
             + ", ".join(f"{c} {int(counts.get(c, 0))}" for c in classes))
    summary["bins"] = BINS.tolist()
    conf = np.concatenate(confs)
    edges = [0.0, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0]
    hist, _ = np.histogram(conf, bins=edges)
    first = next(iter(rules.values()))
    echo(f"  confidence of the teacher's fold models ({first.confidence_is}"
         f", all folds' test rows): "
         + ", ".join(f"{a:g}-{b:g} {n}" for a, b, n in zip(edges[:-1], edges[1:], hist)))
    if threshold is not None:
        ax.axvline(threshold, color="grey", ls=":")
    ax.set_xlabel(first.axis)
    ax.set_ylabel("test images")
    ax.legend(fontsize=8)
    save_figure(fig, folder / "confidence.png")
    write_text(folder / "summary.json", json.dumps(summary, indent=2, ensure_ascii=False))


@dataclass
class Pseudo:
    """data.pseudo, read for training: per fold, the test ids and their target distributions (one-hot when hard)."""

    folder: Path
    soft: bool
    teacher: str
    folds: dict[int, pd.DataFrame]  # fold -> columns id, path, one probability column per class


def load_pseudo(cfg: Config, classes: list[str], folds: list[int]) -> Pseudo | None:
    """``data.pseudo``'s rows for ``folds`` (None when unset), checked against the folds file and the test set."""
    from comp.data.competition import load_test

    if not cfg.data.pseudo:
        return None
    folder = resolve(cfg, cfg.data.pseudo)
    info_path = folder / "summary.json"
    if not info_path.exists():
        raise ConfigError(f"data.pseudo: {info_path} not found; make it with "
                          f"comp pseudo --from TEACHER --exp {cfg.exp}")
    info = json.loads(info_path.read_text(encoding="utf-8"))
    if info["folds_digest"] != folds_digest(cfg):
        raise DataError(f"data.pseudo: {folder} was made for another folds file than {cfg.folds.file}; its "
                        f"labels would not be fold-safe. Predict the teacher again on these folds and re-run "
                        f"comp pseudo --overwrite")
    if info["soft"] and (cfg.augment.mixup or cfg.augment.cutmix):
        raise ConfigError(f"data.pseudo: {folder} holds soft labels, which augment.mixup/cutmix cannot mix; set both "
                          f"to 0, or make hard labels (comp pseudo without --soft)")
    test = load_test(cfg).set_index("id")["path"]
    out = {}
    for k in folds:
        path = folder / f"fold_{k}.csv"
        if not path.exists():
            raise DataError(f"data.pseudo: {path} not found: the teacher has no fold-{k} model; pseudo-labels for "
                            f"fold {k} may only come from it")
        df = read_csv_str(path)
        missing = [c for c in classes if c not in df.columns]
        if missing:
            raise DataError(f"{path}: no column for class {missing[0]!r}; the teacher was trained on other classes")
        ids = df[cfg.data.id_col]
        unknown = ids[~ids.isin(test.index)]
        if len(unknown):
            raise DataError(f"{path} line {unknown.index[0] + 2}: id {unknown.iloc[0]!r} is not a test image of this "
                            f"competition; re-run comp pseudo --overwrite")
        probs = df[classes].astype(np.float64)
        out[k] = pd.concat([pd.DataFrame({"id": ids, "path": test.loc[ids].to_numpy()}), probs], axis=1)
    return Pseudo(folder, bool(info["soft"]), str(info["teacher"]), out)
