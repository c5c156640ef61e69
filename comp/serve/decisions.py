"""How the served ensemble turns one image's probabilities into its answer, chosen once from the task
(``Task.decision``), so the app asks its decision and never which task it serves.

- ``top``: one class per image (multiclass, ordinal). The ``top_k`` most likely classes, with the Grad-CAM of the
  first; the example mistakes are ``comp analyze``'s most confidently wrong OOF images.
- ``labels``: several labels per image (multilabel). Every label at or over its threshold, decided as ``comp
  ensemble`` decides: the per-class thresholds of the latest ledger row with exactly these members when that row
  applied them (its ``at_least_one`` and ``top_k`` too), else 0.5 for every label. One Grad-CAM row per label;
  the example mistakes are the most confidently missed and false OOF labels.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MAX_CAM_LABELS = 4  # labels: Grad-CAM rows shown per image (the most likely labels over threshold)


def cam_or_why(make) -> tuple[np.ndarray | None, str]:
    """``make()``'s (overlay, note), or (None, why) when Grad-CAM fails: the prediction stands without it."""
    try:
        return make()
    except Exception as e:  # noqa: BLE001 - the prediction stands without its picture
        traceback.print_exc(file=sys.stderr)
        return None, f"Grad-CAM failed ({type(e).__name__}; the server's log has the details)"


def _shown(paths: dict, oof, cfg, i: int) -> str | None:
    """The image path of OOF row ``i`` when the file is there."""
    p = paths.get(oof[cfg.data.id_col].iloc[i])
    return p if isinstance(p, str) and os.path.isfile(p) else None


class TopClasses:
    """One class per image: the ``top_k`` most likely (module docstring)."""

    def __init__(self, exps: list[str], classes: list[str], cfg, task_name: str):
        self.classes = classes

    def widget(self, top_k: int) -> tuple[int, str, str]:
        """(classes the label widget shows, its caption, the Grad-CAM caption)."""
        return min(top_k, len(self.classes)), f"top {top_k}", "Grad-CAM of the top class"

    def note(self) -> str:
        """The info panel's line on how images are decided ('' when there is nothing to add)."""
        return ""

    def answer(self, ens, rgb: np.ndarray, shown: str, top_k: int) -> tuple[dict, np.ndarray | None, str]:
        """({class: probability} of the top ``top_k``, Grad-CAM of the first, status text)."""
        with ens.lock:  # Grad-CAM hooks the shared model: one image at a time
            probs = ens.predict(rgb)
            order = np.argsort(-probs, kind="stable")[:top_k]
            label = {ens.classes[i]: float(probs[i]) for i in order}
            heat, note = cam_or_why(lambda: ens.grad_cam(rgb, int(order[0])))
        return label, heat, f"{shown}: **{ens.classes[order[0]]}** ({probs[order[0]]:.6f}). {note}"

    def mistakes(self, cfg, oof, classes: list[str], paths: dict, n: int) -> list[tuple[str, str]]:
        """The most confidently wrong OOF images as (path, caption), comp analyze's ranking."""
        from comp.reports.analyze import confident_wrong
        from comp.reports.oof_run import oof_arrays

        classes, y, probs = oof_arrays(cfg, oof, classes)
        out = []
        for i in confident_wrong(y, probs, n):
            p = _shown(paths, oof, cfg, i)
            if p:
                out.append((p, f"true {classes[y[i]]}, OOF said {classes[probs[i].argmax()]} ({probs[i].max():.2f})"))
        return out


@dataclass
class LabelRule:
    """How a multi-label ensemble turns probabilities into labels, and where that came from."""

    thresholds: np.ndarray
    at_least_one: bool = False
    top_k: int | None = None
    source: str = "0.5 for every label"


def ledger_rule(exps: list[str], classes: list[str], cfg, task_name: str, path: str | Path | None = None
                ) -> LabelRule:
    """The thresholds of the latest ledger row of ``task_name`` whose members are exactly ``exps`` and that applied
    its cross-validated thresholds; else 0.5 (with ``infer.at_least_one`` / ``infer.top_k``)."""
    from comp.infer import ledger

    rule = LabelRule(np.full(len(classes), 0.5), cfg.infer.at_least_one, cfg.infer.top_k)
    table = ledger.read(path or ledger.LEDGER)
    for _, row in table.iloc[::-1].iterrows():
        members, _ = ledger.members(row)
        raw = row.get("options")
        opts = json.loads(raw) if isinstance(raw, str) and raw else {}
        if sorted(members) != sorted(exps) or opts.get("task") != task_name:  # a row these models could have made
            continue
        th = opts.get("thresholds") or {}
        rule.at_least_one, rule.top_k = bool(opts.get("at_least_one", False)), opts.get("top_k")
        if th.get("applied") and set(th.get("values", {})) == set(classes):
            rule.thresholds = np.array([float(th["values"][c]) for c in classes])
            rule.source = (f"tuned per label (cross-validated {th.get('cv')} vs {th.get('plain')} at 0.5), "
                           f"submissions/ledger.csv row '{row['name']}'")
        else:
            rule.source = f"0.5 for every label (ledger row '{row['name']}' did not apply tuned thresholds)"
        break
    return rule


class LabelsOverThresholds:
    """Several labels per image: every label at or over its threshold (module docstring)."""

    def __init__(self, exps: list[str], classes: list[str], cfg, task_name: str):
        self.classes = classes
        self.rule = ledger_rule(exps, classes, cfg, task_name)

    def widget(self, top_k: int) -> tuple[int, str, str]:
        return len(self.classes), "labels over their thresholds", "Grad-CAM of each label"

    def note(self) -> str:
        return f"\nMulti-label: every label at or over its threshold; thresholds: {self.rule.source}."

    def labels(self, probs: np.ndarray) -> list[int]:
        """The labels at or over their thresholds (``self.rule``), most likely first."""
        from comp.tasks.thresholds import decide

        r = self.rule
        bits = decide(probs[None], r.thresholds, r.at_least_one, r.top_k)[0]
        return sorted(np.flatnonzero(bits).tolist(), key=lambda c: (-probs[c], c))

    def answer(self, ens, rgb: np.ndarray, shown: str, top_k: int) -> tuple[dict, np.ndarray | None, str]:
        """({label: probability} of every label at or over its threshold, the Grad-CAM of each, status naming each
        label with its probability and threshold, and where the thresholds came from)."""
        with ens.lock:
            probs = ens.predict(rgb)
            chosen = self.labels(probs)
            heat, note = cam_or_why(lambda: ens.grad_cam_labels(rgb, chosen[:MAX_CAM_LABELS]))
        th = self.rule.thresholds
        label = {ens.classes[c]: float(probs[c]) for c in chosen}
        said = ", ".join(f"**{ens.classes[c]}** ({probs[c]:.4f} >= {th[c]:.2f})" for c in chosen) or "**no label**"
        return label, heat, f"{shown}: {said}; thresholds: {self.rule.source}. {note}"

    def mistakes(self, cfg, oof, classes: list[str], paths: dict, n: int) -> list[tuple[str, str]]:
        """The most confidently missed and false OOF labels (comp analyze's galleries), alternating."""
        from comp.reports.analyze_multilabel import confident_label_errors
        from comp.reports.oof_run import oof_arrays

        classes, y, probs = oof_arrays(cfg, oof, classes)
        missed, false = confident_label_errors(y, probs, n)
        both = [x for pair in zip(missed, false) for x in pair] + missed[len(false):] + false[len(missed):]
        out = []
        for (i, c) in both[:n]:
            p = _shown(paths, oof, cfg, i)
            if p:
                what = "missed" if y[i, c] else "false"
                out.append((p, f"{what} label {classes[c]} (OOF {probs[i, c]:.2f}), true: "
                               f"{oof[cfg.data.label_col].iloc[i]}"))
        return out


DECISIONS = {"top": TopClasses, "labels": LabelsOverThresholds}  # Task.decision -> how the app decides


def decision_of(task, exps: list[str], classes: list[str], cfg):
    """The decision of a served ensemble of ``exps`` trained for ``task``."""
    return DECISIONS[task.decision](exps, classes, cfg, task.name)
