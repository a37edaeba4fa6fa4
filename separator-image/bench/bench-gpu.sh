#!/usr/bin/env bash
# make bench-gpu: the separator's GPU benchmark (bench_gpu.py), on a GPU machine without
# network or the project's venv, from a folder of wheels made by gpu-wheels.sh.
#
#   bash separator-image/bench/bench-gpu.sh [WHEELS] [bench_gpu.py options]
#
# WHEELS defaults to .cache/gpu-wheels; PYTHON (default python3) is the Python with torch.
set -euo pipefail
cd "$(dirname "$0")/../.."
WHEELS=${1:-.cache/gpu-wheels}
[ $# -gt 0 ] && shift
export PYTHONUNBUFFERED=1
exec "${PYTHON:-python3}" separator-image/bench/bench_gpu.py --wheels "$WHEELS" "$@"
