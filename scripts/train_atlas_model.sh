#!/usr/bin/env bash
# Train (or continue training) the bundled atlas-guided model on the CPU, in resumable runs (docs/models.md).
#
#   bash scripts/train_atlas_model.sh SHARED_DATA ROOT RUN_DIR SECONDS
#
# 1. the training root and the atlas coordinates (scripts/build_atlas.py; registrations are cached in ROOT),
# 2. `brainparc train parc --preset brainparc-atlas` for SECONDS of training, resuming RUN_DIR's newest checkpoint
#    when there is one (several runs of a few hours add up; the DataLoader workers are sized from the machine),
# 3. the newest checkpoint exported as brainparc/models/weights/brainparc-atlas.safetensors with its card.
# The atlas is NOT rebuilt here: weights are tied to the atlas they trained with (its sha256 is in their card).
# FILE_LIST (default atlas_synth.csv: the real subjects twice + the label-only SynthSeg maps 1-19 and BrainParc sub004,
# always synthesised; atlas.csv: real images only, the v2.2 recipe), INIT (weights to fine-tune from, e.g. a saved
# copy of the bundled file) and LR (default 1e-3; v2.3 used 2e-3 with --lr-final-from 0 via EXTRA) are optional;
# EXTRA holds more `brainparc train parc` flags. fp32: with torch 2.13 bf16 autocast gave a non-finite convolution gradient
# on 2 of 12 training batches of v2.3 (fp32 none), and fp32 steps were faster: 1.5 s per batch of 2 against 2.3 s (2 threads).
set -euo pipefail
shared=${1:?shared data folder} root=${2:?training root} run=${3:?run folder} seconds=${4:?seconds of training}
py=${PYTHON:-.venv/bin/python}
if [[ ! -f "$root/csvfile/atlas.csv" ]]; then
    "$py" scripts/build_atlas.py "$shared" "$root" --out "$root/atlas_rebuilt.npz"  # registers; keeps the bundled atlas
    {
        echo "IDs,folder,fold"
        for n in $(seq 1 11); do echo "atlas_$n,MB,3"; done
        echo "sub001_infant_infantile,BP,3"
        echo "sub003_infant_adult_like,BP,3"
        echo "atlas_12,MB,2"
    } > "$root/csvfile/atlas.csv"
fi
if [[ ! -f "$root/csvfile/atlas_synth.csv" ]]; then
    {
        echo "IDs,folder,fold"
        for _ in 1 2; do grep ",3$" "$root/csvfile/atlas.csv"; done
        for n in $(seq -w 1 19); do echo "training_seg_$n,SS,3"; done  # map 20: benchmarks/dev_synthetic.py
        echo "sub004_child,BP,3"
        echo "atlas_12,MB,2"
    } > "$root/csvfile/atlas_synth.csv"
fi
init=()
if [[ -n "${INIT:-}" ]]; then init=(--init "$INIT"); fi
resume=()
if compgen -G "$run/checkpoints/chk_*.pt" > /dev/null; then resume=(--resume auto); fi
OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(nproc)} "$py" -m brainparc train parc --data "$root" \
    --file-list "${FILE_LIST:-atlas_synth.csv}" --out "$run" --preset brainparc-atlas --synth-ratio 0 --batch-size 2 \
    --no-amp --patches-per-subject 4 --epochs 100000 --time-limit "$seconds" --val-every 0 --keep-checkpoints 1000 \
    --device cpu --no-progress --lr "${LR:-1e-3}" "${init[@]}" "${resume[@]}" ${EXTRA:-}
latest=$(ls -1v "$run"/checkpoints/chk_*.pt | tail -1)
"$py" scripts/export_weights.py "$latest" brainparc/models/weights/brainparc-atlas.safetensors \
    --status preliminary --inference "${INFERENCE_JSON:-{\}}" --note "${NOTE:-CPU-trained atlas-guided cascade}"
