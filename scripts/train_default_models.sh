#!/usr/bin/env bash
# Train the bundled default models (brainparc-lite + autostrip-lite) side by side on one GPU, each stopped by
# --time-limit, then write float16 copies for the package (docs/models.md, "Training recipe").
#
#   bash scripts/train_default_models.sh ROOT RUN_DIR SECONDS
#
# ROOT: the root from scripts/build_training_root.py.  RUN_DIR gets parc/ and strip/ (logs, history.csv, weights) and
# brainparc-lite.safetensors / autostrip-lite.safetensors (fp16).  Environment: PYTHON (python3), DEVICE (cuda; cpu for
# training on the CPU), TASKS ("parc strip"), PARC_WORKERS (11), STRIP_WORKERS (4), PARC_EXTRA / STRIP_EXTRA (more
# options, given last; e.g. --init WEIGHTS to continue from earlier weights), CPU_AMP=1 (bf16 autocast on a CPU with
# AVX512-BF16/AMX: ~1.6x faster steps), OMP_NUM_THREADS (torch threads per training; default 1).
set -uo pipefail
root=$1 run=$2 seconds=$3
py=${PYTHON:-python3}
device=${DEVICE:-cuda}
mkdir -p "$run"
common=(--data "$root" --device "$device" --val-every 0 --save-every 0 --epochs 100000 --time-limit "$seconds"
    --patches-per-subject 16 --no-progress)
[[ $device == cuda* || ${CPU_AMP:-0} == 1 ]] && common+=(--amp)
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}  # on a GPU the loaders' workers do the CPU work

pids=() names=()
if [[ " ${TASKS:-parc strip} " == *" parc "* ]]; then
    # shellcheck disable=SC2086  # *_EXTRA are option lists
    "$py" -m brainparc train parc "${common[@]}" --file-list parc.csv --out "$run/parc" --preset brainparc-lite \
        --num-workers "${PARC_WORKERS:-11}" --batch-size 4 --synth-ratio 0.35 ${PARC_EXTRA:-} >"$run/parc.log" 2>&1 &
    pids+=($!) names+=(parc)
fi
if [[ " ${TASKS:-parc strip} " == *" strip "* ]]; then
    # shellcheck disable=SC2086
    "$py" -m brainparc train strip "${common[@]}" --file-list strip.csv --out "$run/strip" --preset autostrip-lite \
        --num-workers "${STRIP_WORKERS:-4}" --batch-size 2 --synth-ratio 1.0 ${STRIP_EXTRA:-} >"$run/strip.log" 2>&1 &
    pids+=($!) names+=(strip)
fi
rc=0
for i in "${!pids[@]}"; do
    wait "${pids[$i]}"; code=$?
    echo "train ${names[$i]} exit $code"
    rc=$((rc || code))
done

"$py" - "$run" <<'EOF'
import sys
from pathlib import Path

import torch

from brainparc import models

run = Path(sys.argv[1])
for task, name in (("parc", "brainparc-lite"), ("strip", "autostrip-lite")):
    src = run / task / "model.safetensors"
    if src.is_file():
        model, card = models.load(src)
        card = {k: v for k, v in card.items() if k not in ("sha256", "source", "version", "dtype", "arch")}
        out = models.save(model, run / f"{name}.safetensors", dtype=torch.float16, **card)
        print(f"{name}: {out['sha256'][:12]} {(run / f'{name}.safetensors').stat().st_size / 2**20:.1f} MB")
EOF
exit $rc
