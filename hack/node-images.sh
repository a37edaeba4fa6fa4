#!/usr/bin/env bash
# Puts images into the private containerd of hack/node-up.sh. Nothing can be pulled from a
# registry here, so every image a pod uses (and the pod sandbox "pause" image) must be built
# locally and imported into containerd's k8s.io namespace, the one the kubelet's CRI uses.
#
# Usage: hack/node-images.sh [--address SOCK] [--pause] [--move] [IMAGE ...]
#   --pause   build the sandbox image ($STEMKUBE_PAUSE_IMAGE) from a tiny static Go program and
#             import it; a no-op when containerd already has it
#   --move    remove the IMAGEs from the docker engine once containerd holds their layers, before
#             unpacking them: the disk then holds two copies of an image at most, not three
#   IMAGE     a docker image (repo:tag) to copy from the docker engine into containerd; pods
#             must refer to it by the same name with imagePullPolicy Never or IfNotPresent
#             (containerd records "foo/bar:t" as "docker.io/foo/bar:t", which is what the
#             kubelet looks up for "foo/bar:t" too)
set -euo pipefail

address=${STEMKUBE_NODE_SOCK:-/run/stemkube-node/containerd.sock}
pause_image=${STEMKUBE_PAUSE_IMAGE:-stemkube.local/pause:1}
# Must match the CRI snapshotter of hack/node-up.sh, else the kubelet finds the image unpacked
# for the wrong snapshotter and containerd has to unpack it again at pod start.
snapshotter=${STEMKUBE_NODE_SNAPSHOTTER:-overlayfs}
DOCKER=${DOCKER:-docker}
want_pause=false
move=false
images=()
while [ $# -gt 0 ]; do
  case "$1" in
    --address) address=$2; shift 2 ;;
    --pause) want_pause=true; shift ;;
    --move) move=true; shift ;;
    -h | --help) sed -n '2,16p' "$0"; exit 0 ;;
    *) images+=("$1"); shift ;;
  esac
done

ctr_() { ctr --address "$address" --namespace k8s.io "$@"; }

ctr_ version >/dev/null 2>&1 || { echo "node-images: no containerd answers on $address (run hack/node-up.sh start)" >&2; exit 1; }

containerd_name() { # the name containerd records for a docker reference
  local first=${1%%/*}
  if [[ $1 != */* ]]; then
    echo "docker.io/library/$1"
  elif [[ $first == *.* || $first == *:* || $first == localhost ]]; then
    echo "$1"
  else
    echo "docker.io/$1"
  fi
}

has_image() { # has_image REF: containerd already holds the docker reference REF
  local names; names=$(ctr_ images ls -q)  # not a pipe: grep -q's early exit would fail it
  grep -qxF "$(containerd_name "$1")" <<<"$names"
}

build_pause() {
  # The sandbox container only has to hold the pod's namespaces open, exit on SIGTERM/SIGINT and
  # reap zombies (it is PID 1 when a pod shares its PID namespace). A static Go binary in a
  # FROM-scratch image does that in ~1.5 MB, without the registry.k8s.io/pause we cannot pull.
  local dir; dir=$(mktemp -d)
  trap 'rm -rf "$dir"' RETURN
  cat >"$dir/main.go" <<'EOF'
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for s := range sigs {
		if s != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			var ws syscall.WaitStatus
			if pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil); pid <= 0 || err != nil {
				break
			}
		}
	}
}
EOF
  printf 'module pause\n\ngo 1.22\n' >"$dir/go.mod"
  printf 'FROM scratch\nCOPY pause /pause\nENTRYPOINT ["/pause"]\n' >"$dir/Dockerfile"
  (cd "$dir" && CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS='' go build -trimpath -ldflags "-s -w" -o pause .)
  $DOCKER build -q -t "$pause_image" "$dir" >/dev/null
}

if $want_pause; then
  if has_image "$pause_image"; then
    echo "node-images: $pause_image already in containerd"
  else
    $DOCKER image inspect "$pause_image" >/dev/null 2>&1 || build_pause
    images+=("$pause_image")
  fi
fi

unpack() { # unpack REF into the snapshotter: mounting the image unpacks it, if it is not yet
  local target; target=$(mktemp -d)
  ctr_ images mount --snapshotter "$snapshotter" "$1" "$target" >/dev/null
  ctr_ images unmount --rm "$target" >/dev/null
  rmdir "$target"
}

layer_digests() { # the layer blobs of REF's manifest
  local manifest
  manifest=$(ctr_ images ls | awk -v ref="$1" '$1 == ref { print $3 }')
  ctr_ content get "$manifest" | python3 -c 'import json, sys; [print(l["digest"]) for l in json.load(sys.stdin)["layers"]]'
}

[ ${#images[@]} -gt 0 ] || exit 0
start=$SECONDS
# The import is split so that no more than two copies of an image are on disk at once (the
# separator image is ~5 GB): docker's image and the layer blobs, then (with --move) the blobs
# and the unpacked snapshot, and at the end the snapshot alone. One docker save for all images
# shares their common layers in the stream.
$DOCKER save "${images[@]}" | ctr_ images import --no-unpack - >/dev/null
if $move; then
  $DOCKER rmi "${images[@]}" >/dev/null
fi
refs=()
for image in "${images[@]}"; do
  refs+=("$(containerd_name "$image")")
  unpack "${refs[-1]}"
done
# The layer blobs are not needed once unpacked: the CRI runs containers from the snapshots and
# reads only the manifest and config. containerd's discard_unpacked_layers does the same for
# images the CRI pulls.
mapfile -t layers < <(for ref in "${refs[@]}"; do layer_digests "$ref"; done | sort -u)
ctr_ content rm "${layers[@]}" >/dev/null
echo "node-images: imported ${images[*]} in $((SECONDS - start))s"
