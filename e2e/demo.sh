#!/usr/bin/env bash
# The README's main job: bring up the local cluster with its real node, apply the quick
# start (manifests/samples/quickstart.yaml, with only the engine stood in: no GPU here,
# see e2e/standin.py), wait until KubeRay reports it Ready, and ask the endpoint for a
# chat completion.
set -euo pipefail
e2e_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$e2e_dir/.." && pwd)
# shellcheck source=cluster/settings.env
source "$e2e_dir/cluster/settings.env"
python=$root/.venv/bin/python

bash "$e2e_dir/cluster.sh" up
eval "$(bash "$e2e_dir/cluster.sh" env)"
ns=$DEMO_NAMESPACE
# Every pod of this namespace goes to the real node.
"$python" "$e2e_dir/standin.py" namespace "$ns" "$REAL_NODE_TAINT" | kubectl apply -f - >/dev/null
manifest=$("$python" "$e2e_dir/standin.py" deployment "$ns")
name=$(kubectl create --dry-run=client -o jsonpath='{.metadata.name}' -f - <<<"$manifest")
started=$SECONDS
kubectl apply -f - <<<"$manifest"
echo "waiting for KubeRay to start Ray on the real node and report the RayService Ready ..."
kubectl wait -n "$ns" --for=jsonpath='{.status.phase}'=Ready "llmd/$name" --timeout=600s >/dev/null
# KubeRay counts the ready workers a moment after it reports the RayService Ready.
desired=$(kubectl get llmd -n "$ns" "$name" -o jsonpath='{.status.replicas.desired}')
kubectl wait -n "$ns" --for=jsonpath='{.status.replicas.ready}'="$desired" "llmd/$name" \
  --timeout=300s >/dev/null
echo "Ready after $((SECONDS - started)) s"

show() { echo; echo "\$ $*"; "$@"; }
show kubectl get llmd -n "$ns"
show kubectl get rayservice,raycluster -n "$ns"
show kubectl get pods -n "$ns" -o wide
service=$(kubectl get llmd -n "$ns" "$name" -o jsonpath='{.status.endpoint}' | cut -d/ -f3 | cut -d. -f1)
url=http://$(kubectl get svc -n "$ns" "$service" -o jsonpath='{.spec.clusterIP}'):8000
model=$(kubectl get llmd -n "$ns" "$name" -o jsonpath='{.status.model}')
body="{\"model\": \"$model\", \"messages\": [{\"role\": \"user\", \"content\": \"Hello\"}]}"
echo
echo "\$ curl $url/v1/chat/completions -d '$body'"
# The Serve application may take a moment after Ready to take requests on every proxy.
for _ in $(seq 1 60); do
  if answer=$(curl -fs --max-time 30 "$url/v1/chat/completions" \
    -H 'Content-Type: application/json' -d "$body"); then
    "$python" -m json.tool <<<"$answer"
    exit 0
  fi
  sleep 2
done
echo "the endpoint did not answer" >&2
exit 1
