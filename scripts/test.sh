#!/usr/bin/env bash
# Create .venv (CPU torch, no CUDA download), install brainparc[test] and run the default test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
export NIPYPE_NO_ET=1
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q -c constraints-cpu.txt -e '.[test]'
.venv/bin/ruff check .
exec .venv/bin/python -m pytest "$@"
