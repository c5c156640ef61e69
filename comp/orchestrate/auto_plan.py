"""``comp auto``'s plan: a throughput probe of the candidate models at the fitted size, and the arithmetic that turns
a time budget into stages with a time box each (what runs, how many epochs and trials).

The arithmetic is pure (``make_plan`` takes numbers, returns numbers) so it is tested on its own. Estimates are
refined as the run goes: a stage that starts later than planned gets what is left (comp.orchestrate.auto).
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import asdict, dataclass, field

from comp.train.fit import MIN_FINETUNE_EPOCHS
from comp.train.probe import EFFICIENCY_CPU, EFFICIENCY_GPU
from comp.weights import CANDIDATES_CPU, CANDIDATES_GPU

EPOCH_OVERHEAD_S = 0.3  # per epoch: state + checkpoint writes, metrics, the curves plot (0.3s measured, CPU)
SETUP_S = 6.0  # per train_folds call: accelerator, pool, image decode of a small competition
RAY_START_S = 25.0  # Ray's local start on a loaded 2-core machine (8-20 s idle)
MARGIN = 0.98  # plan to 98% of the budget; a stage may overrun by a little and the run still ends within +10%
# (15-min CPU runs ended at 823-921 s of 900 planned to 97%: 77 s unused at one end, 21 s over at the other)
OVERRUN = 0.03  # an optional stage (refit) still starts when its estimate ends it by the budget + 3%
MAX_EPOCHS = 60  # time binds before it: the plain loop gained +0.022 hold-out from 40 to 90 epochs (15m, CPU), and
# at 40 a 15-min CPU run's folds stopped with 100s to spare
MIN_EPOCHS = 2
LONG_CPU_S = 1800  # on CPU, a second member only from a 30-minute budget: below it, the folds' epochs pay more
FIVE_FOLD_EPOCHS = 30  # 5 folds (each model on 80% of the rows, 3: 67%) where each affords this many epochs;
# below it, 3 folds x more epochs scored higher (15m CPU: 3 x 40 epochs 0.9047 hold-out, 5 x 21 0.9015)
SEARCH_SHARE = {"gpu": 0.35, "cpu": 0.2}  # of the seconds left after the fixed stages
MIN_TRIALS = 6  # a search that affords fewer is skipped: every 15-minute CPU search of 15 runs had 3-5 trials,
# ASHA stopped all but the first after one epoch, and the first (the same config each time) won every one

# Candidate models by hardware; the probe keeps those that afford MIN_EPOCHS on every fold, fastest first. The
# pretrained ones are fine-tuned when their weights are found (comp.weights: the local hub cache, or a hub that
# answers); else the from-scratch ones train.
PRETRAINED_CPU, PRETRAINED_GPU = list(CANDIDATES_CPU), list(CANDIDATES_GPU)
MODELS_CPU = ["resnet18", "resnet10t"]
MODELS_GPU = ["resnet18", "resnet50", "convnext_nano", "efficientnet_b0"]
FINETUNE_WHY = "fine-tuning is preferred: it beat training from scratch at equal time on photos (docs/benchmarks.md)"
# Large images: the largest input size whose folds afford this many epochs (comp auto's _fit_size; fine-tuning: the
# same rule as comp train's, comp.train.fit.MIN_FINETUNE_EPOCHS, and why).
MIN_FOLD_EPOCHS = {"finetune": MIN_FINETUNE_EPOCHS, "scratch": 20}
FIXRES = 4 / 3  # a pretrained model predicts at this x its training size (rounded to 32, within the images' size)
FIXRES_WHY = "the FixRes effect: a lite0 fine-tuned at 96px scored +0.05 hold-out macro F1 predicted at 128px"


@dataclass
class PlanInputs:
    budget_s: float
    spent_s: float  # already used (the probe itself)
    n_train: int
    n_test: int
    n_splits: int
    train_ips: dict  # model -> compute-only training images/s at the fitted size
    infer_ips: dict  # model -> compute-only inference images/s
    has_ray: bool = True
    gpus: int = 0
    views: int = 2  # TTA views of predict (test and OOF)
    decode_s_per_image: float = 0.002
    infer_scale: float = 1.0  # predict's pixels over training's (infer.size / input.size squared: FixRes)


class Skipped(str):
    """What a stage returns when it does not run, with its reason: the stage's state becomes "skipped" from this
    type, never from the reason's wording."""


@dataclass
class Stage:
    name: str
    planned_s: float
    why: str
    state: str = "pending"  # pending, running, done, skipped, cut
    spent_s: float = 0.0
    chose: str = ""


@dataclass
class Plan:
    stages: list = field(default_factory=list)
    epochs: int = MIN_EPOCHS  # the best config on every fold
    search_epochs: int = 0
    trials: int = 0
    models: list = field(default_factory=list)
    epoch_s: dict = field(default_factory=dict)  # model -> estimated seconds of one fold epoch

    def stage(self, name: str) -> Stage:
        return next(s for s in self.stages if s.name == name)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Plan:
        d = copy.deepcopy(d)
        d["stages"] = [Stage(**s) for s in d["stages"]]
        return cls(**d)


def efficiency(inp: PlanInputs) -> float:
    return EFFICIENCY_GPU if inp.gpus else EFFICIENCY_CPU


def fold_epoch_s(inp: PlanInputs, model: str) -> float:
    """Seconds of one epoch of one fold: its training rows end to end, its validation rows, the overhead."""
    k = inp.n_splits
    train = inp.n_train * (k - 1) / k / (inp.train_ips[model] * efficiency(inp))
    val = inp.n_train / k / (inp.infer_ips[model] * efficiency(inp))
    return train + val + EPOCH_OVERHEAD_S


def refit_epoch_s(inp: PlanInputs, model: str) -> float:
    """Seconds of one epoch of a full-data run (every row, no validation)."""
    return inp.n_train / (inp.train_ips[model] * efficiency(inp)) + EPOCH_OVERHEAD_S


def predict_s(inp: PlanInputs, model: str) -> float:
    """comp predict --oof with TTA: every test image through every fold model and the refit, every train image
    once, per view; two calls (folds, then folds + full)."""
    images = (inp.n_test * (inp.n_splits + 1) + inp.n_train) * inp.views
    return images * inp.infer_scale / inp.infer_ips[model] + 2 * SETUP_S


def folds_stage_s(inp: PlanInputs, model: str, epochs: int) -> float:
    return SETUP_S + inp.n_splits * epochs * fold_epoch_s(inp, model)


def epochs_for(inp: PlanInputs, model: str, seconds: float) -> int:
    """Epochs of every fold that fit in ``seconds``, within [0, MAX_EPOCHS]."""
    per = inp.n_splits * fold_epoch_s(inp, model)
    return int(max(0, min(MAX_EPOCHS, math.floor((seconds - SETUP_S) / per))))


def later_fold_epochs(left_s: float, folds: int, epoch_s: float, first: int) -> int:
    """Epochs of each of ``folds`` folds still to train in ``left_s`` at the measured ``epoch_s``, within
    [MIN_EPOCHS, MAX_EPOCHS] and never under half of the first fold's ``first``: a fold that short would pull the CV
    down more than the minutes it saves are worth."""
    fit = math.floor(max(0.0, left_s) / (max(1, folds) * epoch_s))
    return int(max(MIN_EPOCHS, first // 2, min(MAX_EPOCHS, fit)))


def fold_count(inp: PlanInputs) -> tuple[int, str]:
    """(n_splits, why): 5 where every fold affords FIVE_FOLD_EPOCHS epochs of the fastest candidate, else 3. The
    folds' models are what the CV measures and what the submission averages: at 5 each trains on 80% of the rows,
    and the honest CV reads 4 folds' rows; at 3, on 67%, and the average of 3 scores further above the CV."""
    fast = min(inp.train_ips, key=lambda m: fold_epoch_s(inp, m))
    five = make_plan(dataclasses.replace(inp, n_splits=5, train_ips={fast: inp.train_ips[fast]}))
    if five.epochs >= FIVE_FOLD_EPOCHS:
        return 5, f"5 folds: {five.epochs} epochs each of {fast} fit (from {FIVE_FOLD_EPOCHS}), on 80% of the rows"
    return 3, f"3 folds: 5 would afford {five.epochs} epochs each of {fast}, under {FIVE_FOLD_EPOCHS}"


def make_plan(inp: PlanInputs) -> Plan:
    """Stages and their time boxes for ``inp.budget_s`` (see the module docstring); every figure is explained."""
    usable = inp.budget_s * MARGIN - inp.spent_s
    plan = Plan()
    affordable = [m for m in inp.train_ips if epochs_for(inp, m, usable * 0.4) >= MIN_EPOCHS]
    plan.models = sorted(affordable, key=lambda m: fold_epoch_s(inp, m)) or [
        min(inp.train_ips, key=lambda m: fold_epoch_s(inp, m))]  # fastest first: the plan's figures are its
    plan.epoch_s = {m: round(fold_epoch_s(inp, m), 2) for m in inp.train_ips}
    first = plan.models[0]
    n_img = inp.n_train + inp.n_test
    check_s = SETUP_S + n_img * inp.decode_s_per_image
    fixed = {"check": (check_s, f"decode {n_img} images once ({inp.decode_s_per_image * 1e3:.1f} ms each)"),
             "folds": (3.0, f"{inp.n_splits} stratified folds")}
    tail = {"predict": (predict_s(inp, first), f"TTA ({inp.views} views) on test and OOF of each member"),
            "ensemble": (10.0, "weights on the OOF, decision tuning cross-validated inside it"),  # 4-10 s measured
            "report": (5.0, "submissions/auto.csv, ledger row, reports/auto/index.html")}
    left = max(0.0, usable - sum(s for s, _ in fixed.values()) - sum(s for s, _ in tail.values()))
    search_s, second_s, refit_s, best_s, notes = _shares(inp, plan, left)
    stages = [Stage("plan", inp.spent_s, f"throughput probe of {', '.join(inp.train_ips)}", state="done",
                    spent_s=inp.spent_s)]
    stages += [Stage(n, round(s, 1), w) for n, (s, w) in fixed.items()]
    stages += [Stage("search", round(search_s, 1), notes["search"]), Stage("best", round(best_s, 1), notes["best"]),
               Stage("second", round(second_s, 1), notes["second"]), Stage("refit", round(refit_s, 1), notes["refit"])]
    stages += [Stage(n, round(s, 1), w) for n, (s, w) in tail.items()]
    plan.stages = stages
    return plan


def _shares(inp: PlanInputs, plan: Plan, left: float) -> tuple[float, float, float, float, dict]:
    """Split the seconds ``left`` between search, best, second and refit; fills plan.epochs/trials.

    The folds come first: the CV measures them (and a second member), never a refit. A refit gets only what the
    folds' epoch cap leaves (see _refit_share)."""
    first = plan.models[0]
    notes = {}
    search_s = SEARCH_SHARE["gpu" if inp.gpus else "cpu"] * left if inp.has_ray else 0.0
    search_epochs = int(max(MIN_EPOCHS, min(20, epochs_for(inp, first, 0.55 * left) // 2 or MIN_EPOCHS)))
    trial_s = SETUP_S + search_epochs * fold_epoch_s(inp, first)
    # ASHA (reduction 2) stops about half of the trials at each rung: a trial costs ~0.5 of a full one.
    trials = int(min(24, max(0.0, search_s - RAY_START_S) * max(1, inp.gpus) / (0.5 * trial_s)))
    if not inp.has_ray or trials < MIN_TRIALS:
        why = "Ray is not installed" if not inp.has_ray else (
            f"{search_s:.0f}s for it afford {trials} trials of {search_epochs} epochs, under {MIN_TRIALS}: so few "
            "pick by one fold's noise")
        notes["search"] = f"skipped: {why}; auto's measured defaults train, and every fold scores the CV"
        search_s = 0.0
    else:
        plan.search_epochs, plan.trials = search_epochs, trials
        notes["search"] = (f"ASHA on fold 0: {plan.trials} trials x {plan.search_epochs} epochs of "
                           f"{', '.join(plan.models)} ({trial_s:.0f}s a full trial)")
    rest = left - search_s
    long_run = inp.gpus or inp.budget_s >= LONG_CPU_S
    second_s = 0.2 * rest if search_s and long_run else 0.0
    pool = rest - second_s
    plan.epochs = max(1, epochs_for(inp, first, pool))
    best_s = folds_stage_s(inp, first, plan.epochs)
    refit_s, notes["refit"] = _refit_share(inp, first, plan.epochs, pool - best_s)
    notes["best"] = (f"{plan.epochs} epochs x {inp.n_splits} folds at ~{fold_epoch_s(inp, first):.1f}s a fold epoch "
                     f"({first})")
    spare = max(0.0, pool - best_s - refit_s)  # what the epoch cap left over goes to the optional stages
    if second_s:
        second_s += spare
    elif refit_s:
        refit_s += spare
    else:
        best_s += spare
    if second_s and epochs_for(inp, first, second_s - predict_s(inp, first)) < MIN_EPOCHS:
        notes["second"] = f"skipped: {second_s:.0f}s affords under {MIN_EPOCHS} epochs on every fold"
        best_s, second_s = best_s + second_s, 0.0
    elif second_s:
        notes["second"] = "the best trial that differs in model, size or loss, on every fold (and its predict)"
    else:
        notes["second"] = ("skipped: no search to draw a second config from" if not search_s else
                           f"skipped: on a CPU under {LONG_CPU_S // 60} min, the folds' epochs are worth more")
    return search_s, second_s, refit_s, best_s, notes


def _refit_share(inp: PlanInputs, model: str, epochs: int, spare: float) -> tuple[float, str]:
    """(seconds, why) of a full refit from the ``spare`` seconds the folds' epoch cap left. A refit on every row adds
    to the hold-out what no OOF row can measure (+0.012 alone, +0.008 blended with the folds, on comp sample data),
    so time the folds could use goes to them: there, auto's CV sat 0.014-0.036 under its hold-out with a refit."""
    k = inp.n_splits
    need = SETUP_S + math.ceil(epochs * k / (k - 1)) * refit_epoch_s(inp, model)  # comp.train.refit.full_epochs
    if epochs < MAX_EPOCHS or spare < need:
        why = (f"the folds can use the time ({epochs} epochs, under the {MAX_EPOCHS} cap)" if epochs < MAX_EPOCHS
               else f"the folds' epoch cap leaves {spare:.0f}s, under the ~{need:.0f}s it needs")
        return 0.0, f"skipped: {why}; the CV measures the folds, never a refit"
    return need, f"every row for the folds' {epochs} epochs x n/n_train (~{need:.0f}s the folds' cap leaves)"


def format_plan(plan: Plan, budget_s: float) -> str:
    lines = [f"comp auto plan for {budget_s / 60:.1f} min (planned to {MARGIN:.0%}, ends within +10%):",
             f"{'stage':<9} {'time':>7} {'share':>6}  why"]
    for s in plan.stages:
        share = s.planned_s / budget_s if budget_s else 0
        lines.append(f"{s.name:<9} {s.planned_s:>6.0f}s {share:>6.0%}  {s.why}")
    return "\n".join(lines)


def fixres_size(size: int, top: int) -> int:
    """The size a pretrained model trained at ``size`` predicts at (FIXRES x, a multiple of 32, at most ``top``)."""
    return int(max(size, min(top, 32 * round(size * FIXRES / 32))))
