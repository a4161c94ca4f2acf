#!/usr/bin/env bash
# The README's main job: bring up the local control plane, apply the quick-start
# LLMDeployment and show what it became, down to the nodes its pods landed on.
set -euo pipefail
e2e_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$e2e_dir/.." && pwd)
# shellcheck source=cluster/settings.env
source "$e2e_dir/cluster/settings.env"

bash "$e2e_dir/cluster.sh" up
eval "$(bash "$e2e_dir/cluster.sh" env)"
ns=$DEMO_NAMESPACE
name=$(kubectl create --dry-run=client -o jsonpath='{.metadata.name}' \
  -f "$root/manifests/samples/quickstart.yaml")

kubectl apply -n "$ns" -f "$root/manifests/samples/quickstart.yaml"
echo "waiting for KubeRay to create the RayCluster and the scheduler to place its pods ..."
selector="llmops.dev/deployment=$name"
deadline=$((SECONDS + 180))
# Head and one worker, each with a node: what quickstart.yaml asks for.
until [ "$(kubectl get pods -n "$ns" -l "$selector" -o jsonpath='{range .items[*]}{.spec.nodeName}{"\n"}{end}' | grep -c .)" -ge 2 ]; do
  [ $SECONDS -lt $deadline ] || { echo "pods were not scheduled in time" >&2; exit 1; }
  sleep 2
done

show() { echo; echo "\$ $*"; "$@"; }
show kubectl get llmd -n "$ns"
show kubectl get rayservice -n "$ns"
show kubectl get raycluster -n "$ns"
show kubectl get pods -n "$ns" -o custom-columns='POD:.metadata.name,TYPE:.metadata.labels.ray\.io/node-type,NODE:.spec.nodeName,GPUS:.spec.containers[0].resources.limits.nvidia\.com/gpu,STATUS:.status.phase'
show kubectl get nodes -L nvidia.com/gpu.product,nvidia.com/gpu.count
