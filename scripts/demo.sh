#!/usr/bin/env bash
# Create .venv (CPU torch, no CUDA download), install brainparc and run `brainparc demo OUTDIR [options]`.
# Uses the bundled weights; other weights by path: bash scripts/demo.sh OUTDIR --model BrainParc.pth.gz
set -euo pipefail
cd "$(dirname "$0")/.."
export NIPYPE_NO_ET=1
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q -c constraints-cpu.txt -e '.[test]'
exec .venv/bin/brainparc demo "${1:-brainparc-demo}" "${@:2}"
