# A real node for the test control plane: kube-scheduler and kubelet (built
# from the pinned go.mod beside this file), containerd, runc and the CNI
# bridge plugin (Debian packages, installed here when missing). Sourced by
# `control-plane`; `control-plane node up|down`.
#
# Pods get addresses on a bridge, 10.88.0.0/16, whose gateway 10.88.0.1 is
# this host (CLUSTER_HOST_IP): a server a test starts there is reachable from
# pods. Pods reach the API server through the `kubernetes` Service address,
# which a DNAT rule sends to the API server on loopback. Nothing is
# forwarded beyond this host.
#
# Every change to the host is recorded under $NODE and undone by `node down`:
# the bridge, the nftables table, sysctls, mounts, cgroups, network
# namespaces, the fixed paths the kubelet writes, and every process.

NODE=$BASE/node
NODE_NAME=smart-node
# Only pods that tolerate it run here: a chart installed by another test
# stays Pending instead of trying to pull its image from a registry.
NODE_TAINT=smartbackend.dev/test-node=true:NoSchedule
BRIDGE=sbo0
POD_CIDR=10.88.0.0/16
HOST_IP=10.88.0.1
SERVICE_IP=10.0.0.1
NFT_TABLE=smart_backend_node
# Paths the kubelet or containerd write whatever they are told.
FIXED_PATHS=(/var/lib/kubelet /var/log/containers /var/log/pods /usr/libexec/kubernetes /run/containerd /var/lib/cni /etc/cni /opt/cni)
SYSCTLS=(vm.overcommit_memory kernel.panic kernel.panic_on_oops net.ipv4.ip_forward)
NODE_PACKAGES=(containerd runc containernetworking-plugins nftables busybox-static)

node_packages() {
  local missing=()
  command -v containerd >/dev/null || missing+=(containerd)
  command -v runc >/dev/null || missing+=(runc)
  [[ -x /usr/lib/cni/bridge ]] || missing+=(containernetworking-plugins)
  command -v nft >/dev/null || missing+=(nftables)
  # Static: it is the whole of the workload image.
  if [[ ! -x /bin/busybox ]] || ldd /bin/busybox >/dev/null 2>&1; then
    missing+=(busybox-static)
  fi
  ((${#missing[@]} == 0)) && return 0
  log "installing ${missing[*]} from Debian"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
    || die "apt-get install ${missing[*]} failed"
  # The package starts containerd as a service; the node runs its own.
  if command -v systemctl >/dev/null && systemctl is-active -q containerd 2>/dev/null; then
    systemctl stop containerd || true
  fi
}

build_node() {
  local want have=""
  want=$(pins_digest)
  [[ -f $BIN/.node-pins ]] && have=$(cat "$BIN/.node-pins")
  if [[ $want == "$have" && -x $BIN/kubelet && -x $BIN/kube-scheduler && -x $BIN/pause ]]; then
    return 0
  fi
  mkdir -p "$BIN"
  local minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
  local kver="-X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor"
  log "building kubelet and kube-scheduler $K8S_VERSION into $BIN"
  local start=$SECONDS
  (
    cd "$HERE"
    export CGO_ENABLED=0 GOFLAGS=-mod=mod
    go build -trimpath -ldflags "-s -w $kver" -o "$BIN/" \
      k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-scheduler
    go build -trimpath -ldflags "-s -w" -o "$BIN/pause" ./pause
  ) || die "the Go build of the node failed (see above)"
  echo "$want" >"$BIN/.node-pins"
  log "node built in $((SECONDS - start))s"
}

# What was there before, so that `down` removes only what `up` made.
record_host() {
  [[ -f $NODE/host/recorded ]] && return 0
  mkdir -p "$NODE/host"
  local p
  for p in "${FIXED_PATHS[@]}"; do
    [[ -e $p ]] || echo "$p" >>"$NODE/host/created-paths"
  done
  touch "$NODE/host/created-paths"
  for p in "${SYSCTLS[@]}"; do
    echo "$p=$(sysctl -n "$p")" >>"$NODE/host/sysctls"
  done
  ip netns list 2>/dev/null | awk '{print $1}' >"$NODE/host/netns"
  touch "$NODE/host/recorded"
}

node_images() {
  local images=$NODE/images
  mkdir -p "$images"
  "$HERE/image-archive" localhost/pause:node "$images/pause.tar" \
    --add "$BIN/pause=/pause" --entrypoint /pause --user 65535
  # A workload image: busybox (sh, wget, sha256sum) and nothing else.
  "$HERE/image-archive" localhost/busybox:node "$images/busybox.tar" \
    --add /bin/busybox=/bin/busybox --link busybox=/bin/sh --entrypoint /bin/sh
  local tar
  for tar in "$images"/*.tar; do
    ctr_node image import --no-unpack=false "$tar" >/dev/null || die "importing $tar failed"
  done
}

ctr_node() { ctr --address "$RUN/containerd.sock" -n k8s.io "$@"; }
containerd_ready() { ctr_node version >/dev/null 2>&1; }

start_containerd() {
  mkdir -p "$NODE/containerd" "$NODE/cni/conf" "$NODE/cni/ipam"
  cat >"$NODE/containerd/config.toml" <<EOF
version = 2
root = "$NODE/containerd/root"
state = "$NODE/containerd/state"
[grpc]
  address = "$RUN/containerd.sock"
[ttrpc]
  address = "$RUN/containerd.sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "$NODE/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "localhost/pause:node"
  # This host cannot lower oom_score_adj; without this runc fails to start
  # sandboxes ("can't get final child's PID from pipe").
  restrict_oom_score_adj = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        Root = "$NODE/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$NODE/cni/conf"
EOF
  cat >"$NODE/cni/conf/10-pods.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "pods",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$BRIDGE",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$NODE/cni/ipam",
        "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$HOST_IP"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    },
    {"type": "loopback"}
  ]
}
EOF
  : >"$LOGS/containerd.log"
  start_bg containerd containerd --config "$NODE/containerd/config.toml"
  wait_for containerd 30 containerd_ready
}

host_network() {
  # The bridge exists before the first pod so that its address can be the
  # node's (the bridge plugin reuses it).
  if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
    ip link add "$BRIDGE" type bridge
    ip addr add "$HOST_IP/16" dev "$BRIDGE"
    ip link set "$BRIDGE" up
  fi
  # Pods use in-cluster config: the kubernetes Service address goes to the
  # API server on loopback (route_localnet lets a packet from the bridge be
  # sent to 127.0.0.1).
  sysctl -qw "net.ipv4.conf.$BRIDGE.route_localnet=1"
  local port
  port=$(cat "$RUN/apiserver-port")
  nft delete table ip "$NFT_TABLE" 2>/dev/null || true
  nft -f - <<EOF
table ip $NFT_TABLE {
  chain prerouting {
    type nat hook prerouting priority dstnat; policy accept;
    iifname "$BRIDGE" ip daddr $SERVICE_IP tcp dport 443 dnat to 127.0.0.1:$port
  }
  # Pods reach this host and each other, and nothing beyond (pod to pod
  # stays on the bridge; the accept matters only where br_netfilter sends
  # bridged packets through this hook).
  chain forward {
    type filter hook forward priority filter; policy accept;
    iifname "$BRIDGE" oifname "$BRIDGE" accept
    iifname "$BRIDGE" drop
    oifname "$BRIDGE" drop
  }
}
EOF
}

start_scheduler() {
  : >"$LOGS/kube-scheduler.log"
  start_bg kube-scheduler "$BIN/kube-scheduler" \
    --kubeconfig "$RUN/admin.kubeconfig" \
    --authentication-kubeconfig "$RUN/admin.kubeconfig" \
    --authorization-kubeconfig "$RUN/admin.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port "$(free_port)" --leader-elect=false
}

node_ready() {
  "$BIN/kubectl" --kubeconfig "$RUN/admin.kubeconfig" get node "$NODE_NAME" \
    -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null | grep -qx True
}

start_kubelet() {
  kubeconfig "$RUN/kubelet.kubeconfig" "system:node:$NODE_NAME" "$RUN/node-token"
  mkdir -p "$NODE/kubelet" "$NODE/pod-logs" "$NODE/volume-plugins"
  # Pods resolve names as this host does; there is no cluster DNS.
  cat >"$NODE/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: cgroupfs
failSwapOn: false
containerRuntimeEndpoint: unix://$RUN/containerd.sock
address: $HOST_IP
port: $(free_port)
readOnlyPort: 0
healthzPort: 0
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: $RUN/ca.crt}
authorization: {mode: AlwaysAllow}
syncFrequency: ${NODE_SYNC_FREQUENCY:-1m}
makeIPTablesUtilChains: false
podLogsDir: $NODE/pod-logs
volumePluginDir: $NODE/volume-plugins
resolvConf: /etc/resolv.conf
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%"}
serializeImagePulls: false
EOF
  : >"$LOGS/kubelet.log"
  start_bg kubelet "$BIN/kubelet" \
    --config "$NODE/kubelet.yaml" \
    --kubeconfig "$RUN/kubelet.kubeconfig" \
    --root-dir "$NODE/kubelet" \
    --cert-dir "$NODE/kubelet/pki" \
    --hostname-override "$NODE_NAME" \
    --node-ip "$HOST_IP" \
    --register-with-taints "$NODE_TAINT"
  wait_for "the node" 120 node_ready
}

node_up() {
  [[ $(id -u) == 0 ]] || die "the node needs root (containerd, mounts, network)"
  alive "$RUN/kube-apiserver.pid" || die "the control plane is not up: run $0 up"
  if alive "$RUN/kubelet.pid" && node_ready; then
    echo "CLUSTER_HOST_IP=$HOST_IP"
    return 0
  fi
  node_packages
  build_node
  local start=$SECONDS
  node_down_quiet
  record_host
  host_network
  start_containerd
  node_images
  start_scheduler
  start_kubelet
  log "node $NODE_NAME up in $((SECONDS - start))s (pods on $POD_CIDR; this host is $HOST_IP)"
  echo "CLUSTER_HOST_IP=$HOST_IP"
}

# Processes first (pods, then the kubelet, containerd and its shims), then
# what they left: mounts, network namespaces, cgroups, paths, settings.
node_down_quiet() {
  [[ -d $NODE ]] || return 0
  if alive "$RUN/kubelet.pid" && readyz; then
    "$BIN/kubectl" --kubeconfig "$RUN/admin.kubeconfig" delete pods --all-namespaces --all \
      --grace-period=0 --force --wait=false >/dev/null 2>&1 || true
  fi
  stop_pidfile kubelet
  stop_pidfile kube-scheduler
  if readyz; then
    "$BIN/kubectl" --kubeconfig "$RUN/admin.kubeconfig" delete node "$NODE_NAME" \
      --wait=false >/dev/null 2>&1 || true
  fi
  if alive "$RUN/containerd.pid"; then
    local id
    for id in $(ctr_node tasks ls -q 2>/dev/null); do
      ctr_node tasks kill -s SIGKILL "$id" >/dev/null 2>&1 || true
    done
    sleep 0.5
  fi
  stop_pidfile containerd
  # Shims outlive containerd by design.
  pkill -9 -f "containerd-shim-runc-v2 -namespace k8s.io -address $RUN/containerd.sock" 2>/dev/null || true
  pkill -9 -f "$NODE/pause" 2>/dev/null || true
  local mount
  for mount in $(awk -v p="$NODE" 'index($2, p) == 1 {print $2}' /proc/mounts | sort -r); do
    umount -l "$mount" 2>/dev/null || true
  done
  if [[ -f $NODE/host/netns ]]; then
    local ns
    for ns in $(ip netns list 2>/dev/null | awk '{print $1}'); do
      grep -qx "$ns" "$NODE/host/netns" || ip netns delete "$ns" 2>/dev/null || true
    done
  fi
  local dir
  for dir in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods; do
    [[ -d $dir ]] && find "$dir" -depth -type d -exec rmdir {} + 2>/dev/null || true
  done
  nft delete table ip "$NFT_TABLE" 2>/dev/null || true
  ip link delete "$BRIDGE" 2>/dev/null || true
  if [[ -f $NODE/host/sysctls ]]; then
    local line
    while IFS= read -r line; do
      sysctl -qw "$line" 2>/dev/null || true
    done <"$NODE/host/sysctls"
  fi
  if [[ -f $NODE/host/created-paths ]]; then
    local p
    while IFS= read -r p; do
      [[ -n $p ]] && rm -rf "$p"
    done <"$NODE/host/created-paths"
  fi
  rm -rf "$NODE" "$RUN/containerd.sock" "$RUN/containerd.sock.ttrpc"
}
