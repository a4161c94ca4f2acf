#!/usr/bin/env bash
# The e2e suite on kind, for machines with Docker. Same suite, same fake GPU nodes, same
# pinned versions as the local control plane; differences: kwok runs in the cluster,
# KubeRay is installed from its Helm chart and our operator runs in the cluster from the
# image built from images/operator/Dockerfile.
#
#   e2e/kind/run.sh          create the cluster (if needed), install, run the suite
#   e2e/kind/run.sh delete   delete the cluster
#
# Needs docker, kind, kubectl and helm on PATH, and the internet (images, charts).
set -euo pipefail
kind_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
e2e_dir=$(cd "$kind_dir/.." && pwd)
root=$(cd "$e2e_dir/.." && pwd)
# shellcheck source=../cluster/settings.env
source "$e2e_dir/cluster/settings.env"
state=$root/.e2e/kind
kubeconfig=$state/kubeconfig
image=llm-operator:e2e

pinned() { # module group
  awk -v m="$1" '$1 == m && $2 ~ /^v/ {print $2; exit}' "$e2e_dir/tools/$2/go.mod"
}
kwok_version=$(pinned sigs.k8s.io/kwok kwok)
kuberay_version=$(pinned github.com/ray-project/kuberay/ray-operator kuberay)

if [ "${1:-}" = delete ]; then
  kind delete cluster --name "$CLUSTER_NAME"
  exit 0
fi

mkdir -p "$state"
if ! kind get clusters | grep -qx "$CLUSTER_NAME"; then
  kind create cluster --config "$kind_dir/cluster.yaml" --kubeconfig "$kubeconfig"
fi
export KUBECONFIG=$kubeconfig

# kwok in the cluster, managing the fake nodes.
kwok_release=https://github.com/kubernetes-sigs/kwok/releases/download/$kwok_version
kubectl apply -f "$kwok_release/kwok.yaml"
kubectl apply -f "$kwok_release/stage-fast.yaml"
kubectl apply -f "$e2e_dir/cluster/nodes.yaml"

# KubeRay from its chart (cluster-wide RBAC), watching the demo namespace and the
# suite's pool; the suite creates and deletes the pool's namespaces itself.
watch=$DEMO_NAMESPACE
for i in $(seq 1 "$E2E_NAMESPACE_COUNT"); do watch+=",$(printf '%s%02d' "$E2E_NAMESPACE_PREFIX" "$i")"; done
helm repo add kuberay https://ray-project.github.io/kuberay-helm/ >/dev/null
# Incremental upgrades (upgradeStrategy NewClusterWithIncrementalUpgrade) need KubeRay's
# RayServiceIncrementalUpgrade feature gate (alpha, off by default in v1.6.1); the list
# replaces the chart's, and gates it leaves out keep KubeRay's own defaults.
helm upgrade --install kuberay-operator kuberay/kuberay-operator \
  --version "${kuberay_version#v}" --namespace kuberay-system --create-namespace \
  --set "watchNamespace={$watch}" \
  --set-json 'featureGates=[{"name":"RayServiceIncrementalUpgrade","enabled":true}]' --wait

# Our operator, from this checkout, in the cluster under the chart's RBAC.
docker build -t "$image" -f "$root/images/operator/Dockerfile" "$root"
kind load docker-image "$image" --name "$CLUSTER_NAME"
helm upgrade --install "$OPERATOR_RELEASE" "$root/charts/llm-operator" \
  --namespace "$OPERATOR_NAMESPACE" --create-namespace \
  --set image.repository="${image%%:*}" --set image.tag="${image##*:}" \
  --set image.pullPolicy=Never --wait

# The suite reads KubeRay's reconcile counter (see e2e/support.py); KubeRay's chart
# serves its metrics on the operator's port 8080.
kubectl -n kuberay-system port-forward deployment/kuberay-operator 18081:8080 \
  >"$state/port-forward.log" 2>&1 &
forward=$!
trap 'kill "$forward"' EXIT

E2E_KUBECONFIG=$kubeconfig E2E_KUBERAY_METRICS=http://127.0.0.1:18081/metrics \
  "$root/.venv/bin/pytest" -p no:cacheprovider "$e2e_dir"
