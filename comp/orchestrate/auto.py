"""``comp auto --budget 20m``: from a competition folder (comp.yaml) to ``submissions/auto.csv`` within a time budget.

    plan      fitted input size, a throughput probe of the candidate models, the stages' time boxes (auto_plan)
    check     comp check (bad rows are left out of every later stage when there are any)
    folds     comp folds (an existing folds file is kept)
    search    comp tune with ASHA on fold 0 over input size, model, lr, augmentation, loss (and the balanced
              sampler when classes are imbalanced), auto's measured defaults its first trial; Ray's time box stops
              it; skipped where it affords under auto_plan.MIN_TRIALS trials
    best      the best trial's config (else auto's measured defaults, start_params) on every fold: runs/auto-a
    second    the best trial that differs in model, size or loss, on every fold (runs/auto-b), when there is time
    refit     comp train --full of each member, when there is time
    predict   comp predict with TTA, test and OOF (and --use both after a refit)
    ensemble  comp ensemble --weights auto with decision tuning -> submissions/auto.csv + its ledger row
    report    the table of stages, reports/auto/index.html

Every stage is comp's own library call, so its files are the usual ones. ``runs/auto/plan.json`` holds the plan and
the progress (written atomically after every change); ``resume`` continues after a kill and never redoes a stage
marked done. Honest CV: the search chose on fold 0 only, so the CV reported first is over the other folds; the
all-folds figure is printed beside it, labelled optimistic. Without a search nothing was chosen on a fold, and
every fold scores the CV.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from comp import runs
from comp.config import ConfigError, load_config, read_yaml
from comp.files import write_text
from comp.orchestrate import auto_plan as ap
from comp.tasks import task_of
from comp.train.probe import channels_last_gain, probe_models

AUTO_DIR = runs.RUNS_DIR / "auto"
SEARCH_EXP = "auto-search"
MEMBERS = ("auto-a", "auto-b")
SEARCH_FOLDS = [0]
CL_GAIN_MIN = 1.05  # channels_last is auto's choice when the probe trains at least this x faster with it
STEM_COST_MAX = 1.5  # the sharp small-image stem is auto's choice only when it costs at most this x the own stem
TTA = ["identity", "hflip"]
SUBMISSION = "auto"
MAX_REFIT_SEEDS = 3  # the time the estimates left after the refit buys more seeds of it, up to this many


class StageCut(Exception):
    """A stage ran out of its time box; what it finished stays, the stage is marked cut."""


@dataclass
class Auto:
    """One run of comp auto: where it writes, its clock, its plan and choices (runs/auto/plan.json)."""

    config_path: Path
    budget_s: float
    gpus: int | None
    address: str | None
    echo: Callable[[str], None]
    plan: ap.Plan | None = None
    choices: dict = field(default_factory=dict)
    spent_before: float = 0.0  # seconds of earlier invocations (--resume)
    t0: float = field(default_factory=time.perf_counter)

    def elapsed(self) -> float:
        return self.spent_before + time.perf_counter() - self.t0

    def left(self) -> float:
        return self.budget_s * ap.MARGIN - self.elapsed()

    def grace_left(self) -> float:
        """Seconds to the budget + ap.OVERRUN: what an optional stage planned in may still use when the stages before
        it overran their boxes (the rest of the +10% is for its own estimate's error)."""
        return self.budget_s * (1 + ap.OVERRUN) - self.elapsed()

    def tail_s(self) -> float:
        """Seconds the stages after training still need (predict, ensemble, report)."""
        return sum(self.plan.stage(n).planned_s for n in ("predict", "ensemble", "report"))

    def save(self) -> None:
        d = {"budget_s": self.budget_s, "gpus": self.gpus, "spent_s": round(self.elapsed(), 2),
             "plan": self.plan.to_dict(), "choices": self.choices}
        write_text(AUTO_DIR / "plan.json", json.dumps(d, indent=2, default=str))

    def cfg(self, exp: str | None = None, extra=()):
        return load_config(self.config_path, exp=exp, overrides=[*self.choices.get("base", []), *extra])


def process_age() -> float:
    """Seconds since this process started (its imports count against the budget too); 0 where unknown."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        import os

        return max(0.0, uptime - ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return 0.0


def parse_budget(text: str) -> float:
    """'20m', '90s', '1h', '1.5h' or a number of seconds -> seconds."""
    t = str(text).strip().lower()
    units = {"s": 1, "m": 60, "h": 3600}
    try:
        return float(t[:-1]) * units[t[-1]] if t and t[-1] in units else float(t)
    except ValueError:
        raise ConfigError(f"--budget {text!r}: expected a time such as 20m, 90s or 1h") from None


def user_keys(config_path: Path) -> set[str]:
    """``section.key`` of every experiment key comp.yaml sets: auto never overrides or searches them."""
    raw = read_yaml(config_path)
    return {f"{s}.{k}" for s, v in raw.items() if s != "data" and isinstance(v, dict) for k in v}


# ---------------------------------------------------------------- start, resume


def run_auto(config_path: str | Path = "comp.yaml", budget: str | float = "20m", gpus: int | None = None,
             address: str | None = None, resume: bool = False, overwrite: bool = False,
             models: list[str] | None = None, echo: Callable[[str], None] = print, from_process_start: bool = False
             ) -> dict:
    """Run (or with ``resume`` continue) comp auto; returns the final summary (see the module docstring).
    ``from_process_start``: the clock started when this process did (the CLI: its imports count too)."""
    t0 = time.perf_counter() - (process_age() if from_process_start else 0.0)
    config_path = Path(config_path).resolve()
    budget_s = parse_budget(budget) if isinstance(budget, str) else float(budget)
    if budget_s < 30:
        raise ConfigError(f"--budget {budget}: at least 30s (a plan, one short training and a submission)")
    if resume and overwrite:
        raise ConfigError("--resume continues comp auto and --overwrite starts it again: pass one of them")
    if not resume and not overwrite and _same_budget(budget_s):
        echo(f"[auto] {AUTO_DIR / 'plan.json'} holds a run with this budget: the same command again continues it "
             f"(done stages are kept; --overwrite starts again)")
        resume = True
    a = _resume(config_path, echo, t0) if resume else _start(config_path, budget_s, gpus, address, overwrite, models,
                                                            echo, t0)
    stages = {"check": _check, "folds": _folds, "search": _search, "best": _best, "second": _second,
              "refit": _refit, "predict": _predict, "ensemble": _ensemble, "report": _report}
    for st in a.plan.stages:
        if st.state in ("done", "skipped", "cut"):
            if resume:
                echo(f"[auto] {st.name}: {st.state} earlier ({st.spent_s:.0f}s); not redone")
            continue
        _run_stage(a, st, stages[st.name])
    echo(format_summary(a))
    return {"plan": a.plan.to_dict(), "choices": a.choices, "spent_s": a.elapsed(), "budget_s": a.budget_s}


def _same_budget(budget_s: float) -> bool:
    """runs/auto/plan.json exists and was planned for ``budget_s`` seconds."""
    try:
        return float(json.loads((AUTO_DIR / "plan.json").read_text(encoding="utf-8"))["budget_s"]) == budget_s
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _start(config_path: Path, budget_s: float, gpus, address, overwrite: bool, models, echo, t0: float) -> Auto:
    if (AUTO_DIR / "plan.json").exists() and not overwrite:
        raise ConfigError(f"{AUTO_DIR / 'plan.json'} holds an earlier comp auto run: pass --resume to continue it, "
                          f"or --overwrite to start again (removes runs/auto*, configs/auto-*.yaml)")
    if overwrite:
        for d in [AUTO_DIR, runs.RUNS_DIR / f"{SEARCH_EXP}-tune", *(runs.RUNS_DIR / m for m in MEMBERS)]:
            shutil.rmtree(d, ignore_errors=True)
        for f in Path(config_path.parent / "configs").glob("auto-*.yaml"):
            f.unlink()
    sub = Path("submissions") / f"{SUBMISSION}.csv"
    if sub.exists() and not overwrite:
        raise ConfigError(f"{sub} exists: pass --overwrite to replace it (and start comp auto again)")
    a = Auto(config_path, budget_s, gpus, address, echo, t0=t0)
    a.plan, a.choices = _make_plan(a, models)
    echo(ap.format_plan(a.plan, budget_s))
    a.save()
    return a


def _resume(config_path: Path, echo, t0: float) -> Auto:
    path = AUTO_DIR / "plan.json"
    if not path.exists():
        raise ConfigError(f"--resume: {path} not found; there is no comp auto run to continue (drop --resume)")
    d = json.loads(path.read_text(encoding="utf-8"))
    a = Auto(config_path, float(d["budget_s"]), d.get("gpus"), None, echo, ap.Plan.from_dict(d["plan"]),
             d["choices"], spent_before=float(d["spent_s"]), t0=t0)
    echo(f"[auto] resuming: {a.spent_before:.0f}s of {a.budget_s:.0f}s spent")
    return a


def _make_plan(a: Auto, models: list[str] | None) -> tuple[ap.Plan, dict]:
    """The fitted base config, the candidate models (pretrained ones where weights are found), the input size, the
    probe of the candidates and the plan (the 'plan' stage)."""
    import torch

    from comp.data.competition import load_test, load_train
    from comp.data.sizes import FIT_MIN_SIDE
    from comp.train.defaults import fit_defaults

    cfg = load_config(a.config_path)
    mine = user_keys(a.config_path)
    train = load_train(cfg)
    n_test = len(load_test(cfg)) if cfg.data.sample_submission or cfg.data.test_csv else 0
    fit_defaults(cfg, lambda: train["path"].tolist(), echo=a.echo, probe=False)
    counts = train["label"].value_counts()
    gpus = a.gpus if a.gpus is not None else torch.cuda.device_count()
    base = ["infer.tta=[identity,hflip]"]
    if "train.label_smoothing" not in mine:
        base.append("train.label_smoothing=0.1")
    cands, tuned, models_why = candidates(cfg, mine, gpus, models)
    c = {"n_classes": len(counts), "n_train": len(train), "n_test": n_test, "gpus": gpus, "tuned": tuned,
         "user_keys": sorted(mine), "t_img": _decode_seconds(train["path"].tolist()[:20]), "models_why": models_why}
    a.echo(f"[auto] models: {models_why}")
    if cfg.input.size > FIT_MIN_SIDE and "input.size" not in mine:
        cfg, base = _fit_size(a, base, cands, c, top=cfg.input.size)
    else:
        cfg, base = _small_images(a, base, cands, c, cfg)
    probed = c.get("probed", {}).get(str(cfg.input.size))
    if probed and cands == [c["probed"]["model"]]:  # the size's probe of the one candidate: not probed twice
        train_ips, infer_ips = {cands[0]: probed[0]}, {cands[0]: probed[1]}
    else:
        train_ips, infer_ips = probe_models(cfg, cands, len(counts), _probe_batch(cfg))
    inp = _inputs(a, c, cfg.folds.n_splits, train_ips, infer_ips)
    inp = replace(inp, infer_scale=((cfg.infer.size or cfg.input.size) / cfg.input.size) ** 2)
    folds, folds_why = (cfg.folds.n_splits, "folds.n_splits from comp.yaml") if "folds.n_splits" in mine \
        else ap.fold_count(inp)
    plan = ap.make_plan(replace(inp, n_splits=folds))
    plan.stage("folds").why = folds_why
    c.update(base=base, n_splits=folds, size=cfg.input.size, imbalance=round(float(counts.max() / max(1, counts.min())),
             2), train_ips=train_ips, infer_ips=infer_ips, folds_why=folds_why)
    plan.stage("plan").spent_s = round(a.elapsed(), 1)
    plan.stage("plan").chose = (f"input.size {cfg.input.size}" + "".join(
        f"; {c[k]}" for k in ("size_why", "stem_why", "layout_why", "batch_why") if c.get(k))
        + "; " + ", ".join(f"{m} {v:.0f} img/s" for m, v in train_ips.items()))
    return plan, c


def _inputs(a: Auto, c: dict, folds: int, train_ips: dict, infer_ips: dict) -> ap.PlanInputs:
    return ap.PlanInputs(a.budget_s, a.elapsed(), c["n_train"], c["n_test"], folds, train_ips, infer_ips,
                         has_ray=importlib.util.find_spec("ray") is not None, gpus=c["gpus"], views=len(TTA),
                         decode_s_per_image=c["t_img"])


def _probe_batch(cfg) -> int:
    """The probe runs at the training batch (a CPU's images/s at 32 differ from those at 128 by 2x); capped at 128
    on a GPU, where it measures images/s, not memory."""
    return min(128, cfg.train.batch_size or 64)


def candidates(cfg, mine: set, gpus: int, models: list[str] | None) -> tuple[list[str], bool, str]:
    """(models, fine-tuning, why): the pretrained candidates whose weights are found (the hub cache, or a hub that
    answers), fastest first; else the from-scratch ones. --models or comp.yaml's model.name win."""
    from comp import weights

    if models or "model.name" in mine:
        names = models or [cfg.model.name]
        tuned = all(weights.resolve(m, cfg.model.pretrained, None).pretrained for m in names)
        return names, tuned, f"{', '.join(names)} (as asked)"
    pool = ap.PRETRAINED_GPU if gpus else ap.PRETRAINED_CPU
    found = {m: weights.resolve(m, "auto", None) for m in pool} if "model.pretrained" not in mine \
        or cfg.model.pretrained else {}
    have = [m for m, w in found.items() if w.pretrained]
    if have:
        none = [m for m in pool if m not in have]
        return have, True, (f"fine-tuning {', '.join(f'{m} ({found[m].why})' for m in have)}"
                            + (f"; no weights for {', '.join(none)}" if none else "")
                            + f"; {ap.FINETUNE_WHY}")
    scratch = ap.MODELS_GPU if gpus else ap.MODELS_CPU
    return scratch, False, (f"from scratch: {', '.join(scratch)} (no weights found for {', '.join(pool)}: "
                            f"{found[pool[0]].why if found else 'model.pretrained is false'})")


def _fit_size(a: Auto, base: list[str], cands: list[str], c: dict, top: int):
    """Large images: the layout and (CPU) batch from probes at the reference size, then the largest candidate size
    whose folds afford auto_plan's minimum epochs (fine-tuning or from scratch) within the plan, probed smallest first
    (comp.train.fit's sizes); a pretrained model predicts above it (auto_plan.FIXRES). Returns (cfg, base)."""
    from comp.train import fit, probe

    mine, n = set(c["user_keys"]), c["n_classes"]
    sizes = list(range(fit.FIRST, top + 1, fit.STEP)) or [top]
    ref = next((s for s in sizes if s >= fit.REF_SIZE), sizes[-1])
    cfg = load_config(a.config_path, overrides=[*base, f"input.size={ref}"])
    fit.fit_layout(cfg, n, ref)
    if not c["gpus"] and "train.batch_size" not in mine:
        fit.fit_cpu_batch(cfg, n, ref, c["n_train"] * 2 // 3)
    base += [f"train.channels_last={str(bool(cfg.train.channels_last)).lower()}"] * ("train.channels_last" not in mine)
    base += [f"train.batch_size={cfg.train.batch_size}"] * bool("train.batch_size" not in mine and cfg.train.batch_size)
    c["layout_why"], c["batch_why"] = (cfg.derived.get(k, "") for k in ("train.channels_last", "train.batch_size"))
    batch, need = _probe_batch(cfg), ap.MIN_FOLD_EPOCHS["finetune" if c["tuned"] else "scratch"]
    ref_train, ref_infer = probe.probe_models(cfg, cands, n, batch)
    fast = max(ref_train, key=ref_train.get)
    rows, c["probed"] = [], {"model": fast}
    folds = cfg.folds.n_splits if "folds.n_splits" in mine else 3
    for s in sizes:
        tr, inf = (ref_train[fast], ref_infer[fast]) if s == ref else \
            probe.probe_model(cfg, fast, n, s, batch, bool(cfg.train.channels_last))
        c["probed"][str(s)] = [tr, inf]
        scale = (ap.fixres_size(s, top) / s) ** 2 if c["tuned"] and "infer.size" not in mine else 1.0
        plan = ap.make_plan(replace(_inputs(a, c, folds, {fast: tr}, {fast: inf}), infer_scale=scale))
        rows.append((s, plan.epochs, plan.epoch_s[fast]))
        if plan.epochs < need:
            break
    fits = [r for r in rows if r[1] >= need]
    size = (fits[-1] if fits else rows[0])[0]
    base.append(f"input.size={size}")
    shown = "; ".join(f"{s}px {e} epochs x {folds} folds at {t:.0f}s a fold epoch" for s, e, t in rows)
    c["size_why"] = (f"the largest size whose folds afford {need} epochs of {fast} here ({shown}); images up to {top}")
    if c["tuned"] and "infer.size" not in mine:
        base.append(f"infer.size={ap.fixres_size(size, top)}")
        c["size_why"] += f"; predicts at {ap.fixres_size(size, top)}px ({ap.FIXRES_WHY})"
    return load_config(a.config_path, overrides=base), base


def _small_images(a: Auto, base: list[str], cands: list[str], c: dict, cfg):
    """Small images (the header size): the sharp stem and channels_last where they pay, the fitted batch."""
    mine, n = set(c["user_keys"]), c["n_classes"]
    base.append(f"input.size={cfg.input.size}")
    if "train.batch_size" not in mine and cfg.train.batch_size:  # the fitted batch: every stage trains at it
        base.append(f"train.batch_size={cfg.train.batch_size}")
    cfg = load_config(a.config_path, overrides=base)
    batch = _probe_batch(cfg)
    train_ips = probe_models(cfg, cands, n, batch)[0]
    c["stem_stride"] = None
    if cfg.input.size <= 64 and "model.stem_stride" not in mine:
        small, c["stem_why"] = _sharp_stem(a, base, cands[0], n, batch, train_ips[cands[0]])
        if small:
            base.append("model.stem_stride=1")
            c["stem_stride"] = 1
            cfg = load_config(a.config_path, overrides=base)
            train_ips = probe_models(cfg, cands, n, batch)[0]
    if "train.channels_last" not in mine:
        cl, c["layout_why"] = _channels_last(a, base, max(train_ips, key=train_ips.get), n, batch)
        base.append(f"train.channels_last={str(cl).lower()}")
    return load_config(a.config_path, overrides=base), base


def _sharp_stem(a: Auto, base: list[str], model: str, n_classes: int, batch: int, own_ips: float) -> tuple[bool, str]:
    """Small images: keep resolution through the stem (``model.stem_stride 1``) only when it costs at most 1.5x the
    model's own stem. At equal compute the cheaper stem's extra epochs won on a 28-px `comp sample` CPU run
    (benchmarks/defaults.py, docs/configuration.md "Small images kept sharp"); on a GPU the sharp stem is often
    nearly free."""
    cfg = load_config(a.config_path, overrides=[*base, "model.stem_stride=1"])
    sharp_ips = probe_models(cfg, [model], n_classes, batch)[0][model]
    ratio = own_ips / max(sharp_ips, 1e-9)
    if ratio <= STEM_COST_MAX:
        return True, f"stem_stride 1 ({model} costs {ratio:.1f}x its own stem here, <= {STEM_COST_MAX}x)"
    return False, (f"the model's own stem ({model} at stem_stride 1 costs {ratio:.1f}x, > {STEM_COST_MAX}x: more "
                   f"epochs of the cheaper stem score better at equal time)")


def _channels_last(a: Auto, base: list[str], model: str, n_classes: int, batch: int) -> tuple[bool, str]:
    """``train.channels_last`` when ``model`` trains at least CL_GAIN_MIN x faster with it, measured with the two
    layouts' steps in turn (probe.channels_last_gain). On 2 CPU cores at 32 px resnet10t trained 1.06-1.10x faster
    channels_last and resnet18 0.95x; on a GPU with bf16 it is usually faster, but not for every model."""
    gain = channels_last_gain(load_config(a.config_path, overrides=base), model, n_classes, batch)
    if gain >= CL_GAIN_MIN:
        return True, f"train.channels_last ({model} trains {gain:.2f}x faster with it here)"
    return False, f"contiguous tensors ({model} trains {gain:.2f}x with channels_last, under {CL_GAIN_MIN}x)"


def _decode_seconds(paths: list[str]) -> float:
    from comp.data.images import load_rgb

    t0 = time.perf_counter()
    for p in paths:
        try:
            load_rgb(p)
        except Exception:  # noqa: BLE001 - comp check reports it
            pass
    return (time.perf_counter() - t0) / max(1, len(paths))


def _run_stage(a: Auto, st: ap.Stage, fn) -> None:
    st.state = "running"
    a.save()
    a.echo(f"[auto] {st.name} (time box {st.planned_s:.0f}s, {a.elapsed():.0f}s of {a.budget_s:.0f}s spent)")
    t0 = time.perf_counter()
    before = st.spent_s
    try:
        said = fn(a, st)
        st.chose = said or st.chose
        st.state = "skipped" if isinstance(said, ap.Skipped) else "done"  # the stage's own verdict, not its prose
    except StageCut as e:
        st.state, st.chose = "cut", f"cut at its time box: {e}"
    finally:
        st.spent_s = round(before + time.perf_counter() - t0, 1)
        a.save()
    a.echo(f"[auto] {st.name}: {st.state} in {st.spent_s:.0f}s: {st.chose}")


# ---------------------------------------------------------------- stages: check, folds, search


def _check(a: Auto, st: ap.Stage) -> str:
    from comp.data.check import run_check

    report = run_check(a.cfg(), out_dir="reports", echo=a.echo, progress=False)
    if report.ok:
        return f"{report.n_rows} rows, {report.n_images} images healthy"
    a.choices["skip_bad"] = True
    return f"{len(report.problems)} problems (reports/check.csv); those rows are left out of every stage"


def _folds(a: Auto, st: ap.Stage) -> str:
    from comp.data.competition import read_folds
    from comp.data.folds import make_folds

    cfg = a.cfg()
    path = Path(cfg.base_dir) / cfg.folds.file
    if not path.exists():
        make_folds(cfg, n_splits=a.choices["n_splits"], skip_bad=a.choices.get("skip_bad", False), echo=a.echo)
        return f"{a.choices['n_splits']} stratified folds -> {cfg.folds.file}"
    have = sorted(read_folds(cfg)["fold"].unique().tolist())
    a.choices["n_splits"] = len(have)
    return f"kept the existing {cfg.folds.file} ({len(have)} folds)"




def search_space(a: Auto) -> dict:
    """The space of the search, leaving out every key the user set in comp.yaml."""
    c, mine, size = a.choices, set(a.choices["user_keys"]), a.choices["size"]
    top = ap.MAX_SIZE if c["gpus"] else 224
    bigger = min(top, size + 32 if size <= 96 else 32 * round(1.5 * size / 32))
    lrs = [1e-4, 3e-3] if c.get("tuned") else [1e-3, 1e-2]  # fine-tuning, from scratch
    space = {"model.name": {"choice": list(a.plan.models)}, "input.size": {"choice": sorted({size, bigger})},
             "train.lr": {"loguniform": lrs}, "augment.preset": {"choice": ["light", "medium"]},
             "train.loss": {"choice": ["ce", "ce+soft_f1"]}}
    if c.get("stem_stride") == 1:  # small images: a sharp stem against the model's own (upscaling is input.size)
        space["model.stem_stride"] = {"choice": [1, 4]}
    if c["imbalance"] >= 3:
        space["train.sampler"] = {"choice": ["random", "balanced"]}
    return {k: v for k, v in space.items() if k not in mine and len(next(iter(v.values()))) > 1}


def start_params(a: Auto) -> dict:
    """auto's measured defaults: what the best stage trains when there is no search, and the search's first trial
    (so every draw is ranked against them). The fastest candidate (plan.models[0]: more epochs in the box), the
    fitted size and stem, the from-scratch or fine-tuning lr (comp.config: a pretrained candidate fine-tunes), the light
    preset, ce+soft_f1 where the
    metric is an F1 and the balanced sampler when the largest class is 3x the smallest. Every 15-minute CPU search of
    15 runs on `comp sample` data (3-5 trials) chose these (at lr 2.7e-3). Multi-label runs keep their loss and
    sampler. Keys the user set are left out: theirs win."""
    from comp.config import FINETUNE, SCRATCH

    c, cfg = a.choices, a.cfg()
    tuned = c.get("tuned", cfg.model.pretrained or bool(cfg.model.pretrained_file))
    p = {"model.name": a.plan.models[0], "input.size": c["size"], "train.lr": (FINETUNE if tuned else SCRATCH)["lr"],
         "augment.preset": "light", "train.loss": "ce+soft_f1" if "f1" in cfg.data.metric else "ce",
         "train.sampler": "balanced" if c["imbalance"] >= 3 else "random"}
    if c.get("stem_stride") == 1:
        p["model.stem_stride"] = 1
    keep = set(c["user_keys"]) | set(task_of(cfg).auto_fixed)  # what the user set, or the task leaves alone
    return {k: v for k, v in p.items() if k not in keep}


def _search(a: Auto, st: ap.Stage) -> str:
    if st.planned_s <= 0:
        return ap.Skipped(st.why)
    from comp.orchestrate.tune import tune, tune_dir

    space = search_space(a)
    if not space:
        return ap.Skipped("skipped: comp.yaml sets every searched key")
    path = AUTO_DIR / "space.yaml"
    write_text(path, yaml.safe_dump(space, sort_keys=False))
    box = min(st.planned_s, a.left() - a.tail_s()) - ap.RAY_START_S
    if box < 20:
        return ap.Skipped(f"skipped: {box + ap.RAY_START_S:.0f}s left for it")
    resume = (tune_dir(SEARCH_EXP) / "ray").exists()
    out = tune(a.config_path, SEARCH_EXP, path, trials=a.plan.trials, folds=SEARCH_FOLDS, metric="val_score",
               overrides=[*a.choices["base"], f"train.epochs={a.plan.search_epochs}"], address=a.address,
               resume=resume, gpus_per_trial=1 if a.choices["gpus"] else 0, echo=a.echo, time_budget_s=box,
               start=start_params(a))
    df = out["results"]
    scored = df[df["val_score"].notna()]
    if not len(scored):
        return ap.Skipped("skipped: no trial finished an epoch in its time box; auto's measured defaults train")
    scored = scored.sort_values("val_score", ascending=not _greater(a))
    keys = list(space)
    a.choices["trials"] = [{"trial": r["trial"], "score": float(r["val_score"]), "epochs": int(r["epochs"]),
                            "seconds": float(r["seconds"]), "params": {k: _plain(r[k]) for k in keys}}
                           for _, r in scored.head(8).iterrows()]
    a.choices["importances"] = out.get("importances") or {}
    a.choices["n_trials"] = len(df)
    best = a.choices["trials"][0]
    return (f"best of {len(df)} trials ({int(df['stopped'].sum())} stopped by ASHA): {best['trial']} fold-0 "
            f"{a.cfg().data.metric} {best['score']:.4f} with {_params_text(best['params'])}")


def _greater(a: Auto) -> bool:
    cfg = a.cfg()
    return task_of(cfg).metric(cfg.data.metric).greater_is_better


def _plain(v):
    v = v.item() if hasattr(v, "item") else v
    return int(v) if isinstance(v, float) and v.is_integer() else v


def _params_text(p: dict) -> str:
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in p.items())


# ---------------------------------------------------------------- stages: best, second, refit


def _epoch_s(a: Auto, model: str, size: int) -> float:
    """Seconds of one fold epoch: fold 0's measured seconds when that model and size trained already
    (fit_later_fold_epochs). Else on a CPU: the probe's estimate at the training batch (scaled by the pixels when
    the size differs from the probe's); the search's trials ran two at a time on one thread each, which says little
    of a member alone on every core (a 6.5s estimate from them against 4.5s measured). On a GPU (a trial has its
    own device): the trials' measured seconds of that model and size, else the probe's."""
    measured = a.choices.get("measured_epoch_s", {}).get(f"{model}@{size}")
    if measured:  # the first member's fold 0 (fit_later_fold_epochs): the whole pipeline, timed over minutes
        return float(measured)
    for t in a.choices.get("trials", []) if a.choices["gpus"] else []:
        p = t["params"]
        if p.get("model.name", model) == model and p.get("input.size", size) == size and t["epochs"]:
            return t["seconds"] / t["epochs"] + ap.EPOCH_OVERHEAD_S
    est = a.plan.epoch_s.get(model) or max(a.plan.epoch_s.values())
    return est * (size / a.choices["size"]) ** 2


def reprobe(a: Auto, model: str) -> None:
    """On a CPU, probe the chosen model again just before its folds train and plan their epochs from the faster of
    the two readings. A busy machine only ever slows a probe (a shared host, an install finishing, Ray's workers
    still exiting): one probe read 372 img/s where the folds then trained at ~456, another 518 where they trained
    at ~565 (the plan's probe had read 612), and each left a sixth to a fifth of the budget unused."""
    c = a.choices
    if c["gpus"] or model in c.setdefault("reprobed", {}):
        return
    cfg = a.cfg()
    train_ips, infer_ips = probe_models(cfg, [model], c.get("n_classes", 10), cfg.train.batch_size or 64)
    c["reprobed"][model] = round(train_ips[model], 1)
    train_ips[model] = max(train_ips[model], c["train_ips"].get(model, 0.0))
    infer_ips[model] = max(infer_ips[model], c["infer_ips"].get(model, 0.0))
    inp = ap.PlanInputs(a.budget_s, 0.0, c["n_train"], c["n_test"], c["n_splits"], train_ips, infer_ips, gpus=0)
    before = a.plan.epoch_s.get(model)
    a.plan.epoch_s[model] = round(ap.fold_epoch_s(inp, model), 2)
    a.echo(f"[auto] {model} probed again before its folds: {c['reprobed'][model]:.0f} training img/s now, "
           f"{c['train_ips'].get(model, 0):.0f} in the plan; the faster gives ~{a.plan.epoch_s[model]:.1f}s a fold "
           f"epoch (planned {before}s)")


def _member_overrides(a: Auto, params: dict, seconds: float, cap: int | None = None) -> tuple[list[str], int, str]:
    """The overrides of a member trained on every fold within ``seconds``, its epochs and the reason."""
    from comp.orchestrate.space import as_set

    model = _model_of(a, params)
    if "model.name" not in a.choices["user_keys"]:
        params = {"model.name": model, **params}
    size = int(params.get("input.size", a.choices["size"]))
    k = a.choices["n_splits"]
    per = _epoch_s(a, model, size)
    epochs = int(max(1, min(cap or ap.MAX_EPOCHS, (seconds - ap.SETUP_S) // (k * per))))
    sets = [*a.choices["base"], *(as_set(key, v) for key, v in params.items())]
    if "train.epochs" not in a.choices["user_keys"]:
        sets.append(f"train.epochs={epochs}")
    why = f"{epochs} epochs x {k} folds at ~{per:.1f}s a fold epoch fit {seconds:.0f}s"
    return sets, epochs, why


def member_values(sets: list[str], n_trials: int) -> dict:
    """A member's configs/<exp>.yaml values. When the search chose them (``n_trials`` > 0) its provenance goes in
    too, so runs/<exp>/config.yaml, the ledger and the leaderboard score the folds the search never saw."""
    from comp.config import parse_set

    values = parse_set(sets)
    if n_trials:
        values["search"] = {"source": SEARCH_EXP, "trials": int(n_trials), "folds": list(SEARCH_FOLDS)}
    return values


def _write_member(a: Auto, exp: str, sets: list[str]) -> None:
    """configs/<exp>.yaml holding the member's settings, so every comp command works on runs/<exp> afterwards."""
    n_trials = a.choices.get("n_trials", len(a.choices.get("trials") or []))
    write_text(Path(a.config_path.parent) / "configs" / f"{exp}.yaml",
               f"# written by comp auto ({time.strftime('%Y-%m-%d %H:%M')})\n"
               + yaml.safe_dump(member_values(sets, n_trials), sort_keys=False, allow_unicode=True))


def _train_member(a: Auto, exp: str, deadline: float | None, folds: list[int] | None = None) -> dict:
    """comp train --exp EXP --all-folds (``folds``: --fold each; resuming what a kill left); past ``deadline``
    (elapsed seconds) the stage is cut after the epoch that crossed it."""
    from comp.techniques import sources
    from comp.train import train_folds

    cfg = load_config(a.config_path, exp=exp)

    def on_epoch(fold: int, row: dict) -> None:
        a.save()
        if deadline is not None and a.elapsed() > deadline:
            raise StageCut(f"fold {fold} epoch {int(row['epoch'])} ended at {a.elapsed():.0f}s")

    out = train_folds(cfg, folds=folds, resume=True, skip_bad=a.choices.get("skip_bad", False), echo=a.echo,
                      on_epoch=on_epoch, sources=sources(cfg))
    if folds is None and out.get("cv_score") is None:
        raise StageCut("not every fold finished")
    return out


def fit_later_fold_epochs(a: Auto, exp: str) -> None:
    """Train fold 0 alone, then fit the epochs of the folds still to train (train.fold_epochs) to fold 0's measured
    seconds an epoch and the time left to the member's box (``until_s``). The probe's estimate of a fold epoch was
    off by 11% one way and 13% the other on two 15-minute CPU runs (a shared host's speed drifts by the minute);
    fold 0's own epochs measure the whole pipeline over minutes. Timings only: no label is read."""
    c = a.choices[exp]
    if "fold_epochs" in c or "until_s" not in c or {"train.epochs", "train.fold_epochs"} & set(a.choices["user_keys"]):
        return
    k = a.choices["n_splits"]
    t0, before = a.elapsed(), runs.fold_done(exp, 0)
    _train_member(a, exp, deadline=None, folds=[0])
    done = runs.fold_done(exp, 0) or {}
    per = float(done.get("seconds", 0.0)) / max(1, int(done.get("epochs_run", 0)))
    if per <= 0:
        return
    setup = ap.SETUP_S if before is not None else max(0.0, a.elapsed() - t0 - float(done["seconds"]))
    left = c["until_s"] - a.elapsed() - setup
    epochs = ap.later_fold_epochs(left, k - 1, per, c["epochs"])
    fold_epochs = {j: epochs for j in range(1, k) if runs.fold_done(exp, j) is None}
    model, size = _model_of(a, c["params"]), int(c["params"].get("input.size", a.choices["size"]))
    planned = _epoch_s(a, model, size)
    a.choices.setdefault("measured_epoch_s", {})[f"{model}@{size}"] = round(per, 3)
    if fold_epochs and any(n != c["epochs"] for n in fold_epochs.values()):
        c["sets"] = [*c["sets"], "train.fold_epochs={" + ", ".join(f"{j}: {n}" for j, n in fold_epochs.items()) + "}"]
        _write_member(a, exp, c["sets"])
    c["fold_epochs"] = {str(j): n for j, n in fold_epochs.items()}
    c["why"] += (f"; fold 0 measured {per:.2f}s an epoch, so folds {sorted(fold_epochs)} train {epochs} epochs in "
                 f"the {max(0.0, left):.0f}s left")
    a.echo(f"[auto] {exp}: fold 0 took {per:.2f}s an epoch (planned {planned:.2f}s); folds {sorted(fold_epochs)} "
           f"get {epochs} epochs (fold 0 had {c['epochs']}) to end by {c['until_s']:.0f}s")
    a.save()


def _model_of(a: Auto, params: dict) -> str:
    return params.get("model.name", a.plan.models[0])


def _best(a: Auto, st: ap.Stage) -> str:
    trials = a.choices.get("trials") or []
    params = trials[0]["params"] if trials else start_params(a)
    if "auto-a" not in a.choices:
        reprobe(a, _model_of(a, params))
        # The folds first (the CV measures them); a planned refit keeps its box, which only ever holds what the
        # folds' epoch cap left (auto_plan._refit_share)
        avail = a.left() - a.tail_s() - a.plan.stage("second").planned_s - a.plan.stage("refit").planned_s
        box = max(avail, st.planned_s * 0.5)
        sets, epochs, why = _member_overrides(a, params, box)
        a.choices["auto-a"] = {"sets": sets, "epochs": epochs, "why": why, "params": params,
                               "until_s": round(a.elapsed() + box, 1)}
        _write_member(a, "auto-a", sets)
        a.save()
    fit_later_fold_epochs(a, "auto-a")
    out = _train_member(a, "auto-a", deadline=None)
    a.choices["members"] = ["auto-a"]
    src = f"the search's best ({trials[0]['trial']})" if trials else "auto's measured defaults (no search)"
    return (f"{src}: {_params_text(params) or 'defaults'}; {a.choices['auto-a']['why']}; CV {out['metric']} "
            f"{out['cv_score']:.4f}")


def _second(a: Auto, st: ap.Stage) -> str:
    if st.planned_s <= 0:
        return ap.Skipped(st.why)
    trials, best = a.choices.get("trials") or [], a.choices["auto-a"]["params"]
    keys = ("model.name", "input.size", "train.loss", "model.stem_stride")
    other = next((t for t in trials[1:] if any(t["params"].get(k) != best.get(k) for k in keys)), None)
    if other is None:
        return ap.Skipped("skipped: no top trial differs from the best in model, size or loss")
    if "auto-b" not in a.choices:
        avail = min(st.planned_s, a.left() - a.tail_s() - a.plan.stage("refit").planned_s) \
            - a.plan.stage("predict").planned_s
        sets, epochs, why = _member_overrides(a, other["params"], avail, cap=a.choices["auto-a"]["epochs"])
        if epochs < ap.MIN_EPOCHS:
            return ap.Skipped(f"skipped: {avail:.0f}s left affords under {ap.MIN_EPOCHS} epochs on every fold")
        a.choices["auto-b"] = {"sets": sets, "epochs": epochs, "why": why, "params": other["params"]}
        _write_member(a, "auto-b", sets)
        a.save()
    out = _train_member(a, "auto-b", deadline=a.budget_s * ap.MARGIN - 2 * a.tail_s())
    a.choices["members"] = ["auto-a", "auto-b"]
    return (f"{other['trial']}: {_params_text(other['params'])}; {a.choices['auto-b']['why']}; CV {out['metric']} "
            f"{out['cv_score']:.4f}")


def _refit_s(a: Auto, exp: str) -> float:
    """A full-data run's seconds: its epochs (comp.train.refit.full_epochs) of every row at the folds' measured
    training images/s. The folds' seconds an epoch also hold their validation, which a refit has none of: scaled to
    every row they read 260s where the refit took 171 (resnet10t, 20 epochs of 5,000 rows, 2 cores)."""
    from comp.train.refit import full_epochs

    ips = [float(pd.read_csv(f)["images_per_s"].mean()) for f in sorted(runs.run_dir(exp).glob("fold_*/metrics.csv"))]
    epochs, _ = full_epochs(load_config(a.config_path, exp=exp))
    return ap.SETUP_S + epochs * (a.choices["n_train"] / max(1.0, float(np.mean(ips))) + ap.EPOCH_OVERHEAD_S)


def _seed_s(a: Auto, exp: str) -> float:
    """Seconds of one more refit seed: what full_s0 took, measured (else the folds' estimate)."""
    path = runs.full_dir(exp, 0) / "metrics.csv"
    if not path.exists():
        return _refit_s(a, exp)
    return ap.SETUP_S + float(pd.read_csv(path)["seconds"].sum())


def _refit(a: Auto, st: ap.Stage) -> str:
    epochs = a.choices.get("auto-a", {}).get("epochs", 0)
    if st.planned_s <= 0 and epochs < ap.MAX_EPOCHS:  # the plan's epochs were its first model's: say the folds' own
        return ap.Skipped(f"skipped: the folds used the time ({epochs} epochs, under the {ap.MAX_EPOCHS} cap); the CV "
                          f"measures the folds, never a refit" if epochs else st.why)
    from comp.techniques import sources
    from comp.train import train_full

    members = a.choices["members"]
    need = sum(_refit_s(a, e) for e in members if not (runs.full_dir(e, 0) / "done.json").exists())
    if need > a.grace_left() - a.tail_s():
        return ap.Skipped(f"skipped: refitting {', '.join(members)} needs ~{need:.0f}s, "
                          f"{a.grace_left() - a.tail_s():.0f}s left to the budget + {ap.OVERRUN:.0%}")
    def fit(seeds: int) -> None:  # finished seeds are skipped (resume)
        for e in members:
            cfg = load_config(a.config_path, exp=e)
            train_full(cfg, seeds=seeds, resume=True, skip_bad=a.choices.get("skip_bad", False), echo=a.echo,
                       sources=sources(cfg))

    seeds = a.choices.setdefault("refit_seeds", 1)
    fit(seeds)
    a.choices["use"] = "both"
    # What the estimates left over buys another seed of the same recipe (never more epochs: the folds' CV chose them)
    one = sum(_seed_s(a, e) for e in members)
    while seeds < MAX_REFIT_SEEDS and one <= a.left() - a.tail_s():
        seeds = a.choices["refit_seeds"] = seeds + 1
        a.save()
        fit(seeds)
    return (f"{', '.join(members)} on every row, {seeds} seed(s) (~{need:.0f}s planned for one); the test uses the "
            f"folds and the full models 50/50")


# ---------------------------------------------------------------- stages: predict, ensemble, report


def _predict(a: Auto, st: ap.Stage) -> str:
    from comp.infer.predict import predict

    members, use = a.choices["members"], a.choices.get("use", "folds")
    for e in members:
        cfg = load_config(a.config_path, exp=e)
        predict(cfg, tta=TTA, oof=True, overwrite=True, echo=a.echo, progress=False)
        if use == "both":
            predict(cfg, tta=TTA, overwrite=True, echo=a.echo, progress=False, use="both")
    return f"{', '.join(members)}: TTA {'+'.join(TTA)} on the test and the OOF" + (" (folds + full)" if use == "both"
                                                                                   else "")


def _ensemble(a: Auto, st: ap.Stage) -> str:
    from comp.infer.ensemble import ensemble

    cfg = a.cfg()
    m = cfg.data.metric
    res = ensemble(cfg, a.choices["members"], weights="auto", tune_bias=m == "macro_f1", tune_thresholds=m == "qwk",
                   temperature=m == "log_loss", name=SUBMISSION, overwrite=True, echo=a.echo,
                   use=a.choices.get("use", "folds"), label_shift="auto" if m == "macro_f1" else "off")
    searched = bool(a.choices.get("trials"))
    rep = res.get("bias_report")
    gain = rep.cv_f1 - rep.argmax_f1 if rep is not None and any(res["bias"]) else 0.0
    shift = res.get("label_shift")
    weight = shift.weight if shift is not None and shift.applied else None
    if weight is not None:
        a.choices["label_shift"] = {c: round(float(q), 4) for c, q in zip(res["classes"], shift.test_prior)}
    cv = honest_cv(cfg, a.choices["members"], res["weights"], SEARCH_FOLDS if searched else [], gain, weight)
    # The headline is the ledger's own figure (one nested loop over the rows of the folds the search never saw),
    # so comp auto, the ledger and comp leaderboard say one number; honest_cv gives the all-folds one beside it.
    key = "honest" if searched else "all"
    cv.update({f"{key}_macro_f1": round(float(res["cv_macro_f1"]), 5),
               f"{key}_score": round(float(res["cv_score"]), 5)})
    cv.update(ledger_cv=res["cv_score"], ledger_cv_macro_f1=res["cv_macro_f1"], weights=res["weights"],
              path=res["path"])
    a.choices["cv"] = cv
    return (f"submissions/auto.csv: {cv_text(cv)}; weights "
            + ", ".join(f"{e} {w:.2f}" for e, w in zip(a.choices["members"], res["weights"])))


def honest_cv(cfg, members: list[str], weights, chosen_on: list[int], bias_gain: float = 0.0,
              class_weight=None) -> dict:
    """Macro F1 (and data.metric) of the blended OOF with the submission's weights, over the folds the search never
    saw and over all folds (optimistic when ``chosen_on`` is not empty). Biases fit on the whole OOF would flatter
    it, so the argmax figure is scored and the biases' cross-validated gain (``bias_gain``, comp ensemble's own
    estimate) added, as comp ensemble does for its CV. ``class_weight``: the label-shift reweighting comp ensemble
    applied (comp.infer.shift); macro F1 is then the estimated test prior's."""
    from comp.infer.decision import macro_f1
    from comp.infer.ensemble import load_member
    from comp.metrics import create_metric

    ms = [load_member(cfg, e) for e in members]
    ids, classes = ms[0].oof.index, ms[0].classes
    oof = pd.read_csv(runs.run_dir(members[0]) / "oof.csv", dtype={cfg.data.id_col: str}, keep_default_na=False)
    fold = oof.set_index(oof[cfg.data.id_col].astype(str))["fold"].reindex(ids.astype(str)).to_numpy()
    y = pd.Categorical(ms[0].oof[cfg.data.label_col].astype(str), categories=classes).codes
    w = np.asarray(weights, float) / max(1e-12, float(np.sum(weights)))
    p = sum(wi * m.oof.loc[ids, classes].to_numpy(float) for wi, m in zip(w, ms))
    pred = np.argmax(p, axis=1)
    metric, f1 = create_metric(cfg.data.metric), create_metric("macro_f1")
    keep = ~np.isin(fold, chosen_on)
    out = {"metric": metric.name, "honest_folds": sorted(int(k) for k in set(fold[keep].tolist())),
           "chosen_on": list(chosen_on), "bias_cv_gain": round(float(bias_gain), 5),
           "label_shift": class_weight is not None}
    for name, mask in (("honest", keep), ("all", np.ones(len(y), bool))):
        f1_value = f1.from_labels(y[mask], pred[mask], classes) if class_weight is None else \
            macro_f1(y[mask], pred[mask], len(classes), class_weight)
        out[f"{name}_macro_f1"] = round(float(f1_value) + bias_gain, 5)
        score = f1_value if metric.name == "macro_f1" else metric(y[mask], p[mask], classes) \
            if metric.uses_proba else metric.from_labels(y[mask], pred[mask], classes)
        out[f"{name}_score"] = round(float(score) + (bias_gain if metric.name == "macro_f1" else 0.0), 5)
    return out


def cv_text(cv: dict) -> str:
    prior = " at the test's estimated class prior" if cv.get("label_shift") else ""
    if not cv["chosen_on"]:
        return f"CV macro F1{prior} {cv['all_macro_f1']:.4f} over every fold (nothing was chosen on a fold: no search)"
    return (f"honest CV macro F1{prior} {cv['honest_macro_f1']:.4f} over folds {cv['honest_folds']} (all folds "
            f"{cv['all_macro_f1']:.4f}, optimistic: the search chose on fold {', '.join(map(str, cv['chosen_on']))})")


def stage_rows(a: Auto) -> list[dict]:
    return [{"stage": s.name, "planned_s": round(s.planned_s), "spent_s": round(s.spent_s), "state": s.state,
             "chose": s.chose or s.why} for s in a.plan.stages]


def format_summary(a: Auto) -> str:
    rows = stage_rows(a)
    lines = [f"{'stage':<9} {'planned':>8} {'spent':>6}  {'state':<8} what it chose and why"]
    lines += [f"{r['stage']:<9} {r['planned_s']:>7}s {r['spent_s']:>5}s  {r['state']:<8} {r['chose']}" for r in rows]
    lines.append(f"total {a.elapsed():.0f}s of a {a.budget_s:.0f}s budget ({a.elapsed() / a.budget_s:.0%})")
    cv = a.choices.get("cv")
    if cv:
        lines.append(f"submissions/auto.csv: {cv_text(cv)}")
    return "\n".join(lines)


def _report(a: Auto, st: ap.Stage) -> str:
    from comp.orchestrate.leaderboard import leaderboard
    from comp.reports.page import Report, report_dir

    out = Path("reports/auto")
    with report_dir(out) as folder:
        folder = Path(folder)
        r = Report("comp auto", f"{a.budget_s / 60:.1f} min budget, {a.elapsed():.0f}s spent")
        cv = a.choices.get("cv") or {}
        sec = r.section("Submission")
        if cv:
            sec.table([{"figure": f"honest CV (folds {cv['honest_folds']}, never seen by the search)",
                        "macro F1": cv["honest_macro_f1"], cv["metric"]: cv["honest_score"]},
                       {"figure": "all folds (optimistic: the search chose on fold 0)" if cv["chosen_on"] else
                        "all folds", "macro F1": cv["all_macro_f1"], cv["metric"]: cv["all_score"]}])
        sec.p("submissions/auto.csv; its row in submissions/ledger.csv.")
        r.section("Stages").table(stage_rows(a))
        png = runs.RUNS_DIR / f"{SEARCH_EXP}-tune" / "optimization.png"
        if png.exists():
            shutil.copy(png, folder / "optimization.png")
            r.section("Search").image("optimization.png", "search history and parameter importance")
        board = leaderboard(echo=lambda _m: None, out=folder / "leaderboard.html")
        r.section("Leaderboard").table(board.drop(columns=["submissions"]).to_dict("records"))
        r.write(folder)
    return f"{out / 'index.html'}"
