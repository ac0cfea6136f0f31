#!/usr/bin/env bash
# The GPU acceptance run: benchmarks/gpu_acceptance.py does the work; its docstring lists the stages.
#
#   bash benchmarks/gpu_acceptance.sh --prepare   # here: copy ../shared/data's CIFAR-10 into .gpu_data/ (ignored)
#   bash benchmarks/gpu_acceptance.sh             # GPU machine (device tool: carry [".gpu_data"]); <= 8 minutes
#   bash benchmarks/gpu_acceptance.sh --cpu       # CPU mode, tiny sizes, generated data (tests/test_gpu_acceptance.py)
#
# Writes benchmarks/results/<YYYYMMDD-HHMMSS>-gpu-acceptance-<cuda|cpu>.json (and, when $OUT is set, a copy of it
# and the log there); exits 1 if any stage failed. Runs the package from src/ (no install, no Snakemake) with
# the machine's own python3 and torch; PYTHON overrides the interpreter.
set -u
cd "$(dirname "$0")/.." || exit 2
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
exec "${PYTHON:-python3}" benchmarks/gpu_acceptance.py "$@"
