"""``comp relabel --exp E``: likely label errors from out-of-fold predictions, and ``data.relabel`` to act on them.

Finding suspects is the confident-learning rule (Northcutt, Jiang & Chuang, 2021): class j's threshold t_j is the
mean OOF probability of class j over the rows labelled j (how sure the model is, on average, of its own class). A
row labelled i is a suspect when its probability of i is below t_i and some other class j reaches t_j; the
suggestion is the most probable such j. Rows below t_i whose argmax is another class are suspects too (see
:func:`find_suspects`). Suspects are ranked by p(given), lowest first. Every probability is out-of-fold: the
model that scored a row never trained on it.

``reports/E/relabel.csv`` lists the suspects with an empty ``accept`` column for a person to fill:
``accept`` (or yes / y / 1 / true) takes the suggested label, ``drop`` leaves the row out of training, empty
keeps the row as it is. ``data.relabel: reports/E/relabel.csv`` in a new experiment applies it to the TRAINING
rows of each fold only: every row keeps its given label in validation and in the OOF, so the new experiment's
CV is measured on the same labels as every other experiment (comparable, and blendable in ``comp ensemble``).
train.csv is never changed.

Cross-fitted (issue 17). relabel.csv's suggestion for a fold-j row came from the fold-j model, which trained on
fold k's labels; training fold k on it would carry fold k's labels (a near-duplicate's noise included) into fold
k's training. So fold k applies an accepted row of fold j only when the *fold-safe* suggestion agrees: the same
rule (find_suspects) over fold j's rows, run on the probabilities of a pair model trained without folds j and k
(``runs/E/relabel_pairs/pair_j_k``, E's recipe, its last epoch; comp.train.session.train_helper). A row whose
fold-safe suggestion differs is kept as given, and counted per fold. K(K-1)/2 pair models in all, each trained
once and shared by its two folds; fold k needs only the K-1 pairs {j, k}. Dropped rows stay dropped. A full-data
run (``--full``) has no fold, no OOF and no pair: it trains on the accepted suggestions as written.

Accepting every suggestion: ``data.relabel: auto`` (or a relabel.csv with every row marked accept). Which rows
relabel.csv lists was itself decided by the leaky fold models: a fold-j row is listed when its label disagrees
with what the fold-j model learned from fold k (its near-duplicate's label, say). Keeping only the listed rows
where the pair model agrees still lets fold k's labels choose fold k's training targets (measured: +0.037 of CV
over the hold-out on near-duplicates, docs/leaks.md). So when every suggestion is accepted, no list is used: fold
k takes every fold-safe suggestion of each pair model {j, k} for fold j's rows, of the confident-learning rule only
(a change nobody reviews: the argmax fallback is left to a person). A full-data run then takes, for each fold j's
rows, the confident suspects of the pair models' mean probabilities (every pair {j, k}: none saw fold j).
Measured with near-duplicates across folds (docs/leaks.md, 6 seeds): CV rise minus hold-out rise +0.065 when
train.csv is rewritten with relabel.csv, -0.014 on this path.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from comp.config import Config, ConfigError, resolve
from comp.data.competition import DataError, load_train, read_csv_str
from comp.errors import OutputExists
from comp.files import digest_file, record_recipe, same_recipe, write_csv, write_text
from comp.tasks import task_of
from comp.train.rows import FoldRows, Pool

ACCEPT = {"accept", "yes", "y", "1", "true"}
DROP = {"drop"}
KEEP = {"", "no", "n", "0", "false", "keep"}
GALLERY = 60  # suspects shown (with Grad-CAM) in the HTML page
PAIRS = "relabel_pairs"  # runs/E/relabel_pairs/pair_j_k: the cross-fitted suggestions' models
EVERY = "auto"  # data.relabel: auto: every fold-safe suggestion accepted (no relabel.csv)


@dataclass
class Suspects:
    """Per-class thresholds and the suspect rows, most likely label errors first."""

    thresholds: np.ndarray  # (C,)
    pos: np.ndarray  # row positions of the suspects, ranked
    suggested: np.ndarray  # suggested class index per suspect
    rule: np.ndarray  # "confident" (the confident-learning rule) or "argmax" (see find_suspects)


def find_suspects(y: np.ndarray, probs: np.ndarray) -> Suspects:
    """Rows whose given label ``y`` the OOF ``probs`` (N, C) contradicts.

    A row labelled i is a suspect when p_i is below class i's threshold t_i (the mean p_i over rows labelled i)
    and either another class j reaches its own threshold t_j (the confident-learning rule; suggested: the most
    probable such j) or, failing that, the argmax is another class (suggested: the argmax). The second case
    catches rows the model all but rules out for their label (p_i = 0.002, say) while no class reaches a high
    threshold: measured on Fashion-MNIST with 30 labels flipped on purpose, the confident rule alone missed 7
    of them, the two together none. Suspects are ranked by p_i, lowest first (cleanlab's self-confidence order,
    which put far more flipped labels in the top 30 than the margin p_j - p_i did).
    """
    y = np.asarray(y, np.int64)
    probs = np.asarray(probs, np.float64)
    n, c = probs.shape
    rows = np.arange(n)
    counts = np.bincount(y, minlength=c)
    sums = np.bincount(y, weights=probs[rows, y], minlength=c)
    # A class without rows can't be confidently predicted (its threshold is unreachable).
    thresholds = np.where(counts > 0, sums / np.maximum(counts, 1), np.inf)
    given = probs[rows, y]
    above = probs >= thresholds[None, :]
    above[rows, y] = False
    confident = (given < thresholds[y]) & above.any(1)
    argmax = probs.argmax(1)
    other = (given < thresholds[y]) & (argmax != y) & ~confident
    suggested = np.where(confident, np.where(above, probs, -np.inf).argmax(1), argmax)
    pos = np.flatnonzero(confident | other)
    pos = pos[np.lexsort((pos, given[pos]))]  # lowest p(given) first; ties in row order
    return Suspects(thresholds, pos, suggested[pos], np.where(confident[pos], "confident", "argmax"))


def suspects_frame(ids, folds, y: np.ndarray, probs: np.ndarray, classes: list[str], s: Suspects) -> pd.DataFrame:
    """The relabel.csv table: id, fold, given, suggested, rule, p_given, p_suggested, p_<class>..., accept."""
    ids, folds = np.asarray(ids, object), np.asarray(folds)
    cls = np.asarray(classes, object)
    df = pd.DataFrame({
        "id": ids[s.pos], "fold": folds[s.pos].astype(int), "given": cls[y[s.pos]], "suggested": cls[s.suggested],
        "rule": s.rule, "p_given": np.round(probs[s.pos, y[s.pos]], 5),
        "p_suggested": np.round(probs[s.pos, s.suggested], 5),
    })
    p = pd.DataFrame(np.round(probs[s.pos], 5), columns=[f"p_{c}" for c in classes])
    df = pd.concat([df, p], axis=1)
    df["accept"] = ""
    return df


# ---------------------------------------------------------------- the command


def run_relabel(
    cfg: Config,
    exp: str,
    out: str | Path | None = None,
    gallery: int = GALLERY,
    overwrite: bool = False,
    echo: Callable[[str], None] = print,
    runs_dir: str | Path | None = None,
) -> Path:
    """Write ``reports/<exp>/relabel.csv`` (suspects, ranked) and the gallery ``relabel.html``; returns the csv."""
    from comp import runs
    from comp.reports.oof_run import fold_models, oof_arrays, read_run_oof

    task_of(cfg).refuse("relabel", exp=exp)
    t0 = time.time()
    run = Path(runs_dir or runs.RUNS_DIR) / exp
    if not (run / "oof.csv").exists():
        raise DataError(f"{run / 'oof.csv'} not found: relabel needs every train row's out-of-fold prediction; "
                        f"finish the run first: comp train --exp {exp} --all-folds")
    out = Path(out or Path("reports") / exp)
    csv_path = out / "relabel.csv"
    recipe = {"command": "relabel", "exp": exp, "gallery": gallery, "oof": digest_file(run / "oof.csv")}
    if not overwrite and same_recipe(csv_path, recipe):
        echo(f"{csv_path} already made from {run / 'oof.csv'} as it is now; nothing to do (any marks in it are kept; "
             f"pass --overwrite to write it again)")
        return csv_path
    if csv_path.exists() and not overwrite:
        raise OutputExists(f"{csv_path} already exists (it may hold your accept/drop marks); pass --overwrite "
                           f"to write it again, or --out to write elsewhere")
    oof, _ = read_run_oof(cfg, run)
    models = fold_models(run)
    meta0 = next(iter(models.values())).meta if models else {}
    classes, y, probs = oof_arrays(cfg, oof, meta0.get("classes"))
    d = cfg.data
    s = find_suspects(y, probs)
    table = suspects_frame(oof[d.id_col], oof["fold"], y, probs, classes, s)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(csv_path, table)

    per = pd.crosstab(table["given"], table["suggested"]) if len(table) else pd.DataFrame()
    echo(f"relabel: {exp}: {len(table):,} suspects among {len(oof):,} OOF rows "
         f"({100 * len(table) / max(1, len(oof)):.1f}%), thresholds "
         + ", ".join(f"{c} {t:.2f}" for c, t in zip(classes, s.thresholds)))
    for c in classes:
        n = int((table["given"] == c).sum())
        if n:
            top = table.loc[table["given"] == c, "suggested"].value_counts()
            echo(f"  {c}: {n} suspects (suggested: " + ", ".join(f"{k} {v}" for k, v in top.items()) + ")")
    page = _gallery(cfg, exp, oof, y, probs, classes, s, table, models, out, gallery, echo)
    summary = {"exp": exp, "rows": len(oof), "suspects": len(table), "thresholds": dict(zip(classes, s.thresholds)),
               "pairs": {f"{i} -> {j}": int(per.loc[i, j]) for i in per.index for j in per.columns if per.loc[i, j]},
               "seconds": round(time.time() - t0, 2)}
    write_text(out / "relabel.json", json.dumps(summary, indent=2, ensure_ascii=False, default=float))
    record_recipe(csv_path, recipe)
    echo(f"wrote {csv_path} (mark accept or drop in its 'accept' column, then set data.relabel: {csv_path} in a "
         f"new experiment) and {page} ({time.time() - t0:.1f} s)")
    return csv_path


def _gallery(cfg, exp, oof, y, probs, classes, s: Suspects, table, models, out: Path, n: int, echo) -> Path:
    """relabel/index.html: image, given and suggested label, and the Grad-CAM of both, from the row's fold model."""
    from comp.reports.oof_run import make_cams
    from comp.reports.page import Img, Report, report_dir, thumb_src

    d = cfg.data
    train = load_train(cfg)
    paths = dict(zip(train["id"], train["path"]))
    top = table.head(n)
    picks = []
    for rank, (pos, sug) in enumerate(zip(s.pos[:n], s.suggested[:n])):
        path = paths.get(oof[d.id_col].iloc[pos])
        if isinstance(path, str):
            for kind, target in (("given", int(y[pos])), ("suggested", int(sug))):
                picks.append({"pos": 2 * rank + (kind == "suggested"), "fold": int(oof["fold"].iloc[pos]),
                              "path": path, "target": target, "file": f"cam_{rank:04d}_{kind}.png"})
    picks_df = pd.DataFrame(picks, columns=["pos", "fold", "path", "target", "file"])
    with report_dir(out / "relabel") as tmp:
        done, notes = make_cams(cfg, models, picks_df, tmp, echo) if len(picks_df) else ({}, [])
        rep = Report(f"comp relabel — {exp}", f"{len(table):,} suspected label errors among {len(oof):,} OOF rows")
        sec = rep.section("How to use this page", "use")
        sec.p("Each suspect is an image whose out-of-fold prediction contradicts its label (confident learning: "
              "the given class's probability is below that class's average self-confidence, and another class "
              "reaches its own). Mark rows in relabel.csv's accept column: 'accept' takes the suggested label, "
              "'drop' leaves the row out of training, empty keeps it. Then train a new experiment with "
              "data.relabel pointing at the file; validation and the OOF keep the given labels, so its CV stays "
              "comparable with every other experiment.")
        sec.link("../relabel.csv", "relabel.csv")
        sec.table([{"class": c, "threshold": float(t), "suspects (given)": int((table["given"] == c).sum()),
                    "suggested as": int((table["suggested"] == c).sum())} for c, t in zip(classes, s.thresholds)])
        for note in notes:
            sec.note(note)
        sec = rep.section(f"The {len(top)} most confident suspects", "suspects")
        if not len(top):
            sec.note("no suspects: the out-of-fold predictions agree with the labels", "ok")
        for rank, r in enumerate(top.itertuples(index=False)):
            items = []
            path = paths.get(r.id)
            if isinstance(path, str):
                items.append(Img(thumb_src(path, rank, tmp / "thumbs"), f"suspect {r.id}",
                                 f"{r.id} (fold {r.fold})"))
            for kind, label, p in (("given", r.given, r.p_given), ("suggested", r.suggested, r.p_suggested)):
                if 2 * rank + (kind == "suggested") in done:
                    items.append(Img(done[2 * rank + (kind == "suggested")], f"Grad-CAM {kind} {r.id}",
                                     f"{kind}: {label} (p={p:.2f})\nGrad-CAM for {label}"))
            sec.gallery(items, label=f"#{rank + 1} {r.id}: given {r.given} -> suggested {r.suggested} "
                                     f"({r.rule})", wide=True)
        rep.write(tmp)
    return out / "relabel" / "index.html"


# ---------------------------------------------------------------- data.relabel


def accepts_every(cfg: Config) -> bool:
    """``data.relabel: auto``, or a relabel.csv whose every row is marked accept: every suggestion is accepted,
    so each fold takes its pair models' fold-safe suggestions and no leaky list (module docstring)."""
    if cfg.data.relabel is None:
        return False
    if cfg.data.relabel.strip().lower() == EVERY:
        return True
    path = resolve(cfg, cfg.data.relabel)
    if not path.exists():
        return False
    marks = read_csv_str(path).get("accept", pd.Series(dtype=str)).astype(str).str.strip().str.lower()
    return bool(len(marks)) and bool(marks.isin(ACCEPT).all())


def read_relabel(cfg: Config, classes: list[str]) -> tuple[dict, set]:
    """``data.relabel``: {id: new label} for rows marked accept, and the ids marked drop."""
    if cfg.data.relabel is None or cfg.data.relabel.strip().lower() == EVERY:
        return {}, set()
    path = resolve(cfg, cfg.data.relabel)
    if not path.exists():
        raise ConfigError(f"data.relabel: {path} not found; write it with comp relabel --exp E")
    df = read_csv_str(path)
    for col in ("id", "suggested", "accept"):
        if col not in df.columns:
            raise DataError(f"{path}: no column '{col}' (data.relabel expects comp relabel's relabel.csv)")
    change, drop = {}, set()
    for i, r in enumerate(df.itertuples(index=False), start=2):
        mark = str(r.accept).strip().lower()
        if mark in ACCEPT:
            if r.suggested not in classes:
                raise DataError(f"{path} line {i}: suggested label {r.suggested!r} is not a class "
                                f"({', '.join(classes)})")
            change[r.id] = r.suggested
        elif mark in DROP:
            drop.add(r.id)
        elif mark not in KEEP:
            raise DataError(f"{path} line {i}: accept={r.accept!r}; write accept, drop, or leave it empty")
    return change, drop


def apply_relabel(cfg: Config, table: pd.DataFrame, classes: list[str],
                  echo: Callable[[str], None] = print) -> pd.DataFrame:
    """Add the training targets: ``y_train`` (accepted suggestions applied) and ``train_use`` (False if dropped).

    ``table`` is train's joined table (id, label, y, fold, ...); ``y`` and ``label`` stay the given labels, which
    validation and the OOF use."""
    table = table.copy()
    table["y_train"] = table["y"]
    table["train_use"] = True
    if accepts_every(cfg):
        read_relabel(cfg, classes)  # the file's own errors still name their line
        echo(f"data.relabel ({cfg.data.relabel}): every suggestion accepted, so each fold k takes the fold-safe "
             f"suggestions of pair models trained without fold k for every other fold's rows (not relabel.csv's "
             f"list, which models that saw fold k chose); validation and OOF keep the given labels")
        return table
    change, drop = read_relabel(cfg, classes)
    if not change and not drop:
        return table
    path = resolve(cfg, cfg.data.relabel)
    unknown = sorted((set(change) | drop) - set(table["id"]))
    if unknown:
        raise DataError(f"{path}: id {unknown[0]!r} is not a usable train row ({len(unknown)} such ids); was the "
                        f"file written for another competition?")
    index = {c: i for i, c in enumerate(classes)}
    ids = table["id"]
    new = ids.map(change)
    hit = new.notna() & (new != table["label"])
    table.loc[hit, "y_train"] = new[hit].map(index).astype(int)
    table.loc[ids.isin(drop), "train_use"] = False
    changed = table.loc[hit, "label"].value_counts()
    dropped = table.loc[~table["train_use"], "label"].value_counts()
    echo(f"data.relabel ({path}): {int(hit.sum())} training labels changed (accepted; each fold keeps those its "
         f"fold-safe suggestion agrees with), {int((~table['train_use']).sum())} rows dropped from training; "
         f"validation and OOF keep the given labels")
    for c in classes:
        if changed.get(c, 0) or dropped.get(c, 0):
            echo(f"  {c}: {int(changed.get(c, 0))} relabelled, {int(dropped.get(c, 0))} dropped")
    return table


def pair_name(j: int, k: int) -> str:
    """The folder (under runs/E) of the pair model trained without folds j and k."""
    a, b = sorted((int(j), int(k)))
    return f"{PAIRS}/pair_{a}_{b}"


def fold_safe_suggestions(pool: Pool, j: int, k: int, confident_only: bool = False):
    """(table positions of fold j's rows, their fold-safe suggestion as class indices (the given label when the
    row is no suspect), the pair model): find_suspects over fold j's rows alone, thresholds included, on the
    probabilities of the model trained without folds j and k, so nothing in it depends on fold k's labels."""
    h = pool.helper(pair_name(j, k), [j, k])
    y = pool.table["y"].to_numpy()
    mine = pool.table["fold"].to_numpy()[h.rows] == j
    rows = h.rows[mine]
    return rows, safe_labels(y[rows], h.probs[mine], confident_only), h


def safe_labels(y: np.ndarray, probs: np.ndarray, confident_only: bool = False) -> np.ndarray:
    """``y`` with find_suspects' suggestion put in at each suspect (the given label elsewhere); ``confident_only``
    takes only the confident-learning rule's suspects (a change nobody reviews: see fold_safe_every)."""
    safe = y.copy()
    s = find_suspects(y, probs)
    keep = s.rule == "confident" if confident_only else np.ones(len(s.pos), bool)
    safe[s.pos[keep]] = s.suggested[keep]
    return safe


def fold_safe_rows(pool: Pool, k: int, fr: FoldRows) -> FoldRows:
    """Fold k's training targets with data.relabel applied through the fold-safe suggestions (module docstring):
    an accepted row of fold j keeps its new label only when the pair model {j, k} suggests the same one."""
    t, n = pool.table, len(pool.table)
    y, accepted, folds = t["y"].to_numpy(), t["y_train"].to_numpy(), t["fold"].to_numpy()
    real = np.flatnonzero(fr.rows < n)
    changed = real[accepted[fr.rows[real]] != y[fr.rows[real]]]  # positions in fr of accepted relabels
    if not len(changed) or pool.helper is None:
        return fr
    targets, parts, models, trained, seconds = fr.targets.copy(), [], [], 0, 0.0
    applied = kept = 0
    for j in sorted(set(folds[fr.rows[changed]].tolist())):
        mine = changed[folds[fr.rows[changed]] == j]
        if not (~np.isin(folds, [j, k]) & t["train_use"].to_numpy()).any():  # 2 folds: no pair model can exist
            targets[mine] = y[fr.rows[mine]]
            kept += len(mine)
            parts.append(f"fold {j}: {len(mine)} kept as given (no rows outside folds {j} and {k} to train a "
                         f"fold-safe model; use 3 or more folds)")
            continue
        rows, safe, h = fold_safe_suggestions(pool, j, k)
        agree = _suggestion_by_row(n, rows, safe)[fr.rows[mine]] == accepted[fr.rows[mine]]
        targets[mine[~agree]] = y[fr.rows[mine[~agree]]]
        applied, kept = applied + int(agree.sum()), kept + int((~agree).sum())
        parts.append(f"fold {j}: {int(agree.sum())} applied, {int((~agree).sum())} kept as given")
        models.append(pair_name(j, k).split("/")[-1])
        trained, seconds = trained + h.trained, seconds + h.seconds
    pool.echo(f"fold {k}: data.relabel through fold-safe suggestions (pair models trained without fold {k}): "
              f"{applied} accepted relabels applied, {kept} kept as given (their fold-safe suggestion disagrees); "
              + "; ".join(parts) + _cost(models, trained, seconds))
    return replace(fr, targets=targets, counts=dict(fr.counts, relabelled=applied, relabel_kept_given=kept))


def _cost(models: list[str], trained: int, seconds: float) -> str:
    return (f" | cost: {len(models)} pair models ({', '.join(models)}; {trained} trained now, "
            f"{len(models) - trained} read back), {seconds:.0f} s of training")


def _suggestion_by_row(n: int, rows: np.ndarray, safe: np.ndarray) -> np.ndarray:
    by_row = np.full(n, -1)
    by_row[rows] = safe
    return by_row


def fold_safe_every(pool: Pool, k: int, fr: FoldRows) -> FoldRows:
    """Every suggestion accepted (accepts_every): each training row of fold j takes the fold-safe suggestion of
    the pair model {j, k} (confident-learning suspects only); no list chosen by a model that saw fold k is read."""
    t, n = pool.table, len(pool.table)
    y, folds, use = t["y"].to_numpy(), t["fold"].to_numpy(), t["train_use"].to_numpy()
    real = np.flatnonzero(fr.rows < n)
    targets, parts, models, trained, seconds, applied = fr.targets.copy(), [], [], 0, 0.0, 0
    for j in sorted(set(folds[fr.rows[real]].tolist())):
        mine = real[folds[fr.rows[real]] == j]
        if not (~np.isin(folds, [j, k]) & use).any():  # 2 folds: no pair model can exist
            parts.append(f"fold {j}: none (no rows outside folds {j} and {k} to train a fold-safe model; use 3 "
                         f"or more folds)")
            continue
        rows, safe, h = fold_safe_suggestions(pool, j, k, confident_only=True)
        new = _suggestion_by_row(n, rows, safe)[fr.rows[mine]]
        hit = (new >= 0) & (new != y[fr.rows[mine]])
        targets[mine[hit]] = new[hit]
        applied += int(hit.sum())
        parts.append(f"fold {j}: {int(hit.sum())} of {len(mine)}")
        models.append(pair_name(j, k).split("/")[-1])
        trained, seconds = trained + h.trained, seconds + h.seconds
    pool.echo(f"fold {k}: data.relabel, every suggestion accepted: {applied} training labels changed to the "
              f"fold-safe suggestion of a pair model trained without fold {k} ("
              + "; ".join(parts) + ")" + _cost(models, trained, seconds))
    return replace(fr, targets=targets, counts=dict(fr.counts, relabelled=applied))


def full_every(pool: Pool, fr: FoldRows) -> FoldRows:
    """A full-data run with every suggestion accepted: fold j's rows take the suspects of the mean probabilities
    of the pair models {j, m} (none of which saw fold j); every pair is trained now if the folds did not."""
    t, n = pool.table, len(pool.table)
    y, folds = t["y"].to_numpy(), t["fold"].to_numpy()
    all_folds = sorted(set(folds.tolist()))
    if len(all_folds) < 3:
        pool.echo("full-data run: data.relabel accepting every suggestion needs 3 or more folds (pair models); "
                  "training on the given labels")
        return fr
    safe_all = np.full(n, -1)
    for j in all_folds:
        helpers = [pool.helper(pair_name(j, m), [j, m]) for m in all_folds if m != j]
        mine = folds[helpers[0].rows] == j
        rows = helpers[0].rows[mine]
        safe_all[rows] = safe_labels(y[rows], np.mean([h.probs[folds[h.rows] == j] for h in helpers], axis=0),
                                     confident_only=True)
    real = np.flatnonzero(fr.rows < n)
    new = safe_all[fr.rows[real]]
    hit = (new >= 0) & (new != y[fr.rows[real]])
    targets = fr.targets.copy()
    targets[real[hit]] = new[hit]
    pool.echo(f"full-data run: data.relabel, every suggestion accepted: {int(hit.sum())} training labels changed "
              f"(suspects of the mean of the pair models that never saw each row's fold)")
    return replace(fr, targets=targets, counts=dict(fr.counts, relabelled=int(hit.sum())))
