#!/usr/bin/env bash
# Builds the test tier's binaries (Kubernetes control plane, kubectl, etcd, MinIO, mc, helm,
# Kueue) from the Go module proxy into $STEMKUBE_TOOLS_BIN (default: .cache/bin in the
# repository).
#
# Each tools/<name>/ is a wrapper Go module whose committed go.sum pins every module hash.
# A tool is rebuilt only when its wrapper module or this script changed (a stamp file records
# the hash it was built from), so a second run is a no-op.
#
# Usage: tools/build.sh [name ...]
#   names: kubernetes node etcd minio mc helm kueue (the default), kind
#   node: kubelet and kube-proxy for a real single-node cluster (hack/node-up.sh); built from
#   tools/kubernetes so the Kubernetes pins stay in one go.mod.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin=${STEMKUBE_TOOLS_BIN:-$root/.cache/bin}
mkdir -p "$bin"

# sum.golang.org is out of reach here; the committed go.sum files still verify every module.
export GOSUMDB=off
# Kubernetes 1.34.12 is released with Go 1.26 (.go-version 1.26.5). Go refuses to fetch a
# toolchain without the checksum database, so the machine's own Go 1.26.x builds everything.
export GOTOOLCHAIN=local
export GOFLAGS="-mod=readonly -trimpath"
export CGO_ENABLED=0
required_go_minor=go1.26

go_version=$(go env GOVERSION)
case "$go_version" in
  "$required_go_minor" | "$required_go_minor".*) ;;
  *) echo "tools/build.sh: need Go ${required_go_minor}.x (Kubernetes 1.34 is built with it), found $go_version" >&2; exit 1 ;;
esac

module_version() { # module_version DIR MODULE -> the version the wrapper requires
  local v
  v=$(awk -v m="$2" '$1 != "replace" { for (i = 1; i < NF; i++) if ($i == m && $(i + 1) ~ /^v/) { print $(i + 1); exit } }' \
    "$root/tools/$1/go.mod")
  [ -n "$v" ] || { echo "tools/build.sh: no version of $2 in tools/$1/go.mod" >&2; exit 1; }
  echo "$v"
}

# The wrapper module a tool is built from: node reuses tools/kubernetes's pins.
module_dir_of() {
  case "$1" in
    node) echo kubernetes ;;
    *) echo "$1" ;;
  esac
}

stamp_of() {
  local dir; dir=$(module_dir_of "$1")
  cat "$root/tools/$dir/go.mod" "$root/tools/$dir/go.sum" "$root/tools/build.sh" | sha256sum | cut -c1-16
}

kubernetes_ldflags() { # the version stamps the release binaries carry
  local v; v=$(module_version kubernetes k8s.io/kubernetes)
  local major=${v#v}; major=${major%%.*}
  local minor=${v#v*.}; minor=${minor%%.*}
  local flags="-s -w"
  local pkg key val
  for pkg in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
    for key in gitVersion:"$v" gitMajor:"$major" gitMinor:"$minor" gitTreeState:clean buildDate:1970-01-01T00:00:00Z; do
      val=${key#*:}; key=${key%%:*}
      flags+=" -X $pkg.$key=$val"
    done
  done
  echo "$flags"
}

build_kubernetes() {
  go build -ldflags "$(kubernetes_ldflags)" -o "$bin/" \
    k8s.io/kubernetes/cmd/kube-apiserver \
    k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler \
    k8s.io/kubernetes/cmd/kubectl
}

# kubelet builds without cgo (as the release's does); it talks to containerd over CRI.
build_node() {
  go build -ldflags "$(kubernetes_ldflags)" -o "$bin/" \
    k8s.io/kubernetes/cmd/kubelet \
    k8s.io/kubernetes/cmd/kube-proxy
}

build_etcd() {
  go build -ldflags "-s -w" -o "$bin/etcd" go.etcd.io/etcd/server/v3
}

# MinIO's build stamps a release time; use the pinned commit's time so it does not call itself
# a development build.
minio_ldflags() { # minio_ldflags MODULE VERSION
  local commit=${2##*-}
  local stamp=${2#v0.0.0-}; stamp=${stamp%%-*}
  local iso="${stamp:0:4}-${stamp:4:2}-${stamp:6:2}T${stamp:8:2}:${stamp:10:2}:${stamp:12:2}Z"
  echo "-s -w -X $1/cmd.Version=$iso -X $1/cmd.ReleaseTag=DEVELOPMENT.${iso//:/-} -X $1/cmd.CommitID=$commit -X $1/cmd.ShortCommitID=$commit"
}

build_minio() {
  go build -ldflags "$(minio_ldflags github.com/minio/minio "$(module_version minio github.com/minio/minio)")" \
    -o "$bin/minio" github.com/minio/minio
}

build_mc() {
  go build -ldflags "$(minio_ldflags github.com/minio/mc "$(module_version mc github.com/minio/mc)")" \
    -o "$bin/mc" github.com/minio/mc
}

build_helm() {
  local v; v=$(module_version helm helm.sh/helm/v3)
  local kv; kv=$(module_version kubernetes k8s.io/kubernetes)
  local major=${kv#v}; major=${major%%.*}
  local minor=${kv#v*.}; minor=${minor%%.*}
  # Without the Kubernetes version flags helm believes every cluster is v1.20.
  go build -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$v \
    -X helm.sh/helm/v3/internal/version.gitTreeState=clean \
    -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=$major -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$minor \
    -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=$major -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$minor" \
    -o "$bin/helm" helm.sh/helm/v3/cmd/helm
}

# The controller, plus what tests/harness/kueue.py applies to the tier, copied from the same
# module version: the CRDs, the conversion-webhook patches and the webhook configurations (which
# the harness points at 127.0.0.1, as the release's kustomize overlays point them at a Service).
#
# One line of cmd/kueue/main.go is patched: with internal cert management off, Kueue reads its
# metrics serving certificate from the fixed path /etc/kueue/metrics/certs (a Secret mount in the
# release's Deployment) and exits when it is missing. The patched copy lets
# STEMKUBE_KUEUE_METRICS_CERT_DIR name another folder, so that the tier runs as any user without
# writing under /etc. Go refuses overlays of files in the module cache, so the patched main.go
# is overlaid as a new package of this wrapper module (cmd/kueue is that one file); everything
# it imports is the published module.
build_kueue() {
  local v; v=$(module_version kueue sigs.k8s.io/kueue)
  # go list reports no folder for a module not yet in the module cache (a clean machine).
  go mod download sigs.k8s.io/kueue
  local src; src=$(go list -m -f '{{.Dir}}' sigs.k8s.io/kueue)
  local work; work=$(mktemp -d)
  # shellcheck disable=SC2064 # expand now: $work is local
  trap "rm -rf '$work'; trap - RETURN" RETURN
  local fixed='metricsCertPath := "/etc/kueue/metrics/certs"'
  [ "$(cd "$src/cmd/kueue" && echo *.go)" = main.go ] && grep -qF "$fixed" "$src/cmd/kueue/main.go" ||
    { echo "tools/build.sh: kueue $v: cmd/kueue is no longer the main.go this script patches" >&2; return 1; }
  awk -v fixed="$fixed" '{ print } index($0, fixed) {
    print "\t\tif dir := os.Getenv(\"STEMKUBE_KUEUE_METRICS_CERT_DIR\"); dir != \"\" {"
    print "\t\t\tmetricsCertPath = dir"
    print "\t\t}"
  }' "$src/cmd/kueue/main.go" >"$work/main.go"
  printf '{"Replace": {"%s": "%s"}}\n' "$PWD/cmd/kueue/main.go" "$work/main.go" >"$work/overlay.json"
  local pkg=sigs.k8s.io/kueue/pkg/version
  # BuildDate is fixed so that the same pins give the same binary; the module proxy's zip
  # carries no commit, so GitCommit is left empty rather than Kueue's placeholder.
  go build -overlay "$work/overlay.json" \
    -ldflags "-s -w -X $pkg.GitVersion=$v -X $pkg.GitCommit= -X $pkg.BuildDate=1970-01-01T00:00:00Z" \
    -o "$bin/kueue" ./cmd/kueue
  local out="$bin/kueue-config"
  rm -rf "$out"
  mkdir -p "$out/crd/patches"
  cp "$src"/config/components/crd/bases/*.yaml "$out/crd/"
  cp "$src"/config/components/crd/kustomization.yaml "$src"/config/components/crd/patches/webhook_in_*.yaml \
    "$out/crd/patches/"
  cp "$src/config/components/webhook/manifests.yaml" "$out/webhooks.yaml"
  # The module cache is read-only; the copies should not be.
  chmod -R u+w "$out"
}

build_kind() {
  go build -ldflags "-s -w" -o "$bin/kind" sigs.k8s.io/kind
}

names=("$@")
[ ${#names[@]} -gt 0 ] || names=(kubernetes node etcd minio mc helm kueue)

total_start=$SECONDS
built=0
for name in "${names[@]}"; do
  stamp_file="$bin/.$name.stamp"
  want=$(stamp_of "$name")
  if [ -f "$stamp_file" ] && [ "$(cat "$stamp_file")" = "$want" ]; then
    echo "tools: $name is up to date"
    continue
  fi
  start=$SECONDS
  echo "tools: building $name ..."
  (cd "$root/tools/$(module_dir_of "$name")" && "build_$name")
  echo "$want" >"$stamp_file"
  echo "tools: built $name in $((SECONDS - start))s"
  built=$((built + 1))
done
echo "tools: $built built, total $((SECONDS - total_start))s, in $bin"
