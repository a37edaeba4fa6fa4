#!/usr/bin/env bash
# Puts images into the private containerd of hack/node-up.sh. Nothing can be pulled from a
# registry here, so every image a pod uses (and the pod sandbox "pause" image) must be built
# locally and imported into containerd's k8s.io namespace, the one the kubelet's CRI uses.
#
# Usage: hack/node-images.sh [--address SOCK] [--pause] [IMAGE ...]
#   --pause   build the sandbox image ($STEMKUBE_PAUSE_IMAGE) from a tiny static Go program and
#             import it; a no-op when containerd already has it
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
images=()
while [ $# -gt 0 ]; do
  case "$1" in
    --address) address=$2; shift 2 ;;
    --pause) want_pause=true; shift ;;
    -h | --help) sed -n '2,14p' "$0"; exit 0 ;;
    *) images+=("$1"); shift ;;
  esac
done

ctr_() { ctr --address "$address" --namespace k8s.io "$@"; }

ctr_ version >/dev/null 2>&1 || { echo "node-images: no containerd answers on $address (run hack/node-up.sh start)" >&2; exit 1; }

has_image() { # has_image REF: containerd already holds REF (as given or docker.io-normalised)
  local names; names=$(ctr_ images ls -q)
  grep -qxF "$1" <<<"$names" || grep -qxF "docker.io/$1" <<<"$names" || grep -qxF "docker.io/library/$1" <<<"$names"
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

[ ${#images[@]} -gt 0 ] || exit 0
start=$SECONDS
# One docker save for all images shares their common layers in the stream.
$DOCKER save "${images[@]}" | ctr_ images import --snapshotter "$snapshotter" - >/dev/null
echo "node-images: imported ${images[*]} in $((SECONDS - start))s"
