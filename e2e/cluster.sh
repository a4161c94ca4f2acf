#!/usr/bin/env bash
# A local control plane for the e2e suite and the demo, from the pinned binaries that
# e2e/tools.sh builds: kwokctl runs etcd, kube-apiserver (RBAC and admission on),
# kube-controller-manager, kube-scheduler and kwok as plain processes; fake GPU nodes;
# KubeRay's CRDs and operator; our chart installed with helm; our operator running out
# of cluster with a token of the chart's service account, so the chart's RBAC is what
# it runs under.
#
#   e2e/cluster.sh up       start (or reuse) everything and print the state
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

e2e_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$e2e_dir/.." && pwd)
# shellcheck source=cluster/settings.env
source "$e2e_dir/cluster/settings.env"
state=${LLM_OPERATOR_E2E_STATE:-$root/.e2e}
logs=$state/logs
bin_dir=$state/bin
admin_kubeconfig=$state/kubeconfig
operator_kubeconfig=$state/operator.kubeconfig
operator_cli=${LLM_OPERATOR_CLI:-$root/.venv/bin/llm-operator}
operator_liveness=127.0.0.1:18080
export KWOK_WORKDIR=$state/kwok
export PATH=$bin_dir:$PATH

log() { printf '[cluster] %s\n' "$*" >&2; }

kuberay_namespaces() {
  local list=$DEMO_NAMESPACE i
  for i in $(seq 1 "$E2E_NAMESPACE_COUNT"); do
    list+=",$(printf '%s%02d' "$E2E_NAMESPACE_PREFIX" "$i")"
  done
  echo "$list"
}

running() { # name
  local pid_file=$state/$1.pid
  [ -f "$pid_file" ] && kill -0 "$(cat "$pid_file")" 2>/dev/null
}

start_background() { # name command...
  local name=$1
  shift
  running "$name" && return 0
  # Appended, so a restarted operator's log keeps what it logged before.
  echo "--- $name starting at $(date -u +%FT%TZ)" >>"$logs/$name.log"
  setsid "$@" >>"$logs/$name.log" 2>&1 </dev/null &
  echo $! >"$state/$name.pid"
  log "$name started (pid $!, log $logs/$name.log)"
}

stop_background() { # name
  local pid_file=$state/$1.pid
  if running "$1"; then
    kill -- -"$(cat "$pid_file")" 2>/dev/null || kill "$(cat "$pid_file")" 2>/dev/null || true
    wait_until 30 "$1 to exit" bash -c "! kill -0 $(cat "$pid_file")"
    log "$1 stopped"
  fi
  rm -f "$pid_file"
}

wait_until() { # seconds description command...
  local deadline=$((SECONDS + $1)) what=$2
  shift 2
  until "$@" >/dev/null 2>&1; do
    if [ $SECONDS -ge $deadline ]; then
      log "timed out waiting for $what"
      return 1
    fi
    sleep 1
  done
}

cluster_exists() {
  kwokctl get clusters 2>/dev/null | grep -qx "$CLUSTER_NAME"
}

api_ready() {
  kubectl get --raw /readyz >/dev/null 2>&1
}

start_control_plane() {
  if cluster_exists; then
    # Only when stopped: a second start would fail to bind and overwrite kwokctl's pid
    # files with those of the failed processes.
    api_ready || kwokctl start cluster --name "$CLUSTER_NAME" >&2 || true
  else
    kwokctl create cluster --name "$CLUSTER_NAME" --runtime binary \
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
  start_background kuberay-operator env KUBECONFIG="$admin_kubeconfig" ray-operator \
    --watch-namespace "$(kuberay_namespaces)" \
    --metrics-addr 127.0.0.1:18081 --health-probe-bind-address 127.0.0.1:18082 \
    --enable-leader-election=false
  wait_until 60 "KubeRay's health probe" curl -fsS http://127.0.0.1:18082/healthz
}

start_llm_operator() {
  [ -f "$operator_kubeconfig" ] || write_operator_kubeconfig
  start_background llm-operator env KUBECONFIG="$operator_kubeconfig" "$operator_cli" run \
    --all-namespaces --liveness "http://$operator_liveness/healthz" \
    --metrics-address 127.0.0.1:18083
  wait_until 120 "the llm-operator liveness probe" curl -fsS "http://$operator_liveness/healthz"
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
  for name in kuberay-operator llm-operator; do
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
  start_operators
  status
}

down() {
  stop_background llm-operator
  stop_background kuberay-operator
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
