"""An experiment's fold ensemble, or a blend of experiments, loaded once and applied to one image at a time.

This is what ``comp app`` serves. It computes what ``comp predict`` computes for a test image: the image is
decoded by the shared loader (:func:`comp.images.load_rgb`, so the same files are refused as by ``comp check``;
a large JPEG at reduced size for the largest fold input, as ``comp predict`` decodes it), resized to each fold
model's input size and resize mode, normalised with the fold's mean/std, seen through the
experiment's TTA views (``runs/E/predict.json``'s test views, else ``infer.tta``), softmaxed and averaged over
views, then folds. Several experiments are blended with the weights and method of the latest
``submissions/ledger.csv`` row whose members are exactly those experiments (equal weights when there is none).

    >>> ens = Ensemble.load("comp.yaml", ["base"])
    >>> probs = ens.predict(load_rgb("x.png"))          # (C,), in ens.classes order
    >>> heat, note = ens.grad_cam(load_rgb("x.png"))   # overlay of the top class, or (None, why)

A multi-label run (its folds' ``task: multilabel``) is served with sigmoids instead of softmaxes (averaged the
same way; several experiments by the blend's weighted mean) and decided as ``comp ensemble`` decides: every label
at or over its threshold, the per-class thresholds of the latest ledger row with exactly these members when that
row applied them (its ``at_least_one`` and ``top_k`` too), else 0.5 for every label
(``Ensemble.decision``, comp.serve.decisions; :meth:`Ensemble.grad_cam_labels`).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml

from comp.config import Config, load_config
from comp.data.competition import DataError
from comp.data.images import ImageProblem, load_rgb
from comp.data.preprocess import resize
from comp.infer.models import FoldModel, find_fold_models, load_model
from comp.infer.tta import check_views, create_views
from comp.runs import run_dir
from comp.serve.decisions import decision_of
from comp.tasks import task_of


@dataclass
class Member:
    """One experiment: its fold models (loaded), TTA views and blend weight."""

    exp: str
    cfg: Config
    folds: list[FoldModel]
    models: list[torch.nn.Module]
    views: list[str]
    weight: float = 1.0
    run_config: dict = field(default_factory=dict)  # runs/E/config.yaml
    cv_macro_f1: float | None = None  # of runs/E/oof.csv's argmax
    cv_score: float | None = None  # data.metric of runs/E/oof.csv

    @property
    def classes(self) -> list[str]:
        return list(self.folds[0].meta["classes"])


def experiment_views(cfg: Config, run: Path) -> list[str]:
    """The views ``comp predict`` last used for the test (runs/E/predict.json), else ``infer.tta``."""
    info = run / "predict.json"
    if info.exists():
        views = json.loads(info.read_text(encoding="utf-8")).get("test_views")
        if views:
            return check_views(views)
    return check_views(cfg.infer.tta)


def oof_macro_f1(cfg: Config, run: Path, classes: list[str]) -> float | None:
    """Macro F1 of the argmax of ``runs/E/oof.csv`` (None before every fold is done)."""
    return oof_scores(cfg, run, classes)[0]


def oof_scores(cfg: Config, run: Path, classes: list[str]) -> tuple[float | None, float | None]:
    """(macro F1 of the argmax, data.metric) of ``runs/E/oof.csv``; (None, None) before every fold is done."""
    from comp.reports.oof_run import oof_arrays
    from comp.runs import oof_cv, read_oof

    path = run / "oof.csv"
    if not path.exists():
        return None, None
    oof = read_oof(path, cfg)
    oof_arrays(cfg, oof, classes)  # its checks: columns and labels
    cv = oof_cv(oof, cfg.data.label_col, classes, cfg.data.metric, task=task_of(cfg))
    return cv.macro_f1, cv.score


def ledger_weights(exps: list[str], path: str | Path | None = None) -> tuple[list[float], str, dict]:
    """(weights in ``exps`` order, where they came from, the ledger row) for a blend of ``exps``."""
    from comp.infer import ledger

    if len(exps) == 1:
        return [1.0], "one experiment", {}
    table = ledger.read(path or ledger.LEDGER)
    for _, row in table.iloc[::-1].iterrows():
        members, weights = ledger.members(row)
        if sorted(members) == sorted(exps) and len(members) == len(exps):
            w = dict(zip(members, weights))
            if sum(w.values()) > 0:
                return [w[e] for e in exps], f"submissions/ledger.csv row '{row['name']}' ({row['time']})", dict(row)
    return [1.0 / len(exps)] * len(exps), "equal (no submissions/ledger.csv row with exactly these members)", {}


class Ensemble:
    """Fold models of one or more experiments, loaded once (see the module docstring)."""

    def __init__(self, members: list[Member], weight_source: str = "", method: str = "mean",
                 ledger_row: dict | None = None, device: torch.device | str = "cpu"):
        if not members:
            raise ValueError("an ensemble needs at least one experiment")
        classes = members[0].classes
        for m in members[1:]:
            if m.classes != classes:
                raise DataError(f"experiments {members[0].exp} and {m.exp} have different classes; blend "
                                "experiments trained on the same data")
        self.members = members
        self.classes = classes
        self.weight_source = weight_source
        self.method = method if method in ("mean", "geometric") else "mean"
        self.method_note = "" if method == self.method else f"the ledger's method {method!r} needs a whole test " \
            "set (ranks); one image is blended with 'mean'"
        self.ledger_row = ledger_row or {}
        self.device = torch.device(device)
        self.lock = threading.Lock()  # for callers that mix predict and grad_cam across threads (the app)
        self.max_pixels = members[0].cfg.data.max_pixels
        # JPEGs are decoded for the largest fold input (as comp predict does for each size): every resize shrinks.
        self.input_side = max(fm.size for m in members for fm in m.folds)
        self.task = members[0].folds[0].task  # as trained (model.json)
        # the top classes, or the labels over their thresholds (comp.serve.decisions)
        self.decision = decision_of(self.task, [m.exp for m in members], classes, members[0].cfg)

    @classmethod
    def load(cls, config_path: str | Path, exps: list[str], device: str | None = None) -> Ensemble:
        """Load every fold model of ``exps`` (configs read like any comp command: comp.yaml + configs/E.yaml)."""
        if not exps:
            raise DataError("name at least one experiment: --exp E")
        dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        weights, source, row = ledger_weights(list(exps))
        members = []
        for exp, w in zip(exps, weights):
            cfg = load_config(config_path, exp=exp)
            run = run_dir(exp)
            folds = find_fold_models(run)
            models = [load_model(cfg, fm, dev) for fm in folds]
            rc = run / "config.yaml"
            run_config = yaml.safe_load(rc.read_text(encoding="utf-8")) if rc.exists() else {}
            m = Member(exp, cfg, folds, models, experiment_views(cfg, run), w, run_config or {})
            m.cv_macro_f1, m.cv_score = oof_scores(cfg, run, m.classes)
            members.append(m)
        method = "mean"
        if row:
            method = json.loads(row.get("options") or "{}").get("method", "mean")
        return cls(members, source, method, row, dev)

    # ------------------------------------------------------------ prediction

    def load_image(self, path: str | Path) -> np.ndarray:
        """The upright uint8 RGB image (a large JPEG decoded at reduced size, >= ``input_side``), or ImageProblem
        (as ``comp check`` reports it)."""
        try:
            return load_rgb(path, self.max_pixels, target=self.input_side)
        except ImageProblem:
            raise
        except Exception as e:  # noqa: BLE001 - as comp check: a decoder bug is a corrupt image, not a crash
            raise ImageProblem("corrupt", f"{type(e).__name__}: {e}") from None

    def _inputs(self, rgb: np.ndarray, fm: FoldModel) -> tuple[np.ndarray, torch.Tensor]:
        from comp.data.dataset import to_tensor_batch

        img = resize(rgb, fm.size, fm.resize)
        return img, to_tensor_batch(img[None], fm.meta["mean"], fm.meta["std"]).to(self.device)

    @torch.inference_mode()
    def member_probs(self, rgb: np.ndarray) -> list[np.ndarray]:
        """Per experiment: softmax (multi-label: sigmoid) averaged over its views, then its folds (C,)."""
        out = []
        act = self.task.activation
        for m in self.members:
            fns = create_views(m.views)
            per_fold = []
            for fm, model in zip(m.folds, m.models):
                _, x = self._inputs(rgb, fm)
                per_fold.append(torch.stack([act(model(fn(x)).float())[0] for fn in fns]).mean(0))
            out.append(torch.stack(per_fold).mean(0).cpu().numpy().astype(np.float64))
        return out

    def predict(self, rgb: np.ndarray) -> np.ndarray:
        """Blended class probabilities (C,) of one uint8 RGB image, in ``self.classes`` order."""
        probs = self.member_probs(rgb)
        if len(probs) == 1:
            return probs[0]
        return self.task.blend_probs([p[None] for p in probs], [m.weight for m in self.members], self.method)[0]

    # ------------------------------------------------------------ Grad-CAM

    def cam_model(self) -> tuple[Member, int]:
        """The member and fold index of the fold model the blend weighs most (the member's weight / its number
        of folds; within a member the folds weigh the same, so its first fold)."""
        best = max(range(len(self.members)), key=lambda i: self.members[i].weight / len(self.members[i].folds))
        return self.members[best], 0

    def cam_layer(self) -> tuple[torch.nn.Module | None, str]:
        from comp.reports.cam import find_target_layer

        m, k = self.cam_model()
        return find_target_layer(m.models[k], m.folds[k].size)

    def grad_cam(self, rgb: np.ndarray, target: int | None = None) -> tuple[np.ndarray | None, str]:
        """(model input and its Grad-CAM side by side, what it shows) or (None, why it was skipped)."""
        from comp.reports.cam import grad_cam, overlay

        m, k = self.cam_model()
        fm, model = m.folds[k], m.models[k]
        layer, name = self.cam_layer()
        if layer is None:
            return None, f"Grad-CAM skipped: {fm.meta.get('model_name', m.cfg.model.name)}: {name}"
        if target is None:
            target = int(self.predict(rgb).argmax())
        img, x = self._inputs(rgb, fm)
        with torch.enable_grad():
            mask = grad_cam(model, x, [target], layer)[0]
        return overlay(img, mask, side=224), (f"Grad-CAM of '{self.classes[target]}' from {m.exp} fold {fm.fold} "
                                              f"(layer {name}); left: the model input, right: where it looks")

    # ------------------------------------------------------------ multi-label

    def grad_cam_labels(self, rgb: np.ndarray, labels: list[int], side: int = 160
                        ) -> tuple[np.ndarray | None, str]:
        """(one row per label: the model input and that label's Grad-CAM, stacked) or (None, why)."""
        from comp.reports.cam import grad_cam_labels, overlay

        m, k = self.cam_model()
        fm, model = m.folds[k], m.models[k]
        layer, name = self.cam_layer()
        if layer is None:
            return None, f"Grad-CAM skipped: {fm.meta.get('model_name', m.cfg.model.name)}: {name}"
        if not labels:
            return None, "no label over its threshold, so no Grad-CAM"
        img, x = self._inputs(rgb, fm)
        with torch.enable_grad():
            masks = grad_cam_labels(model, x, labels, layer)
        rows = [overlay(img, mk, side=side) for mk in masks]
        return np.concatenate(rows, axis=0), (
            f"Grad-CAM per label from {m.exp} fold {fm.fold} (layer {name}), top to bottom: "
            + ", ".join(f"'{self.classes[c]}'" for c in labels) + "; left: the model input, right: where it looks")
