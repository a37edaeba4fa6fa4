#!/usr/bin/env bash
# Builds a Python 3.11 base image from Debian packages, for machines that reach Debian's
# archive but no container registry (as in CI): debootstrap a minimal bookworm, add Python and
# pip, import the tree as an image. It stands in for python:3.11-slim:
#
#   hack/debian-base.sh                      # -> stemkube/python-base:3.11-bookworm
#   make images BASE_IMAGE=stemkube/python-base:3.11-bookworm
set -euo pipefail

IMAGE=${1:-stemkube/python-base:3.11-bookworm}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
DOCKER=${DOCKER:-docker}

if $DOCKER image inspect "$IMAGE" >/dev/null 2>&1; then
  echo "$IMAGE exists"
  exit 0
fi
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
debootstrap --variant=minbase --include=python3,python3-pip,python3-venv,ca-certificates \
  bookworm "$root" "$MIRROR"
# Like python:3.11-slim: pip installs into the image's Python (the image is the environment),
# `python` is python3, and no apt lists are kept.
rm -f "$root"/usr/lib/python3*/EXTERNALLY-MANAGED
# The CAs this machine adds to Debian's (a TLS-inspecting proxy's, say), so that pip in the
# image reaches PyPI the way the host does.
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
  cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
  chroot "$root" update-ca-certificates >/dev/null
fi
ln -sf python3 "$root/usr/bin/python"
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin
tar -C "$root" -c . | $DOCKER import \
  --change 'ENV PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin LANG=C.UTF-8' \
  --change 'CMD ["python3"]' - "$IMAGE"
echo "built $IMAGE"
