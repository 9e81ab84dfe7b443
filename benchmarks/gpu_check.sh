#!/usr/bin/env bash
# The check a person with one CUDA GPU runs (about 8 minutes): the test suite's GPU-marked tests, one
# `obliviate forget` on the embedded model, and the training-speed benchmark at a GPU-sized batch, which
# reports achieved FLOP/s against the GPU's measured bf16 matmul peak.
#
#   bash benchmarks/gpu_check.sh            # on the GPU machine, from the repository root
#   bash benchmarks/gpu_check.sh --dry-run  # anywhere: prints the commands, checks that each entry point parses
#                                           # its arguments and that the GPU tests are collected; runs nothing heavy
#
# PYTHON (default: python) is the interpreter; OUT (default: runs/gpu_check) receives the run and the results.
set -euo pipefail

DRY=0
case "${1:-}" in
  --dry-run) DRY=1 ;;
  "") ;;
  *) echo "usage: bash benchmarks/gpu_check.sh [--dry-run]" >&2; exit 2 ;;
esac
PY=${PYTHON:-python}
OUT=${OUT:-runs/gpu_check}
BATCH=${BATCH:-32}

step() { echo; echo "== $1"; }
run() { echo "+ $*"; if [ "$DRY" = 0 ]; then "$@"; fi; }

if [ "$DRY" = 0 ]; then
  "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device: run with --dry-run')"
  "$PY" -c "import torch; print('GPU:', torch.cuda.get_device_name(0))"
fi

step "1/3 GPU-marked tests"
if [ "$DRY" = 1 ]; then
  "$PY" -m pytest -q --collect-only -m gpu tests | tail -n 1
fi
run "$PY" -m pytest -q -m gpu tests

step "2/3 obliviate forget on the embedded model"
if [ "$DRY" = 1 ]; then
  "$PY" -m obliviate forget --help > /dev/null
fi
run "$PY" -m obliviate forget beatles --method npo --out "$OUT/forget" --overwrite --quiet

step "3/3 training speed at batch $BATCH (FLOP/s against the bf16 peak)"
if [ "$DRY" = 1 ]; then
  "$PY" benchmarks/training_speed.py --help > /dev/null
fi
run "$PY" benchmarks/training_speed.py --engine-only --batch-size "$BATCH" --steps 8 --out "$OUT/training_speed.json"

echo
if [ "$DRY" = 1 ]; then echo "dry run: every entry point parses; nothing was run"; else echo "GPU check done: $OUT"; fi
