#!/usr/bin/env bash
# A real single Kubernetes node on this machine: a private containerd (Debian's, with runc and
# the CNI bridge plugin) and a kubelet (tools/build.sh node) registered with a given API server.
#
# It runs where the test tier runs: as root inside an unprivileged sandbox container with cgroup
# v1, no CAP_SYS_RESOURCE and no registry access. Each setting below that exists for that reason
# says so. It never touches the docker engine's own containerd: socket, root, state, CNI config
# and IPAM are all private.
#
# Usage:
#   hack/node-up.sh start --dir DIR --kubeconfig FILE [--name NODE] [--ca-cert CRT --ca-key KEY]
#                         [--pod-cidr A.B.C.0/N] [--port PORT] [--healthz-port PORT]
#                         [--labels k=v,...] [--proxy] [-- EXTRA_KUBELET_FLAGS...]
#   hack/node-up.sh stop  --dir DIR [--purge]
#   hack/node-up.sh status --dir DIR
#
#   DIR         logs (containerd.log, kubelet.log), pids, configs, kubelet root and images
#   --kubeconfig  how to reach the API server; with --ca-cert/--ca-key (the cluster CA) the
#               kubelet gets its own identity instead (CN system:node:NODE, O system:nodes), so
#               the Node authorizer and NodeRestriction apply as on a real cluster
#   --pod-cidr  pod addresses (default 10.88.0.0/24); its .1 is the bridge and the node's IP
#   --proxy     also run kube-proxy (iptables mode), so that Service IPs work from the host and
#               from pods: the `kubernetes` Service then needs an API server that pods can reach
#               (listening on the bridge's address and advertising it)
#   --purge     also delete DIR's containerd root (imported images) and kubelet root
#
# The API server must reach the kubelet by its InternalIP: start kube-apiserver with
# --kubelet-preferred-address-types=InternalIP,Hostname (the node name resolves nowhere), or
# `kubectl logs/exec` fail with "lookup NODE ...: no such host".
#
# Environment: STEMKUBE_NODE_RUN (sockets and runtime state, default /run/stemkube-node; kept
# short because unix socket paths are limited to 108 bytes), STEMKUBE_TOOLS_BIN (kubelet,
# kubectl; default .cache/bin), STEMKUBE_PAUSE_IMAGE, STEMKUBE_NODE_SNAPSHOTTER (overlayfs),
# STEMKUBE_NODE_QOS_CGROUPS (true).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin=${STEMKUBE_TOOLS_BIN:-$root/.cache/bin}
run=${STEMKUBE_NODE_RUN:-/run/stemkube-node}
pause_image=${STEMKUBE_PAUSE_IMAGE:-stemkube.local/pause:1}
snapshotter=${STEMKUBE_NODE_SNAPSHOTTER:-overlayfs}
qos_cgroups=${STEMKUBE_NODE_QOS_CGROUPS:-true}
export STEMKUBE_NODE_SOCK=$run/containerd.sock STEMKUBE_PAUSE_IMAGE=$pause_image STEMKUBE_NODE_SNAPSHOTTER=$snapshotter
PATH=$PATH:/usr/sbin:/sbin
bridge=stemkube0
cni_net=stemkube

cmd=${1:-}
[ $# -gt 0 ] && shift
dir="" kubeconfig="" name=stemkube-node ca_cert="" ca_key="" pod_cidr=10.88.0.0/24
port=10250 healthz_port=10248 labels="" purge=false proxy=false extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --dir) dir=$2; shift 2 ;;
    --kubeconfig) kubeconfig=$2; shift 2 ;;
    --name) name=$2; shift 2 ;;
    --ca-cert) ca_cert=$2; shift 2 ;;
    --ca-key) ca_key=$2; shift 2 ;;
    --pod-cidr) pod_cidr=$2; shift 2 ;;
    --port) port=$2; shift 2 ;;
    --healthz-port) healthz_port=$2; shift 2 ;;
    --labels) labels=$2; shift 2 ;;
    --purge) purge=true; shift ;;
    --proxy) proxy=true; shift ;;
    --) shift; extra=("$@"); break ;;
    *) echo "node-up: unknown argument $1" >&2; exit 2 ;;
  esac
done
usage() { sed -n '10,28p' "$0" >&2; exit 2; }
[ -n "$dir" ] || usage
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)

sock=$run/containerd.sock
gateway=${pod_cidr%.*}.1 # the bridge's address: pods' default gateway, and the node's IP
prefix=${pod_cidr#*/}

ctr_() { ctr --address "$sock" --namespace k8s.io "$@"; }

alive() { # alive NAME: the process recorded in DIR/NAME.pid runs and is still that binary
  local pid
  pid=$(cat "$dir/$1.pid" 2>/dev/null) || return 1
  [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "$1"
}

stop_pid() { # stop_pid NAME: SIGTERM, then SIGKILL after 15 s
  alive "$1" || { rm -f "$dir/$1.pid"; return 0; }
  local pid; pid=$(cat "$dir/$1.pid")
  kill -TERM "$pid" 2>/dev/null || true
  # Our processes outlive the script that started them, so their parent is the sandbox's init,
  # which reaps late: a zombie ("Z" in /proc/PID/stat) has exited.
  for _ in $(seq 150); do
    kill -0 "$pid" 2>/dev/null || break
    [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ] || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$dir/$1.pid"
}

wait_for() { # wait_for SECONDS WHAT CMD...: poll CMD every 0.2 s
  local deadline=$((SECONDS + $1)) what=$2; shift 2
  until "$@" >/dev/null 2>&1; do
    if [ $SECONDS -ge $deadline ]; then echo "node-up: $what did not happen within the time limit" >&2; return 1; fi
    sleep 0.2
  done
}

write_containerd_config() {
  mkdir -p "$dir/containerd" "$dir/cni/net.d" "$run"
  cat >"$dir/containerd/config.toml" <<EOF
version = 2
root = "$dir/containerd/root"
state = "$run/state"
# Snapshotters that cannot work here only add errors to the log; /opt/containerd is not ours.
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.internal.v1.opt"]
[grpc]
  address = "$sock"
[ttrpc]
  address = "$sock.ttrpc"
[plugins."io.containerd.grpc.v1.cri"]
  # No registry can be reached: the sandbox image is built locally (hack/node-images.sh --pause).
  sandbox_image = "$pause_image"
  # The sandbox lacks CAP_SYS_RESOURCE, so runc cannot lower oom_score_adj below the parent's
  # (the kubelet asks -998 for every sandbox, and negative values for Guaranteed pods). This
  # clamps the request to containerd's own value instead of failing the container start.
  restrict_oom_score_adj = true
  # Keep the pods' network namespaces under our state dir, not the host's /var/run/netns.
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "$snapshotter"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        # No systemd runs here: the kubelet and runc both use the cgroupfs driver.
        SystemdCgroup = false
        BinaryName = "$(command -v runc)"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$dir/cni/net.d"
EOF
  # A bridge with the gateway address, no IP masquerade (nothing outside is reachable anyway,
  # and it would leave iptables rules behind), host-local IPAM state kept in DIR.
  cat >"$dir/cni/net.d/10-$cni_net.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "$cni_net",
  "plugins": [
    {
      "type": "bridge", "bridge": "$bridge", "isGateway": true, "ipMasq": false, "hairpinMode": true,
      "ipam": {"type": "host-local", "dataDir": "$run/ipam",
               "ranges": [[{"subnet": "$pod_cidr", "gateway": "$gateway"}]],
               "routes": [{"dst": "0.0.0.0/0"}]}
    },
    {"type": "loopback"}
  ]
}
EOF
}

ensure_bridge() {
  # Created up front (the CNI plugin would only make it at the first pod) so that the kubelet can
  # use the gateway as its node IP: an address that only this machine and its pods can reach,
  # where the kubelet's anonymous API can listen (the kubelet refuses a loopback node IP).
  ip link show "$bridge" >/dev/null 2>&1 || ip link add "$bridge" type bridge
  ip addr show dev "$bridge" | grep -qF " $gateway/$prefix " || ip addr add "$gateway/$prefix" dev "$bridge"
  ip link set "$bridge" up
  # Docker sets the FORWARD policy to DROP; the pod-to-pod traffic on the bridge stays local,
  # but pods reaching other host networks needs forwarding.
  sysctl -qw net.ipv4.ip_forward=1 2>/dev/null || true
}

start_containerd() {
  if alive containerd && ctr_ version >/dev/null 2>&1; then return 0; fi
  stop_pid containerd
  write_containerd_config
  local t=$SECONDS
  (cd "$dir" && exec nohup containerd --config "$dir/containerd/config.toml" >>"$dir/containerd.log" 2>&1 &
    echo $! >"$dir/containerd.pid")
  wait_for 30 "containerd answering on $sock" ctr_ version
  echo "node-up: containerd up in $((SECONDS - t))s (log $dir/containerd.log)"
}

server_of() { # server_of KUBECONFIG: the API server URL of its current context
  "$bin/kubectl" --kubeconfig "$1" config view --minify -o jsonpath='{.clusters[0].cluster.server}'
}

write_node_identity() {
  # A client certificate for system:node:NAME signed by the cluster CA, and a kubeconfig with it.
  local pki=$dir/pki server
  mkdir -p "$pki"
  if [ ! -s "$pki/node.crt" ] || ! openssl verify -CAfile "$ca_cert" "$pki/node.crt" >/dev/null 2>&1 ||
    ! openssl x509 -in "$pki/node.crt" -noout -subject | grep -qF "system:node:$name"; then
    openssl ecparam -name prime256v1 -genkey -noout -out "$pki/node.key" 2>/dev/null
    chmod 600 "$pki/node.key"
    openssl req -new -key "$pki/node.key" -subj "/O=system:nodes/CN=system:node:$name" -out "$pki/node.csr"
    printf 'basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\nkeyUsage=digitalSignature,keyEncipherment\n' >"$pki/ext.cnf"
    openssl x509 -req -in "$pki/node.csr" -CA "$ca_cert" -CAkey "$ca_key" -CAcreateserial \
      -CAserial "$pki/ca.srl" -days 7 -extfile "$pki/ext.cnf" -out "$pki/node.crt" 2>/dev/null
  fi
  server=$(server_of "$kubeconfig")
  cat >"$dir/kubelet.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: cluster
  cluster: {server: "$server", certificate-authority: "$ca_cert"}
users:
- name: "system:node:$name"
  user: {client-certificate: "$pki/node.crt", client-key: "$pki/node.key"}
contexts:
- name: node
  context: {cluster: cluster, user: "system:node:$name"}
current-context: node
EOF
  chmod 600 "$dir/kubelet.kubeconfig"
}

write_kubelet_config() {
  mkdir -p "$dir/kubelet" "$dir/pod-logs"
  cat >"$dir/kubelet-config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
containerRuntimeEndpoint: unix://$sock
# cgroup v1 without systemd: cgroupfs, and v1 must be allowed explicitly since 1.31.
cgroupDriver: cgroupfs
failCgroupV1: false
# The sandbox's swap setting is not ours to change.
failSwapOn: false
# The kubepods/QoS cgroup hierarchy works with cgroup v1 here (pod memory/CPU limits apply);
# STEMKUBE_NODE_QOS_CGROUPS=false turns it off, and pods then sit in containerd's /k8s.io/<id>.
cgroupsPerQOS: $qos_cgroups
enforceNodeAllocatable: $( $qos_cgroups && echo '["pods"]' || echo '[]' )
# The kubelet's API: on the bridge address (the node IP), anonymous and unauthorised, because
# the test API server presents no kubelet client certificate (logs/exec go through it).
address: "$gateway"
port: $port
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $healthz_port
authentication:
  anonymous: {enabled: true}
  webhook: {enabled: false}
authorization: {mode: AlwaysAllow}
clusterDomain: cluster.local
# The shared disk is often >85% full: the default thresholds (nodefs.available<10%, image GC
# at 85%) would evict pods and delete the imported images, which cannot be pulled back.
evictionHard:
  memory.available: "50Mi"
  nodefs.available: "1%"
  imagefs.available: "1%"
  nodefs.inodesFree: "1%"
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
# Keep the kubelet's files in DIR and its hands off the host's iptables.
podLogsDir: "$dir/pod-logs"
volumePluginDir: "$dir/kubelet/volume-plugins"
makeIPTablesUtilChains: false
EOF
}

start_kubelet() {
  if alive kubelet; then return 0; fi
  local kcfg=$kubeconfig
  if [ -n "$ca_cert" ]; then
    [ -n "$ca_key" ] || { echo "node-up: --ca-cert needs --ca-key" >&2; exit 2; }
    write_node_identity
    kcfg=$dir/kubelet.kubeconfig
  fi
  write_kubelet_config
  local t=$SECONDS args=(
    --config="$dir/kubelet-config.yaml"
    --kubeconfig="$kcfg"
    --root-dir="$dir/kubelet"
    --cert-dir="$dir/kubelet/pki"
    --hostname-override="$name"
    --node-ip="$gateway"
    --v="${KUBELET_V:-1}"
  )
  [ -z "$labels" ] || args+=(--node-labels="$labels")
  kubelet_started=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  (cd "$dir" && exec nohup "$bin/kubelet" "${args[@]}" "${extra[@]}" >>"$dir/kubelet.log" 2>&1 &
    echo $! >"$dir/kubelet.pid")
  wait_for 60 "kubelet healthz on 127.0.0.1:$healthz_port" \
    curl -sf "http://127.0.0.1:$healthz_port/healthz"
  wait_for 60 "node $name Ready" node_ready
  echo "node-up: kubelet up, node $name Ready in $((SECONDS - t))s (log $dir/kubelet.log)"
}

start_proxy() {
  if alive kube-proxy; then return 0; fi
  local t=$SECONDS
  # --masquerade-all: the bridge is not br_netfilter'ed, so a pod reaching a Service whose
  # endpoint sits on the same bridge would get the reply straight from that pod, un-NATed;
  # masquerading sends replies back through the host. --conntrack-max-per-core=0 leaves the
  # sandbox's conntrack sysctls, which it may not write, as they are.
  (cd "$dir" && exec nohup "$bin/kube-proxy" --kubeconfig="$kubeconfig" --hostname-override="$name" \
    --proxy-mode=iptables --cluster-cidr="$pod_cidr" --masquerade-all --conntrack-max-per-core=0 \
    --healthz-bind-address=127.0.0.1:10256 --metrics-bind-address="" --v="${KUBE_PROXY_V:-1}" \
    >>"$dir/kube-proxy.log" 2>&1 &
    echo $! >"$dir/kube-proxy.pid")
  wait_for 60 "kube-proxy's first iptables sync" iptables -t nat -n -L KUBE-SERVICES
  echo "node-up: kube-proxy up in $((SECONDS - t))s (log $dir/kube-proxy.log)"
}

node_ready() { # Ready, by a heartbeat of this kubelet (not one left from an earlier run)
  local got
  got=$("$bin/kubectl" --kubeconfig "$kubeconfig" get node "$name" \
    -o jsonpath='{range .status.conditions[?(@.type=="Ready")]}{.status} {.lastHeartbeatTime}{end}' 2>/dev/null) || return 1
  # RFC 3339 UTC stamps compare as strings.
  [ "${got%% *}" = True ] && [[ ! "${got#* }" < "$kubelet_started" ]]
}

unmount_under() { # unmount_under PATH...: lazily unmount the paths and all below, deepest first
  local p
  for p in "$@"; do
    # The kubelet bind-mounts its root dir onto itself (to make it shared), hence "== p" too.
    # /proc/self/mounts escapes spaces as \040; our paths have none.
    awk -v p="$p" '$2 == p || index($2, p "/") == 1 { print $2 }' /proc/self/mounts | sort -r | while read -r m; do
      umount -l "$m" 2>/dev/null || true
    done
  done
}

do_stop() {
  # The kubelet first, so it does not restart what we remove.
  stop_pid kubelet
  if alive kube-proxy || [ -e "$dir/kube-proxy.log" ]; then
    stop_pid kube-proxy
    "$bin/kube-proxy" --cleanup >>"$dir/kube-proxy.log" 2>&1 || true # its iptables chains
  fi
  if alive containerd && ctr_ version >/dev/null 2>&1; then
    # Kill every pod container and sandbox. Without a CRI client there is no StopPodSandbox, so
    # the CNI teardown is done by hand below (netns mounts, IPAM state, bridge).
    local ids id
    ids=$(ctr_ tasks ls -q 2>/dev/null || true)
    for id in $ids; do
      ctr_ tasks kill -s SIGKILL "$id" >/dev/null 2>&1 || true
      # libcni's result cache (fixed at /var/lib/cni/results) is only cleared by a CNI DEL.
      rm -f /var/lib/cni/results/"$cni_net-$id"-* /var/lib/cni/results/cni-loopback-"$id"-*
    done
    for id in $ids; do
      for _ in $(seq 50); do ctr_ tasks delete "$id" >/dev/null 2>&1 && break; sleep 0.1; done
    done
    for id in $(ctr_ containers ls -q 2>/dev/null || true); do
      ctr_ containers delete "$id" >/dev/null 2>&1 || true
    done
  fi
  stop_pid containerd
  # Shims exit with their tasks; any left (containerd killed mid-way) hold our state dir.
  local pid
  for pid in $(pgrep -f -- "containerd-shim-runc-v2 .*-address $sock( |$)" 2>/dev/null || true); do
    kill -KILL "$pid" 2>/dev/null || true
  done
  unmount_under "$run" "$dir/kubelet" "$dir/containerd/root"
  ip link del "$bridge" 2>/dev/null || true
  # Empty pod cgroups the kubelet and containerd made (kubepods/..., k8s.io/...), deepest first.
  local c
  for c in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/*/k8s.io; do
    if [ -d "$c" ]; then find "$c" -depth -type d -exec rmdir {} + 2>/dev/null || true; fi
  done
  rm -rf "$run"
  rmdir /var/lib/cni/results /var/lib/cni 2>/dev/null || true # only if empty: maybe not ours
  if $purge; then rm -rf "$dir/containerd/root" "$dir/kubelet" "$dir/pod-logs"; fi
  echo "node-up: stopped"
}

case "$cmd" in
  start)
    [ -n "$kubeconfig" ] || usage
    kubeconfig=$(cd "$(dirname "$kubeconfig")" && pwd)/$(basename "$kubeconfig")
    [ -x "$bin/kubelet" ] || { echo "node-up: no $bin/kubelet (run tools/build.sh node)" >&2; exit 1; }
    command -v containerd runc >/dev/null || { echo "node-up: needs containerd and runc (apt docker.io)" >&2; exit 1; }
    [ -x /usr/lib/cni/bridge ] || { echo "node-up: needs /usr/lib/cni (apt containernetworking-plugins)" >&2; exit 1; }
    ensure_bridge
    start_containerd
    "$root/hack/node-images.sh" --pause
    start_kubelet
    if $proxy; then start_proxy; fi
    ;;
  stop) do_stop ;;
  status)
    for p in containerd kubelet kube-proxy; do
      if alive $p; then echo "$p: running (pid $(cat "$dir/$p.pid"))"; else echo "$p: stopped"; fi
    done
    ;;
  *) usage ;;
esac
