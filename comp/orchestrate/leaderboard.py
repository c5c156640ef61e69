"""``comp leaderboard``: every experiment in runs/ in one table, and reports/leaderboard.html with a CV chart.

An experiment is a folder runs/E with a config.yaml (comp train writes it); a search's trials (runs/E-tune/
trial_NNN) are listed when ``trials`` is set. Per experiment: CV (data.metric and macro F1, from runs/E/oof.csv)
and the mean and spread (standard deviation) of the fold scores, model, input size, epochs, loss, augmentation,
trained images/s (mean over its epochs), wall time (sum of its folds' training), parameters (from a fold's
safetensors header, no weights loaded), and the submissions of submissions/ledger.csv that include it with their
CV and any hidden or leaderboard score columns added there.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from comp import runs
from comp.files import write_text
from comp.infer import ledger as ledger_mod
from comp.orchestrate import cv_lb
from comp.reports.page import Report, anchor

LEDGER_BASE = set(ledger_mod.COLUMNS)
SECTIONS = ["overview", "cv-chart", "experiments", "submissions", "cv-vs-public-leaderboard"]


def n_params(path: Path) -> int | None:
    """Parameter count from a safetensors header (8-byte length, JSON), without loading a tensor."""
    try:
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(n))
    except (OSError, ValueError):
        return None
    return int(sum(math.prod(v["shape"]) for k, v in header.items() if k != "__metadata__"))


def _experiments(root: Path, trials: bool) -> list[Path]:
    found = sorted(p.parent for p in root.glob("*/config.yaml"))
    if trials:
        found += sorted(p.parent for p in root.glob("*-tune/trial_*/config.yaml"))
    return found


def experiment_row(rd: Path, root: Path, ledger: pd.DataFrame) -> dict:
    from comp.orchestrate.launch import cv_scores

    cfg = yaml.safe_load((rd / "config.yaml").read_text(encoding="utf-8")) or {}
    exp = rd.relative_to(root).as_posix()
    t, m, a, i = (cfg.get(s, {}) for s in ("train", "model", "augment", "input"))
    folds = sorted(rd.glob("fold_*"), key=lambda p: int(p.name.split("_")[1]))
    scores, secs, ips, params, epochs_run = [], 0.0, [], None, []
    for fd in folds:
        done = fd / "done.json"
        if done.exists():
            d = json.loads(done.read_text(encoding="utf-8"))
            scores.append(float(d["score"]))
            secs += float(d.get("seconds", 0.0))
            epochs_run.append(int(d.get("epochs_run", 0)))
        m_path = fd / "metrics.csv"
        if m_path.exists():
            h = pd.read_csv(m_path)
            if len(h) and "images_per_s" in h:
                ips.append(float(h["images_per_s"].mean()))
        if params is None and (fd / "model.safetensors").exists():
            params = n_params(fd / "model.safetensors")
    aug = a.get("preset", "")
    if a.get("pipeline"):
        aug = "pipeline"
    if a.get("mixup") or a.get("cutmix"):
        aug += f" + mixup {a.get('mixup', 0)}/cutmix {a.get('cutmix', 0)}"
    loss = str(t.get("loss", ""))
    if t.get("label_smoothing"):
        loss += f" (ls {t['label_smoothing']})"
    cv = cv_scores(rd)
    subs = ledger[ledger["members"].str.split(",").apply(lambda ms: exp in ms)] if len(ledger) else ledger
    extra = [c for c in ledger.columns if c not in LEDGER_BASE]
    sub_text = "; ".join(
        f"{r['name']} (cv {r.get('cv_score') or r['cv_macro_f1']}"
        + "".join(f", {c} {r[c]}" for c in extra if str(r[c]).strip()) + ")"
        for _, r in subs.iterrows())
    return {
        "experiment": exp,
        "metric": (cv or {}).get("metric") or (cfg.get("data") or {}).get("metric", "macro_f1"),
        "cv": (cv or {}).get("score"),
        "cv_macro_f1": (cv or {}).get("macro_f1"),
        # a config chosen by comp tune: cv is over the folds the search never saw; this one is over all (optimistic)
        "cv_optimistic": (cv or {}).get("all_folds"),
        "cv_note": (cv or {}).get("note") or "",
        # each fold at the epoch the other folds' curves chose, and how much choosing it on its own rows added
        "cv_fixed_epoch": (cv or {}).get("fixed_epoch"),
        "epoch_optimism": None if (cv or {}).get("fixed_epoch") is None
        else round(float(cv["own_epoch"]) - float(cv["fixed_epoch"]), 5),
        "fold_mean": float(np.mean(scores)) if scores else None,
        "fold_std": float(np.std(scores)) if len(scores) > 1 else None,
        "folds": f"{len(scores)}/{len(folds)}",
        "model": m.get("name", ""),
        "input": i.get("size"),
        "epochs": epochs_text(t),
        "loss": loss,
        "augment": aug,
        "images_per_s": round(float(np.mean(ips)), 1) if ips else None,
        "wall_s": round(secs, 1) if secs else None,
        "params_m": round(params / 1e6, 3) if params else None,
        "submissions": sub_text,
    }


def epochs_text(train: dict):
    """runs/E/config.yaml's train.epochs, or with train.fold_epochs each listed fold's own: "47; fold 1: 46"."""
    per = train.get("fold_epochs") or {}
    if not per:
        return train.get("epochs")
    return f"{train.get('epochs')}; " + ", ".join(f"fold {k}: {n}" for k, n in sorted(per.items()))


def leaderboard(runs_dir: str | Path | None = None, ledger_path: str | Path = "submissions/ledger.csv",
                out: str | Path = "reports/leaderboard.html", trials: bool = False,
                echo: Callable[[str], None] = print, lb_path: str | Path | None = None) -> pd.DataFrame:
    """The table (best CV first), printed and written with a chart to ``out``; returns it. ``attrs['lb']`` holds
    the CV-against-public-leaderboard table (comp.orchestrate.cv_lb), ``attrs['rho']`` and ``attrs['trust']``."""
    root = Path(runs_dir or runs.RUNS_DIR)
    led = ledger_mod.read(ledger_path)
    rows = [experiment_row(rd, root, led) for rd in _experiments(root, trials)]
    df = pd.DataFrame(rows, columns=["experiment", "metric", "cv", "cv_macro_f1", "cv_optimistic", "cv_note",
                                     "cv_fixed_epoch", "epoch_optimism", "fold_mean", "fold_std", "folds",
                                     "model", "input", "epochs", "loss", "augment", "images_per_s", "wall_s",
                                     "params_m", "submissions"])
    lower = {"log_loss"}  # data.metric values where lower is better
    asc = len(df) > 0 and set(df["metric"]) <= lower
    df = df.sort_values(["cv", "fold_mean"], ascending=asc, na_position="last").reset_index(drop=True)
    if df.empty:
        echo(f"no experiments in {root}/ yet (comp train or comp launch writes runs/EXP/)")
    else:
        echo(format_table(df))
    lb_path = Path(lb_path) if lb_path else Path(ledger_path).with_name("lb.csv")
    lb = cv_lb.table(led, ledger_mod.read_lb(lb_path), df)
    rho = cv_lb.rank_correlation(lb)
    trust, why = cv_lb.verdict(lb, rho)
    echo(cv_lb.format_table(lb, rho, why) if len(lb) else why)
    out = Path(out)
    write_page(df, led, out, root, (lb, rho, why))
    echo(f"-> {out}")
    df.attrs.update(lb=lb, rho=rho, trust=trust, why=why)
    return df


def format_table(df: pd.DataFrame) -> str:
    show = df.drop(columns=["submissions", "cv_note"]).copy()
    for c in ("cv", "cv_macro_f1", "cv_optimistic", "cv_fixed_epoch", "epoch_optimism", "fold_mean", "fold_std"):
        show[c] = show[c].map(lambda v: "" if v is None or pd.isna(v) else f"{v:.4f}")
    show = show.fillna("")
    subs = [f"  {r.experiment}: {r.submissions}" for r in df.itertuples() if r.submissions]
    notes = [f"  {r.experiment}: cv over {r.cv_note}; cv_optimistic: all folds" for r in df.itertuples() if r.cv_note]
    return (show.to_string(index=False) + (("\nchosen by a search:\n" + "\n".join(notes)) if notes else "")
            + (("\nsubmissions:\n" + "\n".join(subs)) if subs else ""))


def write_page(df: pd.DataFrame, led: pd.DataFrame, out: Path, root: Path, lb=None) -> Path:
    from comp.reports.page import pyplot

    out.parent.mkdir(parents=True, exist_ok=True)
    chart = out.with_name(out.stem + "_cv.png")
    plt = pyplot()
    scored = df[df["cv"].notna() | df["fold_mean"].notna()]
    fig, ax = plt.subplots(figsize=(9, max(2.5, 0.45 * len(scored) + 1)))
    if len(scored):
        names = scored["experiment"].tolist()[::-1]
        cv = scored["cv"].astype(float).fillna(scored["fold_mean"].astype(float)).to_numpy()[::-1]
        err = scored["fold_std"].astype(float).fillna(0).to_numpy()[::-1]
        ax.barh(names, cv, xerr=err, color="tab:blue", alpha=0.8, capsize=3)
        for y, v in enumerate(cv):
            ax.text(v, y, f" {v:.4f}", va="center", fontsize=9)
        lo = max(0.0, float(np.nanmin(cv - err)) - 0.05)
        ax.set_xlim(lo, float(np.nanmax(cv + err)) * 1.08 + 0.02)
    else:
        ax.text(0.5, 0.5, "no finished experiment yet", ha="center", va="center")
    metrics = ", ".join(sorted(set(scored["metric"]))) or "macro_f1"
    ax.set_xlabel(f"CV {metrics} (bars: spread of the fold scores)")
    ax.set_title("CV per experiment")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    tmp = chart.with_name("." + chart.name + ".tmp.png")
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    tmp.replace(chart)

    rep = Report("comp leaderboard", f"{len(df)} experiments in {root.resolve()}")
    best = df.iloc[0] if len(df) and pd.notna(df.iloc[0]["cv"]) else None
    s = rep.section("Overview", "overview")
    if best is not None:
        s.note(f"best CV: {best['experiment']} ({best['model']}, {best['input']}px) {best['metric']} "
               f"{best['cv']:.4f}", "ok")
    else:
        s.note("no experiment has a CV yet: every fold of an experiment must finish (comp launch --all-folds)")
    s.p("CV is data.metric (and macro F1 beside it) computed on runs/EXP/oof.csv, every fold's out-of-fold "
        "predictions; the fold spread is the standard deviation of the folds' best validation data.metric.")
    rep.section("CV per experiment", "cv-chart").image(chart.name, "CV per experiment",
                                                       "bars: CV (data.metric); whiskers: spread over folds")
    rep.section("Experiments", "experiments").table(df.drop(columns=["submissions"]))
    sub = rep.section("Submissions", "submissions")
    if len(led):
        sub.table(led.drop(columns=[c for c in ("options",) if c in led.columns]))
    else:
        sub.p("no submissions yet (comp ensemble logs each one in submissions/ledger.csv)")
    _lb_section(rep, out, *(lb if lb is not None else (cv_lb.table(led, ledger_mod.read_lb(), df), None, "")))
    assert [x.id for x in rep.sections] == SECTIONS and anchor("Overview") == "overview"
    write_text(out, rep.render())
    return out


def _lb_section(rep: Report, out: Path, lb: pd.DataFrame, rho: float | None, why: str) -> None:
    """CV against the public leaderboard: the verdict, the plot and the table."""
    s = rep.section("CV vs public leaderboard", "cv-vs-public-leaderboard")
    flagged = bool(len(lb)) and bool(lb["beyond_spread"].eq(True).any())
    s.note(why or "no leaderboard scores yet: comp ledger lb NAME SCORE", "note" if flagged or not len(lb) else "ok")
    if rho is not None:
        s.p(f"Rank correlation (Spearman) of CV and public score over {len(lb)} submissions: {rho:+.2f}.")
    chart = cv_lb.plot(lb, out.with_name(out.stem + "_lb.png"))
    s.image(chart.name, "CV against the public leaderboard", "dashed: public = CV; whiskers: two fold spreads")
    if len(lb):
        s.table(lb)
