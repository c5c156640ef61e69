#!/usr/bin/env bash
# `make demo`: the whole flow on a fresh machine, CPU only, in under 10 minutes on 2 cores:
#   sample -> init -> check -> folds -> train all folds -> predict with TTA (test + OOF) -> ensemble with
#   bias tuning -> full-data refit (comp train --full) -> score against the sample's held-out solution, CV and
#   hold-out macro F1 side by side.
#
#   bash scripts/demo.sh DEMO_DIR [comp sample options, e.g. --n-train 3000 --n-test 1000 --imbalance 5]
#
# DEMO_SET adds --set overrides to train and predict, e.g. DEMO_SET="train.epochs=1" for a quick look.
# Every comp command runs inside DEMO_DIR, so folds/, runs/, submissions/ and reports/ land there. The demo
# owns DEMO_DIR: a re-run starts it afresh (it refuses a non-empty folder it did not make).
set -euo pipefail

DEMO_DIR=${1:-demo}
shift || true
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
COMP="$REPO/.venv/bin/comp"
PY="$REPO/.venv/bin/python"
export NO_ALBUMENTATIONS_UPDATE=1
SETS=()
for kv in ${DEMO_SET:-}; do SETS+=(--set "$kv"); done

if [ -d "$DEMO_DIR" ] && [ -n "$(ls -A "$DEMO_DIR")" ]; then
  if [ ! -f "$DEMO_DIR/.comp-demo" ]; then
    echo "demo: $DEMO_DIR exists and was not made by the demo; pass another folder (bash scripts/demo.sh DIR)" >&2
    exit 1
  fi
  # Only what the demo writes; a fresh start keeps the timings honest.
  (cd "$DEMO_DIR" && rm -rf data comp.yaml configs folds runs submissions reports)
fi
mkdir -p "$DEMO_DIR"
touch "$DEMO_DIR/.comp-demo"
cd "$DEMO_DIR"

START=$(date +%s)
step() { printf '\n== [%4ss] %s\n' "$(( $(date +%s) - START ))" "$*"; }

step "comp sample data $*"
"$COMP" sample data "$@"

step "comp init data"
"$COMP" init data

step "comp check"
"$COMP" check

step "comp folds"
"$COMP" folds

# Chosen (and measured) so the whole demo fits in 10 minutes on 2 CPU cores: a small resnet at 32 px,
# a few epochs per fold. On a GPU, raise input.size and train.epochs for a better score.
mkdir -p configs
cat > configs/base.yaml <<'YAML'
model: {name: resnet18}
input: {size: 32}
augment: {preset: light}
train: {epochs: 4, batch_size: 64, lr: 0.003}
infer: {tta: [identity, hflip]}
YAML

step "comp train --exp base --all-folds   (configs/base.yaml)"
"$COMP" train --exp base --all-folds ${SETS[@]+"${SETS[@]}"}
[ -f runs/base/oof.csv ] || { echo "demo: training did not finish (no runs/base/oof.csv)" >&2; exit 1; }

step "comp predict --exp base --oof   (TTA views from infer.tta, applied to test and OOF alike)"
"$COMP" predict --exp base --oof ${SETS[@]+"${SETS[@]}"}

step "comp ensemble --exp base --tune-bias"
"$COMP" ensemble --exp base --name demo_argmax
"$COMP" ensemble --exp base --tune-bias --name demo

step "comp train --exp base --full   (every row, epochs from the folds' best epochs; CV stays the folds')"
"$COMP" train --exp base --full ${SETS[@]+"${SETS[@]}"}
"$COMP" predict --exp base --use full ${SETS[@]+"${SETS[@]}"}
"$COMP" ensemble --exp base --use full --tune-bias --name demo_full

step "comp score"
"$COMP" score submissions/demo.csv --solution data/solution.csv --sample-submission data/sample_submission.csv

for name in demo_argmax demo demo_full; do
  "$COMP" score "submissions/$name.csv" --solution data/solution.csv --sample-submission data/sample_submission.csv \
    --json > "submissions/$name.score.json"
done

"$PY" - <<'PY'
import json
import pandas as pd

ledger = pd.read_csv("submissions/ledger.csv", dtype=str).set_index("name")
rows = [("TTA, argmax", "demo_argmax"), ("TTA, --tune-bias", "demo"), ("full refit, --tune-bias", "demo_full")]
print(f"\n{'submission':<28} {'CV macro F1':>12} {'hold-out macro F1':>18}")
for label, name in rows:
    cv = float(ledger.loc[name, "cv_macro_f1"])
    hold = json.load(open(f"submissions/{name}.score.json"))["macro_f1"]
    print(f"{label:<28} {cv:12.4f} {hold:18.4f}")
print("(CV: out-of-fold, biases cross-validated inside the OOF; the full refit has no OOF, so its CV is the "
      "folds'; hold-out: data/solution.csv, never seen before)")
PY

step "done in $(( $(date +%s) - START ))s; outputs in $(pwd)"
# Show the model: the Gradio app (upload, webcam, paste, Grad-CAM) serves the demo experiment's fold ensemble.
echo
echo "see the model at work (Gradio app on http://127.0.0.1:7860, Ctrl-C stops it):"
echo "  cd $(pwd) && $COMP app --exp base"
