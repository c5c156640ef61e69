"""CV beside the public leaderboard: per submission the CV, the public (and private) score ``comp ledger lb``
recorded, their gap and the fold spread of its members; over submissions the rank correlation of CV and public
score, a plot of one against the other, and a verdict on which figure to trust.

The fold spread of a submission is the weighted mean of its members' fold standard deviations (runs/E's folds'
best validation scores): how much a score moves between equally sized parts of the data. A public score further
than two spreads from the CV is more than that noise explains.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from comp.infer import ledger as ledger_mod

COLUMNS = ["submission", "metric", "cv", "public", "private", "gap", "private_gap", "spread", "beyond_spread"]


def _spread(row, stds: dict) -> float | None:
    members, weights = ledger_mod.members(row)
    pairs = [(stds.get(m), w) for m, w in zip(members, weights)]
    pairs = [(s, w) for s, w in pairs if s is not None and not pd.isna(s)]
    if not pairs or sum(w for _, w in pairs) <= 0:
        return None
    return float(sum(s * w for s, w in pairs) / sum(w for _, w in pairs))


def _num(v) -> float | None:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return x if np.isfinite(x) else None


def table(led: pd.DataFrame, lb: pd.DataFrame, experiments: pd.DataFrame) -> pd.DataFrame:
    """One row per ledger submission (its latest row) that has a recorded public score."""
    stds = dict(zip(experiments["experiment"], experiments["fold_std"])) if len(experiments) else {}
    scores = {r["name"]: r for _, r in lb.iterrows()}
    rows = []
    for _, r in led.drop_duplicates("name", keep="last").iterrows():
        if r["name"] not in scores:
            continue
        cv, pub = _num(r.get("cv_score") or r["cv_macro_f1"]), _num(scores[r["name"]]["public"])
        priv = _num(scores[r["name"]]["private"])
        spread = _spread(r, stds)
        gap = None if cv is None or pub is None else pub - cv
        rows.append({"submission": r["name"], "metric": r.get("metric") or "macro_f1", "cv": cv, "public": pub,
                     "private": priv, "gap": gap, "private_gap": None if priv is None or cv is None else priv - cv,
                     "spread": spread,
                     "beyond_spread": None if gap is None or not spread else bool(abs(gap) > 2 * spread)})
    return pd.DataFrame(rows, columns=COLUMNS)


def rank_correlation(t: pd.DataFrame) -> float | None:
    """Spearman's rank correlation of CV and public score (None below three submissions or with ties only)."""
    both = t.dropna(subset=["cv", "public"])
    if len(both) < 3 or both["cv"].nunique() < 2 or both["public"].nunique() < 2:
        return None
    return float(both["cv"].rank().corr(both["public"].rank()))


def verdict(t: pd.DataFrame, rho: float | None) -> tuple[str, str]:
    """(which figure to trust: 'cv' | 'cv, expect an offset' | '', why) for the table."""
    if t.empty:
        return "", "no leaderboard scores yet: record what Kaggle shows with comp ledger lb NAME SCORE"
    ranked = "" if rho is None else f"; CV and public rank the submissions with correlation {rho:+.2f}"
    flagged = t[t["beyond_spread"] == True]  # noqa: E712 (None: no spread known)
    if flagged.empty:
        return "cv", (f"every public score is within two fold spreads of its CV{ranked}: the CV is consistent with "
                      f"the leaderboard; keep choosing by CV")
    gaps, spreads = t["gap"].dropna(), t["spread"].dropna()
    typical = float(np.median(spreads)) if len(spreads) else 0.0
    if len(gaps) >= 2 and (np.sign(gaps).nunique() == 1) and float(gaps.max() - gaps.min()) <= 2 * typical:
        return "cv, expect an offset", (
            f"every public score sits {float(gaps.median()):+.4f} from its CV, the same for each within the fold "
            f"spread: the test differs from train by a constant (a shift in classes or images), not by noise"
            f"{ranked}. Choose by CV and expect the leaderboard's level; for a shift in class mix try comp ensemble "
            f"--label-shift auto")
    opposite = rho is not None and rho < 0
    return "cv", (
        f"{len(flagged)} of {len(t)} public scores differ from their CV by more than two fold spreads, and not by "
        f"one offset{ranked}. The public leaderboard scores a slice of the test (often 20-30%), so it is noisier "
        f"than the CV over every training row: trust the CV"
        + (", but the ranks run opposite: check the folds for leaks (groups, near-duplicates: comp eda) first"
           if opposite else ""))


def plot(t: pd.DataFrame, out: Path) -> Path:
    """CV (x) against public score (y), whiskers of two fold spreads, and the line where they are equal."""
    from comp.reports.page import pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 5))
    both = t.dropna(subset=["cv", "public"])
    if len(both):
        err = 2 * both["spread"].astype(float).fillna(0).to_numpy()
        ax.errorbar(both["cv"], both["public"], xerr=err, fmt="o", capsize=3, color="tab:blue")
        for _, r in both.iterrows():
            ax.annotate(r["submission"], (r["cv"], r["public"]), fontsize=8, xytext=(4, 4), textcoords="offset points")
        lo = float(min(both["cv"].min(), both["public"].min()))
        hi = float(max(both["cv"].max(), both["public"].max()))
        pad = 0.05 * (hi - lo or 1)
        ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], "--", color="grey", lw=1, label="public = CV")
        ax.legend(loc="best", fontsize=8)
    else:
        ax.text(0.5, 0.5, "no public scores yet (comp ledger lb NAME SCORE)", ha="center", va="center")
    metric = ", ".join(sorted(set(t["metric"]))) or "score"
    ax.set_xlabel(f"CV {metric} (whiskers: two fold spreads)")
    ax.set_ylabel(f"public leaderboard {metric}")
    ax.set_title("CV against the public leaderboard")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    tmp = out.with_name("." + out.name + ".tmp.png")
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    tmp.replace(out)
    return out


def format_table(t: pd.DataFrame, rho: float | None, why: str) -> str:
    show = t.copy()
    for c in ("cv", "public", "private", "gap", "private_gap", "spread"):
        show[c] = show[c].map(lambda v: "" if v is None or pd.isna(v) else f"{v:.4f}")
    show["beyond_spread"] = show["beyond_spread"].map(lambda v: "" if v is None or pd.isna(v) else ("yes" if v else
                                                                                                    "no"))
    head = "CV against the public leaderboard" + ("" if rho is None else f" (rank correlation {rho:+.2f})")
    return f"{head}:\n{show.to_string(index=False)}\n{why}"
