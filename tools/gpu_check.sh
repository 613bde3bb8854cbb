#!/usr/bin/env bash
# On a GPU machine: the one-line device check, then the real-GPU kernel tests and the
# device suite (tests/gpu runs on the CuPy stand-in everywhere; this adds the real run).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
"$PY" tools/device_check.py
"$PY" -m pytest -q tests/kernels/test_kernels_cuda.py "$@"
"$PY" -m pytest -q tests/gpu "$@"
