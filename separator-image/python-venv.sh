#!/bin/sh
# Makes /opt/venv, a Python 3.11 virtual environment with pip, inside an image build, and the
# non-root user (uid 10001) the image runs as. Shared by separator-image/Dockerfile and
# api/local.Dockerfile; their comments say why Python comes from one of two places:
#   PYTHON=base        the base image's own python3.11 (e.g. `make base-image`'s Debian image)
#   PYTHON=standalone  python-build-standalone in /opt/python, installed by uv $UV_VERSION
#                      fetched from GitHub (the CUDA images' Ubuntu has no 3.11)
set -eu
case "$PYTHON" in
  base) python3.11 -m venv /opt/venv ;;
  standalone)
    export DEBIAN_FRONTEND=noninteractive UV_PYTHON_INSTALL_DIR=/opt/python UV_NO_CACHE=1
    apt-get update
    apt-get install -y --no-install-recommends ca-certificates curl
    curl -fsSL "https://github.com/astral-sh/uv/releases/download/${UV_VERSION}/uv-$(uname -m)-unknown-linux-gnu.tar.gz" \
      | tar -xz --strip-components=1 -C /usr/local/bin
    uv python install 3.11
    uv venv --seed --python 3.11 /opt/venv
    rm /usr/local/bin/uv /usr/local/bin/uvx
    apt-get purge -y --auto-remove curl
    rm -rf /var/lib/apt/lists/*
    ;;
  *) echo "PYTHON must be base or standalone, not '$PYTHON'" >&2; exit 1 ;;
esac
useradd --uid 10001 --user-group --create-home --shell /usr/sbin/nologin stemkube
