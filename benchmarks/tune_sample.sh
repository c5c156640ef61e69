#!/usr/bin/env bash
# comp tune on `comp sample` data: 12 trials (Optuna + ASHA, fold 0), then the CV over all folds of the default
# config against the best config, both trained with comp launch; prints each step's seconds and the leaderboard.
#
#   bash benchmarks/tune_sample.sh [workdir]      (COMP=path/to/comp to use another install)
set -euo pipefail
COMP=${COMP:-$(dirname "$0")/../.venv/bin/comp}
COMP=$(realpath "$COMP")
W=${1:-$(mktemp -d -t comp-tune-bench-XXXX)}
mkdir -p "$W" && cd "$W"
export NO_ALBUMENTATIONS_UPDATE=1
$COMP sample data --n-train 1500 --n-test 300 --overwrite >/dev/null
$COMP init data --overwrite >/dev/null
$COMP folds --n-splits 3 --overwrite >/dev/null
mkdir -p configs
cat > configs/base.space.yaml <<'YAML'
train.lr: {loguniform: [1.0e-4, 3.0e-2]}
train.weight_decay: {uniform: [0.0, 0.1]}
augment.preset: {choice: [none, light, medium]}
train.loss: {choice: [ce, ce+soft_f1]}
model.name: {choice: [test_resnet, resnet10t]}
YAML
SETS=(--set model.name=test_resnet --set input.size=32 --set train.epochs=4 --set train.batch_size=64)
t=$SECONDS; $COMP tune --exp base --space configs/base.space.yaml --trials 12 "${SETS[@]}" | tail -22
echo "tune: $((SECONDS - t)) s"
t=$SECONDS; $COMP launch --exp base --all-folds "${SETS[@]}" --no-live | tail -6
echo "launch default config: $((SECONDS - t)) s"
t=$SECONDS; $COMP launch --exp base-best --all-folds --no-live | tail -6
echo "launch best config: $((SECONDS - t)) s"
$COMP leaderboard | head -5
echo "workdir: $W"
