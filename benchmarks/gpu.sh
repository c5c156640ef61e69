#!/usr/bin/env bash
# The one prepared GPU check: at most 8 minutes on one GPU, one table, no network (benchmarks/gpu_check.py).
#   bash benchmarks/gpu.sh            # on a machine with a GPU
#   bash benchmarks/gpu.sh --dry-run  # CPU, tiny sizes, end to end (CI)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
py="${PYTHON:-}"
if [ -z "$py" ]; then
  if [ -x "$here/../.venv/bin/python" ]; then py="$here/../.venv/bin/python"; else py="$(command -v python3)"; fi
fi
export HF_HUB_OFFLINE=1 NO_ALBUMENTATIONS_UPDATE=1
limit=480
case " $* " in *" --dry-run "*) limit=600 ;; esac
exec timeout "$limit" "$py" "$here/gpu_check.py" "$@"
