#!/bin/bash
# data.task ordinal against classification + cut points (issue 36), through comp auto, on `comp sample --graded`.
# For each sample seed: one competition, two working folders (comp init --task ordinal / comp init + metric qwk),
# `comp auto --budget B` in each, then the hold-out qwk of submissions/auto.csv. Run it alone (2-core machine).
#   benchmarks/ordinal.sh OUT [BUDGET=4m] [SEEDS="0 1"] [N_TRAIN=2000]
set -euo pipefail
OUT=${1:?OUT folder}; BUDGET=${2:-4m}; SEEDS=${3:-"0 1"}; N=${4:-2000}
C="$(cd "$(dirname "$0")/.." && pwd)/.venv/bin/comp"
export NO_ALBUMENTATIONS_UPDATE=1 HF_HUB_OFFLINE=1
mkdir -p "$OUT"; cd "$OUT"; echo "uptime before: $(uptime)"
for s in $SEEDS; do
  [ -d "graded$s" ] || $C sample "graded$s" --graded --n-train "$N" --n-test 500 --imbalance 4 --seed "$s" > /dev/null
  for task in ordinal multiclass; do
    w="$task$s"; mkdir -p "$w"; cd "$w"
    if [ "$task" = ordinal ]; then $C init "../graded$s" --task ordinal > init.log
    else $C init "../graded$s" > init.log && sed -i 's/^  metric: macro_f1$/  metric: qwk/' comp.yaml; fi
    start=$(date +%s); $C auto --budget "$BUDGET" > auto.log 2>&1; wall=$(( $(date +%s) - start ))
    cv=$(grep -o "cv qwk of this submission: [0-9.]*" auto.log | tail -1 | awk '{print $NF}')
    plain=$(grep -o "OOF qwk plain [0-9.]*" auto.log | tail -1 | awk '{print $NF}')
    hold=$($C score submissions/auto.csv --solution "../graded$s/solution.csv" --json | python3 -c "import json,sys; print(round(json.load(sys.stdin)['score'], 4))")
    model=$(python3 -c "import json; c=json.load(open('runs/auto/plan.json'))['choices']; print(c['auto-a']['params'].get('model.name', json.load(open('runs/auto/plan.json'))['plan']['models'][0]), c['size'])")
    echo "seed $s | $task | model+size $model | wall ${wall}s | OOF qwk at argmax $plain | CV qwk (nested, cut points) $cv | hold-out qwk $hold"
    cd ..
  done
done
echo "uptime after: $(uptime)"
