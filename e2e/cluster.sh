#!/usr/bin/env bash
# A local control plane for the e2e suite and the demo, from the pinned binaries that
# e2e/tools.sh builds: kwokctl runs etcd, kube-apiserver (RBAC and admission on),
# kube-controller-manager, kube-scheduler and kwok as plain processes; fake GPU nodes;
# KubeRay's CRDs and operator; our chart installed with helm; our operator running out
# of cluster with a token of the chart's service account, so the chart's RBAC is what
# it runs under.
#
#   e2e/cluster.sh up       start (or reuse) everything, the real node (e2e/node.sh)
#                           included, and print the state
#   e2e/cluster.sh down     stop the operators and delete the cluster
#   e2e/cluster.sh status   what runs, and where the kubeconfig and logs are
#   e2e/cluster.sh env      shell exports for KUBECONFIG and PATH
#   e2e/cluster.sh start|stop llm-operator|kuberay-operator
#                           one operator alone (benchmarks and fault injection)
#   e2e/cluster.sh restart-control-plane
#                           stop and start etcd, kube-apiserver and the rest (kwokctl),
#                           leaving both operators running
#
# The API server writes an audit log of every write (cluster/audit-policy.yaml) to
# .e2e/logs/control-plane/audit.log.
#
# State (kubeconfigs, kwok's work dir, pid files) and every component's log live
# under .e2e/ (LLM_OPERATOR_E2E_STATE); logs in .e2e/logs/.
set -euo pipefail

# shellcheck source=lib.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"
operator_kubeconfig=$state/operator.kubeconfig
operator_cli=${LLM_OPERATOR_CLI:-$root/.venv/bin/llm-operator}
operator_liveness=$OPERATOR_LIVENESS_ADDRESS
export KWOK_WORKDIR=$state/kwok

kuberay_namespaces() {
  local list=$DEMO_NAMESPACE i
  for i in $(seq 1 "$E2E_NAMESPACE_COUNT"); do
    list+=",$(printf '%s%02d' "$E2E_NAMESPACE_PREFIX" "$i")"
  done
  echo "$list"
}

cluster_exists() {
  kwokctl get clusters 2>/dev/null | grep -qx "$CLUSTER_NAME"
}

api_ready() {
  kubectl get --raw /readyz >/dev/null 2>&1
}

# What the real node (e2e/node.sh) needs of the control plane: the kubelet's identity
# checked by NodeRestriction; namespaces that pin their pods to it (PodNodeSelector,
# PodTolerationRestriction); the kubernetes Service's address in the serving certificate
# (Ray's autoscaler dials it); logs and exec reaching the kubelet by address, with a
# client certificate the kubelet's x509 authentication accepts (kwokctl's admin); kwok's
# hands off that node; and fake pod addresses apart from the Service range.
write_kwokctl_config() {
  cat >"$state/kwokctl.yaml" <<EOF
apiVersion: config.kwok.x-k8s.io/v1alpha1
kind: KwokctlConfiguration
options:
  kubeApiserverCertSANs: [$KUBERNETES_SERVICE_IP]
componentsPatches:
  - name: kube-apiserver
    extraArgs:
      - {key: enable-admission-plugins, value: "NodeRestriction,PodNodeSelector,PodTolerationRestriction"}
      - {key: kubelet-preferred-address-types, value: "InternalIP,Hostname"}
      - {key: service-cluster-ip-range, value: "$SERVICE_CIDR"}
      - {key: kubelet-client-certificate, value: "$state/kwok/clusters/$CLUSTER_NAME/pki/admin.crt"}
      - {key: kubelet-client-key, value: "$state/kwok/clusters/$CLUSTER_NAME/pki/admin.key"}
  - name: kwok-controller
    extraArgs:
      - {key: manage-all-nodes, value: "false"}
      - {key: manage-nodes-with-annotation-selector, value: "kwok.x-k8s.io/node=fake"}
      - {key: cidr, value: "$KWOK_POD_CIDR"}
EOF
}

start_control_plane() {
  if cluster_exists; then
    # Only when stopped: a second start would fail to bind and overwrite kwokctl's pid
    # files with those of the failed processes.
    api_ready || kwokctl start cluster --name "$CLUSTER_NAME" >&2 || true
  else
    write_kwokctl_config
    kwokctl --config "$state/kwokctl.yaml" create cluster --name "$CLUSTER_NAME" --runtime binary \
      --kubeconfig "$admin_kubeconfig" \
      --kube-apiserver-binary "$bin_dir/kube-apiserver" \
      --kube-controller-manager-binary "$bin_dir/kube-controller-manager" \
      --kube-scheduler-binary "$bin_dir/kube-scheduler" \
      --etcd-binary "$bin_dir/etcd" \
      --kwok-controller-binary "$bin_dir/kwok" \
      --kube-authorization --kube-admission \
      --kube-audit-policy "$e2e_dir/cluster/audit-policy.yaml" --wait 3m >&2
  fi
  kwokctl get kubeconfig --name "$CLUSTER_NAME" >"$admin_kubeconfig"
  # kwokctl keeps each component's log in its own work dir; link them into one folder.
  ln -sfn "$KWOK_WORKDIR/clusters/$CLUSTER_NAME/logs" "$logs/control-plane"
}

install_cluster_content() {
  kubectl apply -f "$e2e_dir/cluster/nodes.yaml" >&2
  # KubeRay's CRDs are too large for client-side apply's last-applied annotation.
  kubectl apply --server-side --force-conflicts -f "$bin_dir/kuberay-crds/" >&2
  wait_until 60 "KubeRay's CRDs" kubectl wait --for condition=established --timeout 5s \
    crd/rayclusters.ray.io crd/rayservices.ray.io
  # The Gateway API's standard CRDs at the version KubeRay pins (e2e/tools.sh): the
  # HTTPRoute of spec.exposure.gateway, and the Gateway and HTTPRoute KubeRay makes for
  # incremental upgrades. No Gateway controller runs; tests write a Gateway's status as
  # one would.
  kubectl apply --server-side --force-conflicts -f "$bin_dir/gateway-api-crds/" >&2
  wait_until 60 "the Gateway API's CRDs" kubectl wait --for condition=established --timeout 5s \
    crd/httproutes.gateway.networking.k8s.io crd/gateways.gateway.networking.k8s.io
  helm upgrade --install "$OPERATOR_RELEASE" "${LLM_OPERATOR_CHART:-$root/charts/llm-operator}" \
    --namespace "$OPERATOR_NAMESPACE" --create-namespace \
    --set operator.replicas=0 >&2
  wait_until 60 "the LLMDeployment CRD" kubectl wait --for condition=established --timeout 5s \
    crd/llmdeployments.llmops.dev
}

write_operator_kubeconfig() {
  # The admin kubeconfig's server and CA with the admin identity swapped for a token of
  # the chart's service account: what the operator's pod would be in a real cluster.
  local token admin_user admin_context cluster
  token=$(kubectl create token "$OPERATOR_RELEASE" -n "$OPERATOR_NAMESPACE" --duration 24h)
  admin_context=$(kubectl config current-context)
  admin_user=$(kubectl config view -o jsonpath="{.contexts[?(@.name=='$admin_context')].context.user}")
  cluster=$(kubectl config view -o jsonpath="{.contexts[?(@.name=='$admin_context')].context.cluster}")
  kubectl config view --raw --minify >"$operator_kubeconfig"
  chmod 600 "$operator_kubeconfig"
  local k=(kubectl --kubeconfig "$operator_kubeconfig" config)
  "${k[@]}" set-credentials operator --token "$token" >/dev/null
  "${k[@]}" set-context operator --cluster "$cluster" --user operator >/dev/null
  "${k[@]}" use-context operator >/dev/null
  "${k[@]}" delete-context "$admin_context" >/dev/null
  "${k[@]}" delete-user "$admin_user" >/dev/null
}

start_kuberay() {
  # KubeRay runs on the host, outside the cluster's DNS: it reaches each real head's
  # dashboard through the API server's service proxy (e2e/node.sh keeps the fake heads'
  # addresses from leaving the machine).
  local proxy=()
  [ "${LLM_OPERATOR_REAL_NODE:-1}" = 0 ] || proxy=(--use-kubernetes-proxy)
  # RayServiceIncrementalUpgrade (alpha in v1.6.1, off by default: pkg/features) makes
  # KubeRay act on upgradeStrategy NewClusterWithIncrementalUpgrade; without it KubeRay
  # treats that type like None (no new cluster for a change). It needs the Gateway API's
  # CRDs, which install_cluster_content applied before.
  start_background kuberay-operator env KUBECONFIG="$admin_kubeconfig" ray-operator \
    --feature-gates=RayServiceIncrementalUpgrade=true \
    --watch-namespace "$(kuberay_namespaces)" "${proxy[@]}" \
    --metrics-addr 127.0.0.1:18081 --health-probe-bind-address 127.0.0.1:18082 \
    --enable-leader-election=false
  wait_until 60 "KubeRay's health probe" curl -fsS --max-time 5 http://127.0.0.1:18082/healthz
}

start_llm_operator() {
  [ -f "$operator_kubeconfig" ] || write_operator_kubeconfig
  start_background llm-operator env KUBECONFIG="$operator_kubeconfig" "$operator_cli" run \
    --all-namespaces --liveness "http://$operator_liveness/healthz" \
    --metrics-address "$OPERATOR_METRICS_ADDRESS"
  wait_until 120 "the llm-operator liveness probe" curl -fsS --max-time 5 "http://$operator_liveness/healthz"
}

start_operators() {
  write_operator_kubeconfig
  start_kuberay
  start_llm_operator
}

one_operator() { # start|stop llm-operator|kuberay-operator
  case $1:$2 in
    start:llm-operator) start_llm_operator ;;
    start:kuberay-operator) start_kuberay ;;
    stop:llm-operator | stop:kuberay-operator) stop_background "$2" ;;
    *) echo "usage: $0 start|stop llm-operator|kuberay-operator" >&2; exit 2 ;;
  esac
}

control_plane_ports_free() {
  # Every port kwokctl gave a component; a connection that opens means it is still held.
  local port
  for port in $(grep -oE '^ +port: [0-9]+' "$KWOK_WORKDIR/clusters/$CLUSTER_NAME/kwok.yaml" |
    grep -oE '[0-9]+' | sort -u); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 1; fi
  done
}

restart_control_plane() {
  # kwokctl stop only signals the processes; start must wait until they are gone and
  # their ports free (an exiting process can still hold its socket after its command
  # line is gone). Each component runs from the cluster's bin dir ("bi[n]": the
  # pattern must not match the shell that runs pgrep).
  kwokctl stop cluster --name "$CLUSTER_NAME" >&2
  wait_until 60 "the control-plane processes to exit" \
    bash -c "! pgrep -f '$KWOK_WORKDIR/clusters/$CLUSTER_NAME/bi[n]/'"
  wait_until 60 "the control-plane ports to be free" control_plane_ports_free
  kwokctl start cluster --name "$CLUSTER_NAME" >&2
  wait_until 120 "the API server" kubectl get --raw /readyz
}

status() {
  echo "cluster:     $(cluster_exists && echo "$CLUSTER_NAME (kwokctl, binary runtime)" || echo none)"
  echo "kubeconfig:  $admin_kubeconfig"
  echo "logs:        $logs"
  local name
  for name in kuberay-operator llm-operator containerd kubelet kube-proxy coredns; do
    echo "$name: $(running "$name" && echo "running, pid $(cat "$state/$name.pid")" || echo stopped)"
  done
  if cluster_exists; then
    kubectl get nodes -L nvidia.com/gpu.product,nvidia.com/gpu.count 2>/dev/null || true
  fi
}

up() {
  mkdir -p "$state" "$logs"
  [ -x "$operator_cli" ] || { log "$operator_cli is missing: run 'make install' first"; exit 1; }
  bash "$e2e_dir/tools.sh" >/dev/null
  export KUBECONFIG=$admin_kubeconfig
  start_control_plane
  install_cluster_content
  real_node up
  start_operators
  status
}

real_node() { # up|down
  if [ "${LLM_OPERATOR_REAL_NODE:-1}" = 0 ]; then
    log "no real node (LLM_OPERATOR_REAL_NODE=0): Ray does not run, the ray suite fails"
    return 0
  fi
  bash "$e2e_dir/node.sh" "$1"
}

down() {
  stop_background llm-operator
  stop_background kuberay-operator
  real_node down
  ip route del unreachable "$KWOK_POD_CIDR" 2>/dev/null || true
  if cluster_exists; then
    kwokctl delete cluster --name "$CLUSTER_NAME" --kubeconfig "$admin_kubeconfig" >&2
  fi
}

export KUBECONFIG=$admin_kubeconfig
case ${1:-} in
  up) up ;;
  down) down ;;
  status) status ;;
  env) printf 'export KUBECONFIG=%q\nexport PATH=%q:"$PATH"\n' "$admin_kubeconfig" "$bin_dir" ;;
  start | stop) one_operator "$1" "${2:-}" ;;
  restart-control-plane) restart_control_plane ;;
  *) echo "usage: $0 up|down|status|env|start|stop|restart-control-plane" >&2; exit 2 ;;
esac
