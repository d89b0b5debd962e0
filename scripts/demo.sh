#!/usr/bin/env bash
# Create .venv (CPU torch, no CUDA download), install brainparc and run `brainparc demo OUTDIR [options]`.
# Uses the bundled weights; other weights by path: bash scripts/demo.sh OUTDIR --model BrainParc.pth.gz
# Prints one line per stage; pip's output goes to OUTDIR/install.log (shown only when the install fails).
set -euo pipefail
cd "$(dirname "$0")/.."
export NIPYPE_NO_ET=1
OUT="${1:-brainparc-demo}"
mkdir -p "$OUT"
LOG="$(cd "$OUT" && pwd)/install.log"
echo "brainparc demo: installing brainparc into .venv (CPU torch; the first time takes minutes; log: $LOG)"
{
    [ -x .venv/bin/python ] || python3 -m venv .venv
    .venv/bin/python -m pip install -q --disable-pip-version-check -c constraints-cpu.txt -e '.[test]'
} > "$LOG" 2>&1 || { tail -n 20 "$LOG" >&2; echo "brainparc demo: the install failed; full log: $LOG" >&2; exit 1; }
exec .venv/bin/brainparc demo "$OUT" "${@:2}"
