"""The fitted defaults of issue 20, measured on a `comp sample` competition: the from-scratch schedule, and the
small-image stem (`model.stem_stride`) against upscaling at equal compute.

Data: `comp sample` (Fashion-MNIST, 28 px, --n-train 2000, 1,000 hold-out, imbalance 10), 5 stratified folds; each
variant is fold 0's resnet18 from scratch (`pretrained: false`), light augmentation, trained by `comp train`:

    schedule  lr x epochs at 32 px: the old default (1e-3, 10 epochs) against comp's from-scratch default
              (3e-3, 30) and the two between
    stem      at an equal CPU budget (the 32 px model's CPU seconds for --stem-epochs epochs): 32 px with the
              model's own stem (/4), 32 px with stem_stride 2 and 1 (resolution kept), and 64 px upscaled (/4);
              each one's epochs are the budget over its own CPU seconds per epoch (a 3-epoch probe less a 1-epoch one)

CPU seconds (the child processes' user + system time) rather than wall seconds, so another job on the machine
does not tilt the comparison; wall seconds are printed too. Scores: fold 0's validation macro F1 (its done.json)
and the fold-0 model's hold-out macro F1 (`comp predict --fold 0`, against solution.csv).

    python benchmarks/defaults.py [--dir bench-defaults] [--parts schedule,stem] [--stem-epochs 20]
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from techniques import comp, competition, fold_score, holdout_of  # noqa: E402

SCHEDULES = [(1e-3, 10), (3e-3, 10), (1e-3, 30), (3e-3, 30)]
STEMS = [("32px, own stem (/4)", 32, None), ("32px, stem_stride 2", 32, 2), ("32px, stem_stride 1", 32, 1),
         ("64px upscaled, own stem", 64, None)]


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def config(lr: float, epochs: int, size: int, stem: int | None) -> str:
    return ("model: {name: resnet18" + (f", stem_stride: {stem}" if stem else "") + "}\n"
            f"input: {{size: {size}}}\naugment: {{preset: light}}\n"
            f"train: {{epochs: {epochs}, batch_size: 64, lr: {lr}}}\ninfer: {{tta: [identity]}}\n")


def run(where: Path, exp: str, text: str, score: bool = True) -> dict:
    """comp train --fold 0 (+ predict --fold 0) of ``text`` as configs/<exp>.yaml: scores, CPU and wall seconds."""
    (where / "configs" / f"{exp}.yaml").write_text(text)
    c0, t0 = cpu_s(), time.perf_counter()
    comp(where, "train", "--exp", exp, "--fold", "0", "--resume")
    out = {"cpu_s": cpu_s() - c0, "wall_s": time.perf_counter() - t0}
    if score:
        comp(where, "predict", "--exp", exp, "--fold", "0", "--overwrite")
        out.update(val=fold_score(where, exp, 0), holdout=holdout_of(where, f"runs/{exp}/test_fold0.csv"))
    return out


def schedule(where: Path) -> list[dict]:
    rows = []
    for lr, epochs in SCHEDULES:
        r = run(where, f"sched-{lr:g}-{epochs}", config(lr, epochs, 32, None))
        rows.append({"variant": f"lr {lr:g}, {epochs} epochs", **r})
    return rows


def stem(where: Path, budget_epochs: int) -> list[dict]:
    per = {}
    for i, (_, size, s) in enumerate(STEMS):  # CPU seconds per epoch: a 3-epoch run less a 1-epoch run, halved
        one = run(where, f"probe{i}-1", config(3e-3, 1, size, s), score=False)["cpu_s"]
        three = run(where, f"probe{i}-3", config(3e-3, 3, size, s), score=False)["cpu_s"]
        per[i] = max(1e-3, (three - one) / 2)
    budget = budget_epochs * per[0]
    rows = []
    for i, (name, size, s) in enumerate(STEMS):
        epochs = max(1, int(round(budget / per[i])))
        r = run(where, f"stem{i}-{epochs}", config(3e-3, epochs, size, s))
        rows.append({"variant": f"{name}: {epochs} epochs at {per[i]:.1f} CPU-s each", **r})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dir", default="bench-defaults")
    ap.add_argument("--parts", default="schedule,stem")
    ap.add_argument("--stem-epochs", type=int, default=20)
    ap.add_argument("--n-train", type=int, default=2000)
    ap.add_argument("--n-test", type=int, default=1000)
    ap.add_argument("--imbalance", type=float, default=10)
    ap.add_argument("--epochs", type=int, default=10)  # techniques.competition writes a base config with it
    args = ap.parse_args()
    where = competition(Path(args.dir).resolve() / "data10", args)
    rows = []
    if "schedule" in args.parts:
        rows += schedule(where)
    if "stem" in args.parts:
        rows += stem(where, args.stem_epochs)
    print(f"\n{'variant':58s} {'fold-0 val F1':>13s} {'hold-out F1':>11s} {'CPU s':>7s} {'wall s':>7s}")
    for r in rows:
        print(f"{r['variant']:58s} {r['val']:13.4f} {r['holdout']:11.4f} {r['cpu_s']:7.0f} {r['wall_s']:7.0f}")


if __name__ == "__main__":
    main()
