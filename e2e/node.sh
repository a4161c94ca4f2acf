#!/usr/bin/env bash
# The local cluster's real node: a kubelet (containerd + runc + CNI bridge) joined to the
# control plane e2e/cluster.sh runs, with kube-proxy for ClusterIP Services and CoreDNS
# for cluster names, so KubeRay's pods really run and Ray really serves. The kwok nodes
# beside it run nothing. Ray gets logical GPUs: the node advertises nvidia.com/gpu in
# its status, as a device plugin would, and KubeRay passes num-gpus to `ray start`.
#
#   e2e/node.sh up       install what is missing, build or reuse the images, start and join
#   e2e/node.sh down     stop everything it started, remove its pods, routes and rules
#   e2e/node.sh env      the local images' references (RAY_LOCAL_IMAGE=..., REDIS_LOCAL_IMAGE,
#                        OPERATOR_LOCAL_IMAGE, OPERATOR_LOCAL_IMAGE_NEXT, TEST_TOOLS_LOCAL_IMAGE,
#                        OPERATOR_PREVIOUS_IMAGE) and PREVIOUS_RELEASE_TREE, the previous
#                        release's source tree (its chart and samples, for the upgrade test)
#
# Only namespaces that ask run here: the node carries a taint of its own, and a namespace
# annotated for the PodNodeSelector and PodTolerationRestriction admission plugins (as
# e2e/test_ray.py's namespaces are) sends all its pods here and nowhere else.
#
# Needs root (containerd, network namespaces, iptables). Logs go to .e2e/logs/.
set -euo pipefail

# shellcheck source=lib.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"
node=$state/node
pki=$state/kwok/clusters/$CLUSTER_NAME/pki
sock=$node/containerd.sock
bridge=llmop0
log_prefix=node
export KUBECONFIG=$admin_kubeconfig

# The previous release: the last commit of chart version 0.1.0 (the next commit, eaa4591,
# made everything 0.2.0). e2e/test_inpod.py upgrades from its chart and image.
PREVIOUS_RELEASE_COMMIT=bc604847e5fb316171aba4e52a57d62fb89316c5

# Debian packages the node needs, by the command that shows each is there.
packages=(containerd:containerd runc:runc conntrack:conntrack iptables:iptables
  /usr/lib/cni/bridge:containernetworking-plugins)

install_packages() {
  local missing=() entry
  for entry in "${packages[@]}"; do
    command -v "${entry%%:*}" >/dev/null 2>&1 || [ -x "${entry%%:*}" ] || missing+=("${entry#*:}")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if ! command -v apt-get >/dev/null 2>&1; then
    log "missing: ${missing[*]}; install these packages (Debian names) and run again"
    exit 1
  fi
  log "installing ${missing[*]}"
  apt-get -o DPkg::Lock::Timeout=300 update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq \
    "${missing[@]}" >&2
}

host_ip() {
  local dev
  dev=$(ip -4 -o route show default | awk '{print $5; exit}')
  ip -4 -o addr show dev "$dev" | awk '{split($4, a, "/"); print a[1]; exit}'
}

# --- images ------------------------------------------------------------------------
build_image() { # ray|ray-llm|pause|redis|operator|test-tools -> sets image_ref, image_archive
  local out script=$root/images/ray-local/build.sh
  case $1 in operator | test-tools) script=$root/images/operator/build.sh ;; esac
  out=$(bash "$script" "$1")
  image_ref=$(sed -n 's/^ref=//p' <<<"$out")
  image_archive=$(sed -n 's/^archive=//p' <<<"$out")
}

# The previous release's tree, exported once per commit beside the images (outside the
# work tree, which may be a clone of any branch): its own build.sh builds its image, the
# test installs its chart and applies its samples. -> sets previous_tree
export_previous_release() {
  local cache=${LLM_OPERATOR_IMAGES_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/llm-operator/images}
  case $cache in /*) ;; *) cache=$PWD/$cache ;; esac # as build.sh resolves it
  previous_tree=$cache/previous-release-$PREVIOUS_RELEASE_COMMIT
  [ -f "$previous_tree/charts/llm-operator/Chart.yaml" ] && return 0
  # root runs this; the clone may belong to someone else.
  local git=(git -c "safe.directory=$root" -C "$root")
  if ! "${git[@]}" cat-file -e "$PREVIOUS_RELEASE_COMMIT^{commit}" 2>/dev/null; then
    log "the previous release's commit $PREVIOUS_RELEASE_COMMIT is not in this clone:" \
      "fetch full history (git fetch --unshallow) and run again"
    exit 1
  fi
  local partial
  mkdir -p "$cache"
  partial=$(mktemp -d "$previous_tree.partial.XXXXXX")
  chmod 755 "$partial" # mktemp makes it private; the test reads it
  "${git[@]}" archive "$PREVIOUS_RELEASE_COMMIT" | tar -x -C "$partial"
  # Whoever renames first wins; an identical tree from a parallel run is dropped.
  mv -T "$partial" "$previous_tree" 2>/dev/null || rm -rf "$partial"
  log "exported the previous release ($PREVIOUS_RELEASE_COMMIT) to $previous_tree"
}

# The previous release's operator image, built by its own tree's build.sh (same cache: a
# warm machine skips the build). -> sets previous_tree, image_ref, image_archive
build_previous_operator() {
  export_previous_release
  local out
  out=$(bash "$previous_tree/images/operator/build.sh" operator)
  image_ref=$(sed -n 's/^ref=//p' <<<"$out")
  image_archive=$(sed -n 's/^archive=//p' <<<"$out")
}

ctr_() { ctr --address "$sock" --namespace k8s.io "$@"; }

import_image() { # ref archive
  if ctr_ images ls -q | grep -qxF "$1"; then return 0; fi
  local started=$SECONDS
  ctr_ images import --no-unpack "$2" >&2
  log "imported $1 in $((SECONDS - started)) s"
}

# --- identities --------------------------------------------------------------------
issue_cert() { # name subject
  # Kept while the cluster's CA signed it; a new cluster has a new CA.
  if [ -f "$node/pki/$1.crt" ] &&
    openssl verify -CAfile "$pki/ca.crt" "$node/pki/$1.crt" >/dev/null 2>&1; then
    return 0
  fi
  mkdir -p "$node/pki"
  openssl req -new -newkey rsa:2048 -nodes -keyout "$node/pki/$1.key" -subj "$2" \
    -out "$node/pki/$1.csr" 2>/dev/null
  openssl x509 -req -in "$node/pki/$1.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" \
    -CAcreateserial -days 30 -out "$node/pki/$1.crt" 2>/dev/null
}

write_kubeconfig() { # name
  local file=$node/$1.kubeconfig server
  server=$(kubectl config view --minify -o jsonpath='{.clusters[0].cluster.server}')
  kubectl config --kubeconfig "$file" set-cluster local --server "$server" \
    --certificate-authority "$pki/ca.crt" --embed-certs >/dev/null
  kubectl config --kubeconfig "$file" set-credentials "$1" --embed-certs \
    --client-certificate "$node/pki/$1.crt" --client-key "$node/pki/$1.key" >/dev/null
  kubectl config --kubeconfig "$file" set-context local --cluster local --user "$1" >/dev/null
  kubectl config --kubeconfig "$file" use-context local >/dev/null
}

# --- containerd --------------------------------------------------------------------
write_containerd_config() { # pause image
  mkdir -p "$node/containerd" "$node/cni"
  cat >"$node/containerd/config.toml" <<EOF
version = 2
root = "$node/containerd/root"
state = "$node/containerd/state"
[grpc]
  address = "$sock"
[plugins."io.containerd.internal.v1.opt"]
  path = "$node/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$1"
  # root here lacks CAP_SYS_RESOURCE: without this every sandbox fails to start.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$node/cni"
EOF
  cat >"$node/cni/10-llmop.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "llmop",
  "plugins": [
    {"type": "bridge", "bridge": "$bridge", "isGateway": true, "ipMasq": true,
     "hairpinMode": true,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "$REAL_NODE_POD_CIDR"}]],
              "routes": [{"dst": "0.0.0.0/0"}], "dataDir": "$node/cni-state"}},
    {"type": "portmap", "capabilities": {"portMappings": true}},
    {"type": "loopback"}
  ]
}
EOF
}

start_containerd() {
  start_background containerd containerd --config "$node/containerd/config.toml"
  wait_until 60 "containerd" ctr --address "$sock" version
}

# --- kubelet -----------------------------------------------------------------------
write_kubelet_config() { # host ip
  cat >"$node/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# This kernel has cgroup v1 only; kubelet 1.36 refuses it unless told otherwise.
failCgroupV1: false
cgroupDriver: cgroupfs
failSwapOn: false
containerRuntimeEndpoint: unix://$sock
imageServiceEndpoint: unix://$sock
address: $1
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $pki/ca.crt}
authorization: {mode: Webhook}
clusterDNS: [$1]
clusterDomain: cluster.local
# Two cores serve the whole cluster: requests place pods, but no limit throttles Ray's
# start-up to a fraction of a core.
cpuCFSQuota: false
podLogsDir: $node/pod-logs
serializeImagePulls: false
# The imported images are the only copies: never collect them.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: 500Mi, nodefs.available: 2%, imagefs.available: 2%}
registerWithTaints:
  - {key: nvidia.com/gpu, value: present, effect: NoSchedule}
  - {key: $REAL_NODE_TAINT, value: "true", effect: NoSchedule}
EOF
}

node_labels() {
  local labels=(type=real nvidia.com/gpu.present=true nvidia.com/gpu.product=NVIDIA-L4
    "nvidia.com/gpu.count=$REAL_NODE_GPUS" ray.io/accelerator-type=L4 "$REAL_NODE_TAINT=true")
  local IFS=,
  echo "${labels[*]}"
}

start_kubelet() { # host ip
  mkdir -p "$node/kubelet" "$node/pod-logs"
  start_background kubelet kubelet --config "$node/kubelet.yaml" \
    --kubeconfig "$node/kubelet.kubeconfig" --root-dir "$node/kubelet" \
    --cert-dir "$node/kubelet/pki" --hostname-override "$REAL_NODE_NAME" --node-ip "$1" \
    --node-labels "$(node_labels)" --v 1
  wait_until 120 "node $REAL_NODE_NAME to be Ready" \
    kubectl wait --for condition=Ready --timeout 5s "node/$REAL_NODE_NAME"
}

advertise_gpus() {
  # What a device plugin would report; survives the kubelet's own status updates.
  local path=/status/capacity/nvidia.com~1gpu
  kubectl patch node "$REAL_NODE_NAME" --subresource status --type json -p "[
    {\"op\": \"add\", \"path\": \"$path\", \"value\": \"$REAL_NODE_GPUS\"},
    {\"op\": \"add\", \"path\": \"${path/capacity/allocatable}\", \"value\": \"$REAL_NODE_GPUS\"}]" \
    >/dev/null
  wait_until 30 "the node's GPUs" bash -c "kubectl get node $REAL_NODE_NAME \
    -o jsonpath='{.status.allocatable.nvidia\\.com/gpu}' | grep -qx $REAL_NODE_GPUS"
}

# --- Services and names ------------------------------------------------------------
route_safely() {
  # kwok's fake pods have addresses nothing here serves: refuse them at once rather than
  # send them out of the machine. Services are DNATed by kube-proxy; anything in their
  # range it does not DNAT ends on the pod bridge (made here, before the CNI plugin
  # would make it) instead of the default route.
  sysctl -qw net.ipv4.ip_forward=1 net.bridge.bridge-nf-call-iptables=1
  ip route replace unreachable "$KWOK_POD_CIDR"
  ip link show "$bridge" >/dev/null 2>&1 || ip link add "$bridge" type bridge
  ip link set "$bridge" up
  ip route replace "$SERVICE_CIDR" dev "$bridge"
}

start_kube_proxy() {
  start_background kube-proxy kube-proxy --kubeconfig "$node/kube-proxy.kubeconfig" \
    --hostname-override "$REAL_NODE_NAME" --proxy-mode iptables \
    --cluster-cidr "$REAL_NODE_POD_CIDR" --conntrack-max-per-core 0 \
    --nodeport-addresses primary --iptables-localhost-nodeports=false \
    --metrics-bind-address 127.0.0.1:10249 --healthz-bind-address 127.0.0.1:10256
  # Its health check waits for the node, which registers later: wait for its first sync.
  wait_until 60 "kube-proxy's first rules" bash -c "curl -fsS --max-time 5 http://127.0.0.1:10249/metrics |
    grep -qE '^kubeproxy_sync_proxy_rules_last_timestamp_seconds.*IPv4.* [1-9]'"
}

start_coredns() { # host ip
  cat >"$node/Corefile" <<EOF
cluster.local:53 in-addr.arpa:53 {
  errors
  health $1:18053
  ready $1:18054
  kubernetes cluster.local in-addr.arpa {
    kubeconfig $admin_kubeconfig
    pods insecure
  }
  cache 5
}
.:53 {
  errors
  forward . /etc/resolv.conf
}
EOF
  start_background coredns coredns -conf "$node/Corefile" -dns.port 53
  wait_until 60 "CoreDNS" curl -fsS --max-time 5 "http://$1:18054/ready"
}

# On demand, into the running node: the Ray Serve LLM image (about 10 GB unpacked) is
# built and imported only for the suites that use it (`make e2e-vllm`), not by `up`.
add_image() { # ray-llm
  [ -S "$sock" ] && running containerd || { log "the real node is not up"; exit 1; }
  local key
  case $1 in
    ray-llm) key=RAY_LLM_LOCAL_IMAGE ;;
    *) log "unknown image $1 (known: ray-llm)"; exit 2 ;;
  esac
  build_image "$1"
  import_image "$image_ref" "$image_archive"
  sed -i "/^$key=/d" "$node/images.env"
  echo "$key=$image_ref" >>"$node/images.env"
}

# --- up / down ---------------------------------------------------------------------
up() {
  [ "$(id -u)" = 0 ] || { log "the real node needs root (containerd, iptables)"; exit 1; }
  [ -f "$pki/ca.key" ] || { log "no cluster CA at $pki: run e2e/cluster.sh up"; exit 1; }
  mkdir -p "$node" "$logs"
  install_packages
  local ip image refs=() archives=()
  ip=$(host_ip)
  # The pause image first: containerd's CRI names it as every pod's sandbox.
  for image in pause ray redis operator test-tools; do
    build_image "$image"
    refs+=("$image_ref") archives+=("$image_archive")
  done
  build_previous_operator
  local previous_ref=$image_ref previous_archive=$image_archive
  route_safely
  write_containerd_config "${refs[0]}"
  start_containerd
  for image in "${!refs[@]}"; do
    import_image "${refs[$image]}" "${archives[$image]}"
  done
  import_image "$previous_ref" "$previous_archive"
  # A second tag of the operator image, for the chart's upgrade test: an image imported
  # with ctr has no repo digest, so only a new tag is a new image to the kubelet.
  ctr_ images tag --force "${refs[3]}" "${refs[3]}-next" >/dev/null
  printf '%s\n' "RAY_LOCAL_IMAGE=${refs[1]}" "REDIS_LOCAL_IMAGE=${refs[2]}" \
    "OPERATOR_LOCAL_IMAGE=${refs[3]}" "OPERATOR_LOCAL_IMAGE_NEXT=${refs[3]}-next" \
    "TEST_TOOLS_LOCAL_IMAGE=${refs[4]}" "OPERATOR_PREVIOUS_IMAGE=$previous_ref" \
    "PREVIOUS_RELEASE_TREE=$previous_tree" >"$node/images.env"
  issue_cert kubelet "/O=system:nodes/CN=system:node:$REAL_NODE_NAME"
  issue_cert kube-proxy "/CN=system:kube-proxy"
  write_kubeconfig kubelet
  write_kubeconfig kube-proxy
  write_kubelet_config "$ip"
  start_coredns "$ip"
  start_kube_proxy
  start_kubelet "$ip"
  advertise_gpus
  log "node $REAL_NODE_NAME Ready at $ip with $REAL_NODE_GPUS GPUs; images: ${refs[*]}"
}

remove_containers() {
  # kubelet is gone; stop what it left so no container or mount outlives the node.
  [ -S "$sock" ] && running containerd || return 0
  local task
  for task in $(ctr_ tasks ls -q 2>/dev/null); do
    ctr_ tasks kill -s SIGKILL "$task" >/dev/null 2>&1 || true
  done
  wait_until 30 "the node's containers to stop" bash -c \
    "! ctr --address '$sock' -n k8s.io tasks ls 2>/dev/null | grep -q RUNNING"
  for task in $(ctr_ tasks ls -q 2>/dev/null); do
    ctr_ tasks delete "$task" >/dev/null 2>&1 || true
  done
  for task in $(ctr_ containers ls -q 2>/dev/null); do
    ctr_ containers delete "$task" >/dev/null 2>&1 || true
  done
}

down() {
  stop_background kubelet
  remove_containers
  stop_background containerd
  stop_background kube-proxy
  stop_background coredns
  command -v kube-proxy >/dev/null 2>&1 && kube-proxy --cleanup >/dev/null 2>&1 || true
  # Mounts and network namespaces the pods left behind.
  grep -o " $node[^ ]*" /proc/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  ip link del "$bridge" 2>/dev/null || true
  # The unreachable route for kwok's pod addresses stays until cluster.sh down has
  # stopped KubeRay, which may still dial them through the API server.
  local netns
  for netns in $(ip netns list 2>/dev/null | awk '/^cni-/ {print $1}'); do
    ip netns del "$netns" 2>/dev/null || true
  done
  rm -rf "$node/kubelet/pods" "$node/cni-state"
}

case ${1:-} in
  up) up ;;
  down) down ;;
  env) cat "$node/images.env" ;;
  image) add_image "${2:-}" ;;
  *) echo "usage: $0 up|down|env|image ray-llm" >&2; exit 2 ;;
esac
