"""Cross-validated gains of the metric-specific post-processing of `comp ensemble`, on a `comp sample` folder.

qwk: cut points on the expected grade (--tune-thresholds); log_loss: temperature scaling (--temperature).
Labels are the sample's class indices written as integers (0..9), so the run also exercises integer labels;
Fashion-MNIST classes are not truly ordinal, which makes the qwk figures a mechanics check, not a showcase.
One experiment is trained once (K folds); each post-processing is fit on its OOF. Printed per metric: the OOF
figure of plain argmax / T=1, the in-sample tuned figure, the cross-validated tuned figure (what `comp ensemble`
uses to decide), and the hold-out score (solution.csv) of the plain and the tuned submission.

    python benchmarks/metric_postprocess.py [--n-train 2000] [--epochs 3] [--folds 5] [--model test_resnet]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import pandas as pd
import yaml

from comp.config import load_config
from comp.data.folds import make_folds
from comp.data.sample import make_sample
from comp.infer.ensemble import ensemble
from comp.infer.predict import predict
from comp.infer.score import score_files
from comp.train.session import train_folds


def quiet(_):
    pass


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n-train", type=int, default=2000)
    ap.add_argument("--n-test", type=int, default=1000)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--model", default="test_resnet")
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--imbalance", type=float, default=1.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        root = tmp / "comp"
        info = make_sample(root, n_train=args.n_train, n_test=args.n_test, imbalance=args.imbalance, seed=0)
        code = {c: str(k) for k, c in enumerate(sorted(info.classes))}
        for name in ("train.csv", "solution.csv"):
            df = pd.read_csv(root / name, dtype=str)
            df["label"] = df["label"].map(code)
            df.to_csv(root / name, index=False)
        sol = pd.read_csv(root / "solution.csv", dtype=str)
        pd.DataFrame({"image_id": sol["image_id"], "label": 0}).to_csv(root / "sample_submission.csv", index=False)
        wide = pd.DataFrame({"image_id": sol["image_id"], **{k: 0.1 for k in sorted(code.values())}})
        wide.to_csv(root / "sample_wide.csv", index=False)
        os.chdir(tmp)
        data = {"root": "comp", "id_has_ext": False, "ext": ".png", "metric": "qwk"}
        (tmp / "comp.yaml").write_text(yaml.safe_dump({"data": data}))
        exp = {"model": {"name": args.model}, "input": {"size": args.size},
               "train": {"epochs": args.epochs, "batch_size": 64, "lr": 3e-3}}
        (tmp / "configs").mkdir()
        (tmp / "configs" / "e.yaml").write_text(yaml.safe_dump(exp))
        cfg = load_config(tmp / "comp.yaml", exp="e", overrides=[f"folds.n_splits={args.folds}"])
        make_folds(cfg, echo=quiet)
        res = train_folds(cfg, echo=quiet)
        predict(cfg, echo=quiet, progress=False)
        print(f"{args.model} {args.size}px, {args.epochs} epochs, {args.folds} folds, {args.n_train} train / "
              f"{args.n_test} hold-out images; CV qwk {res['cv_score']:.4f}, macro F1 {res['cv_macro_f1']:.4f}")
        for metric, flag, sample in (("qwk", "tune_thresholds", "sample_submission.csv"),
                                     ("log_loss", "temperature", "sample_wide.csv")):
            cfg = load_config(tmp / "comp.yaml", exp="e",
                              overrides=[f"data.metric={metric}", f"data.sample_submission={sample}"])
            plain = ensemble(cfg, ["e"], name=f"{metric}_plain", echo=quiet)
            tuned = ensemble(cfg, ["e"], name=f"{metric}_tuned", echo=quiet, **{flag: True})
            r = tuned["tune_report"]
            hold = [score_files(f"submissions/{n}.csv", root / "solution.csv", metric=metric)["score"]
                    for n in (f"{metric}_plain", f"{metric}_tuned")]
            better = "higher" if metric == "qwk" else "lower"
            print(f"{metric:8s} ({better} is better) OOF plain {r.plain:.4f} | tuned in-sample {r.in_sample:.4f} | "
                  f"tuned cross-validated {r.cv:.4f} (gain {r.cv_gain:+.4f}, applied: {tuned['cv_score'] == r.cv}) "
                  f"| {r.what} {', '.join(f'{x:.3f}' for x in r.params)}")
            print(f"{'':8s} hold-out: plain {hold[0]:.4f}, tuned {hold[1]:.4f} (gain "
                  f"{(hold[1] - hold[0]) * (1 if metric == 'qwk' else -1):+.4f}); plain cv {plain['cv_score']:.4f}")


if __name__ == "__main__":
    main()
