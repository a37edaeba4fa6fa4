#!/usr/bin/env bash
# Downloads into one folder every wheel `make bench-gpu` installs on a GPU machine that has no
# network and none of the project's venv, only Python and torch with CUDA (bench_gpu.py
# installs them there with `pip install --no-index --find-links DIR --no-deps`).
#
#   separator-image/bench/gpu-wheels.sh [DIR] [--python-version 3.12] [--all]
#
# DIR defaults to .cache/gpu-wheels (git-ignored). Run it from anywhere, on a machine with the
# package index and the project's venv (make venv): the separator's dependencies, each pinned
# as separator-image/pyproject.toml and the venv have them, for Linux x86_64 and the GPU
# machine's Python (3.12; give 3.11 for a rehearsal on this project's CPU machine), as
# binary wheels only, no dependency resolution (an explicit list, below), plus wheels of
# contract/ and separator-image/ themselves.
#
# Left out: torch and what only torch needs (the GPU machine has its own: nvidia-*, triton,
# sympy, networkx, jinja2...), and, unless --all, what a run with local files or S3 and a
# --model-repo never imports, to stay under the 64 MiB a device run carries (about 57 MB
# instead of 70): kubernetes and what only it needs (--progress-cr), hf-xet (the Hugging
# Face hub's accelerated downloads) and sphn (Demucs's own audio file reading, 18 MB).
# tests/unit/test_separator_bench.py checks these lists against the venv's dependency tree.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT=$ROOT/.cache/gpu-wheels
PYVER=3.12
ALL=0
while [ $# -gt 0 ]; do
    case $1 in
        --python-version) PYVER=$2; shift ;;
        --all) ALL=1 ;;
        -h | --help) sed -n '2,20p' "$0"; exit 0 ;;
        -*) echo "unknown option $1" >&2; exit 2 ;;
        *) OUT=$1 ;;
    esac
    shift
done
PIP=(${PIP:-$ROOT/.venv/bin/python -m pip})

# What the separator imports (and the little its imports need), pinned.
RUNTIME=(
    anyio==4.16.0
    argon2-cffi==25.1.0
    argon2-cffi-bindings==26.2.0
    av==18.1.0
    certifi==2026.10.19.post1
    cffi==2.1.1
    click==8.5.1
    demucs==4.1.0
    einops==0.8.2
    filelock==4.3.1
    fsspec==2026.9.0
    h11==0.16.0
    httpcore2==2.16.2
    httpx2==2.16.2
    huggingface-hub==2.4.0
    idna==3.20
    julius==0.2.8
    lameenc==1.9.0
    minio==7.2.20
    numpy==2.4.6
    packaging==26.4
    pycparser==3.12
    pycryptodome==4.4.0
    pyyaml==6.0.3
    safetensors==0.8.0
    tqdm==4.70.1
    truststore==0.10.5
    typing-extensions==4.16.0
    urllib3==2.3.0
)
# Declared dependencies that such a run never imports (--all).
UNUSED=(
    charset-normalizer==3.5.3
    cryptography==50.0.2
    durationpy==0.11
    google-auth==2.63.0
    hf-xet==1.8.0
    kubernetes==34.1.0
    oauthlib==4.0.1
    pyasn1==0.6.5
    pyasn1-modules==0.4.2
    python-dateutil==4.0.0
    requests==2.34.2
    requests-oauthlib==2.0.0
    six==1.17.0
    sphn==0.2.1
    tzdata==2026.6
    websocket-client==1.9.2
)
WANTED=("${RUNTIME[@]}")
[ "$ALL" = 1 ] && WANTED+=("${UNUSED[@]}")

mkdir -p "$OUT"
# pip matches a manylinux_2_N tag exactly: the ones these wheels carry (glibc 2.28 or later
# runs them all: Ubuntu 20.04 and later, RHEL 8 and later).
PLATFORM=()
for tag in manylinux2014 manylinux_2_17 manylinux_2_24 manylinux_2_26 manylinux_2_27 manylinux_2_28; do
    PLATFORM+=(--platform "${tag}_x86_64")
done
for req in "${WANTED[@]}"; do
    # One at a time: a requirement with no binary wheel for this Python is built below.
    if ! "${PIP[@]}" download --quiet --no-deps --only-binary=:all: --python-version "$PYVER" \
        "${PLATFORM[@]}" --dest "$OUT" "$req"; then
        echo "no wheel of $req for Python $PYVER: building one (pure Python only)" >&2
        "${PIP[@]}" wheel --quiet --no-deps --wheel-dir "$OUT" "$req"
    fi
done
"${PIP[@]}" wheel --quiet --no-deps --wheel-dir "$OUT" "$ROOT/contract" "$ROOT/separator-image"

echo "$(find "$OUT" -name '*.whl' | wc -l) wheels, $(du -sh "$OUT" | cut -f1) in $OUT"
