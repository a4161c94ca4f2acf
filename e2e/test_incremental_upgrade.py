"""Zero-downtime upgrades without double GPUs: upgradeStrategy
NewClusterWithIncrementalUpgrade with KubeRay's RayServiceIncrementalUpgrade feature gate
on (e2e/cluster.sh, e2e/kind/run.sh) and the Gateway API's CRDs installed.

What KubeRay v1.6.1 does with it (controllers/ray/rayservice_controller.go):
- in every reconcile that reaches its Gateway step, a Gateway `<rayservice>-gateway`
  (the spec's gatewayClassName, listener `http` on port 80) owned by the RayService;
- the first cluster of the RayService starts at Serve target capacity 100
  (`pendingServiceStatus.targetCapacity`);
- once an active cluster serves, an HTTPRoute `<rayservice>-httproute` whose weights it
  moves by stepSizePercent every intervalSeconds, a pending cluster scaled by
  maxSurgePercent of target capacity at a time, and per-cluster Serve services.

On the fake GPU nodes no Ray runs: once a head pod is Ready, KubeRay asks its dashboard
for Serve's status, fails, and ends each reconcile there (before its Gateway step and
before it writes status). No cluster ever becomes active, so the upgrade proper (the
pending cluster, the HTTPRoute and its weights) is not reachable here: it needs the real
node's Ray. What the fake nodes show: KubeRay accepts the spec (no ValidationFailed, no
InvalidRayServiceSpec Event), makes its Gateway, starts the first cluster at target
capacity 100 (which it does only for this strategy), and a cluster change reaches the
RayService with the strategy kept and KubeRay's Gateway left alone.

In a namespace KubeRay does not watch, the test writes a mid-upgrade RayService status
as KubeRay would, and KubeRay's Gateway with an address as a Gateway controller would:
the LLMDeployment mirrors the split, says Upgrading, shows the split in
`kubectl get -o wide`, and its endpoint is the Gateway's.

Refusal without the Gateway API is unit-tested only (tests/test_incremental_upgrade.py):
showing it here would mean deleting the Gateway API's CRDs from a cluster other tests
and KubeRay use at the same time.
"""

from __future__ import annotations

import copy
import itertools
import re
import subprocess
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException
from support import (
    CRD_SECONDS,
    Body,
    Kube,
    condition,
    converged,
    sample,
    serving_cluster_name,
    wait_for,
)

from llm_operator.render import names
from test_exposure import GATEWAY_API_CRDS, _established, _gw, patch_status

INCREMENTAL = "NewClusterWithIncrementalUpgrade"
GATEWAY_CLASS = "e2e-no-controller"
NAME = "qwen-small"  # the quickstart's
OPTIONS = {
    "gatewayClassName": GATEWAY_CLASS,
    "stepSizePercent": 25,
    "intervalSeconds": 10,
    "maxSurgePercent": 50,
}


@pytest.fixture(scope="module", autouse=True)
def gateway_api(kube: Kube) -> None:
    """The Gateway API's CRDs, applied from the pinned path if the cluster lacks them
    (kind); e2e/cluster.sh installs them before KubeRay starts."""
    if _established(kube):
        return
    subprocess.run(
        ["kubectl", "apply", "--server-side", "--force-conflicts", "-f", f"{GATEWAY_API_CRDS}/"],
        check=True,
        capture_output=True,
    )
    wait_for(lambda: _established(kube), "the Gateway API's CRDs", CRD_SECONDS)


def incremental(namespace: str) -> Body:
    def edit(body: Body) -> None:
        body["spec"]["upgradeStrategy"] = INCREMENTAL
        body["spec"]["incrementalUpgrade"] = dict(OPTIONS)

    return sample("quickstart", namespace, edit)


def gateway(kube: Kube, namespace: str, name: str) -> Body | None:
    try:
        found: Body = _gw(kube, "get", namespace, names.GATEWAYS, name)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return found


def rayservice(kube: Kube, namespace: str) -> Body:
    return kube.ray("rayservices", namespace, names.ray_service_name(NAME)) or {}


def kuberay_refusals(kube: Kube, namespace: str) -> list[str]:
    """KubeRay's word on a spec it refuses: its Ready reason and its Events."""
    service = rayservice(kube, namespace)
    found = []
    ready = condition(service, "Ready") or {}
    if ready.get("reason") == "ValidationFailed":
        found.append(str(ready.get("message")))
    events = kube.core.list_namespaced_event(
        namespace,
        field_selector=f"involvedObject.kind=RayService,involvedObject.name={NAME}",
    ).items
    found += [str(e.message) for e in events if e.reason == "InvalidRayServiceSpec"]
    return found


def test_kuberay_accepts_the_strategy_and_makes_its_gateway(kube: Kube, namespace: str) -> None:
    llmd = kube.create_llmd(incremental(namespace))
    assert llmd["spec"]["incrementalUpgrade"]["maxSurgePercent"] == 50
    service = wait_for(lambda: rayservice(kube, namespace), "the RayService")
    assert service["spec"]["upgradeStrategy"] == {
        "type": INCREMENTAL,
        "clusterUpgradeOptions": OPTIONS,
    }
    first = serving_cluster_name(kube, namespace, NAME)

    gateway_name = names.upgrade_gateway_name(NAME)
    made = wait_for(lambda: gateway(kube, namespace, gateway_name), "KubeRay's Gateway")
    assert made["spec"]["gatewayClassName"] == GATEWAY_CLASS
    assert [(x["name"], x["protocol"], x["port"]) for x in made["spec"]["listeners"]] == [
        ("http", "HTTP", 80)
    ]
    (owner,) = made["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner.get("controller")) == (
        "RayService",
        names.ray_service_name(NAME),
        True,
    )

    # KubeRay starts the RayService's first cluster at full Serve target capacity: only
    # with this strategy does it write targetCapacity at all.
    pending = wait_for(
        lambda: (rayservice(kube, namespace).get("status") or {}).get("pendingServiceStatus"),
        "KubeRay's pendingServiceStatus",
    )
    assert pending == {**pending, "rayClusterName": first, "targetCapacity": 100}
    assert kuberay_refusals(kube, namespace) == []

    def mirrored() -> Body | None:
        body = kube.get_llmd(namespace, NAME)
        upgrade = (body.get("status") or {}).get("upgrade") or {}
        return body if converged(body) and upgrade.get("pending") else None

    body = wait_for(mirrored, "the first cluster's target capacity in status.upgrade")
    assert body["status"]["upgrade"]["pending"] == {"rayCluster": first, "targetCapacity": 100}
    upgrading = condition(body, "Upgrading") or {}
    assert (upgrading.get("status"), upgrading.get("reason")) == ("False", "FirstClusterStarting")
    assert (condition(body, "SpecValid") or {}).get("status") == "True"
    # No <rayservice>-serve-svc with this strategy, and the Gateway has no address here.
    assert "endpoint" not in body["status"]

    # A cluster change: the operator's half. KubeRay would roll it out incrementally from an
    # active cluster, which needs Ray's dashboard (see the module's docstring).
    generation = service["metadata"]["generation"]
    kube.patch_llmd(
        namespace, NAME, {"spec": {"rayCluster": {"env": [{"name": "E2E_CHANGE", "value": "1"}]}}}
    )

    def changed() -> Body | None:
        found = rayservice(kube, namespace)
        return found if found["metadata"]["generation"] > generation else None

    after = wait_for(changed, "the changed RayService")
    head = after["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert {"name": "E2E_CHANGE", "value": "1"} in head["env"]
    assert after["spec"]["upgradeStrategy"] == service["spec"]["upgradeStrategy"]
    kept = gateway(kube, namespace, gateway_name)
    assert kept is not None and kept["metadata"]["uid"] == made["metadata"]["uid"]
    assert kuberay_refusals(kube, namespace) == []


# --- the status KubeRay writes mid-upgrade, mirrored (KubeRay's part played) ----------------

T0, T1 = "2026-11-20T10:00:00Z", "2026-11-20T10:00:30Z"


def _cluster(name: str, traffic: int, capacity: int) -> Body:
    return {
        "applicationStatuses": {"llm": {"status": "RUNNING"}},
        "rayClusterName": name,
        "rayClusterStatus": {"state": "ready", "readyWorkerReplicas": 1},
        "targetCapacity": capacity,
        "trafficRoutedPercent": traffic,
        "lastTrafficMigratedTime": T1,
    }


def _condition(kind: str, status: str, reason: str) -> Body:
    return {"type": kind, "status": status, "reason": reason, "message": "",
            "lastTransitionTime": T0, "observedGeneration": 1}  # fmt: skip


def mid_upgrade(generation: int) -> Body:
    """A RayService's status as KubeRay v1.6.1 writes it while traffic moves."""
    return {
        "conditions": [
            _condition("Ready", "True", "NonZeroServeEndpoints"),
            _condition("UpgradeInProgress", "True", "BothActivePendingClustersExist"),
        ],
        "activeServiceStatus": _cluster(f"{NAME}-aaaaa", 75, 50),
        "pendingServiceStatus": _cluster(f"{NAME}-bbbbb", 25, 50),
        "numServeEndpoints": 2,
        "observedGeneration": generation,
        "serviceStatus": "Running",
    }


def wide_columns(namespace: str) -> dict[str, str]:
    """`kubectl get -o wide` of the deployment, by column; kubectl left-aligns each cell
    where its header starts (an empty cell prints as blank or <none>)."""
    header, row = subprocess.run(
        ["kubectl", "get", "llmd", NAME, "-n", namespace, "-o", "wide"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.splitlines()[:2]
    starts = [m.start() for m in re.finditer(r"\S+", header)] + [None]
    return {header[a:b].strip(): row[a:b].strip() for a, b in itertools.pairwise(starts)}


def test_the_split_is_mirrored_and_the_endpoint_is_the_gateways(
    kube: Kube, unwatched_namespace: str
) -> None:
    namespace = unwatched_namespace
    kube.create_llmd(incremental(namespace))
    service = wait_for(lambda: rayservice(kube, namespace), "the RayService")
    wait_for(lambda: converged(kube.get_llmd(namespace, NAME)), "the first status")

    # KubeRay's Gateway, with the address a Gateway controller would publish.
    body: Body = {
        "apiVersion": names.GATEWAY_API_VERSION,
        "kind": "Gateway",
        "metadata": {"name": names.upgrade_gateway_name(NAME), "namespace": namespace},
        "spec": {
            "gatewayClassName": GATEWAY_CLASS,
            "listeners": [{"name": "http", "protocol": "HTTP", "port": 80}],
        },
    }
    _gw(kube, "create", namespace, names.GATEWAYS, copy.deepcopy(body))
    patch_status(
        kube,
        namespace,
        names.GATEWAYS,
        names.upgrade_gateway_name(NAME),
        {"status": {"addresses": [{"type": "IPAddress", "value": "203.0.113.9"}]}},
    )
    # KubeRay's status, mid-upgrade: the child event makes the operator reconcile.
    kube.custom.patch_namespaced_custom_object_status(
        names.RAY_GROUP,
        names.RAY_VERSION,
        namespace,
        "rayservices",
        names.ray_service_name(NAME),
        {"status": mid_upgrade(service["metadata"]["generation"])},
    )

    def upgrading() -> Body | None:
        found = kube.get_llmd(namespace, NAME)
        return found if (condition(found, "Upgrading") or {}).get("status") == "True" else None

    found = wait_for(upgrading, "Upgrading=True")
    assert (condition(found, "Upgrading") or {})["reason"] == "MigratingTraffic"
    status: dict[str, Any] = found["status"]
    assert status["upgrade"]["active"] == {
        "rayCluster": f"{NAME}-aaaaa",
        "trafficRoutedPercent": 75,
        "targetCapacity": 50,
        "lastTrafficMigratedTime": T1,
    }
    assert status["upgrade"]["pending"]["trafficRoutedPercent"] == 25
    assert status["endpoint"] == "http://203.0.113.9/v1"
    assert status["phase"] == "Ready"

    columns = wide_columns(namespace)
    assert (columns["UPGRADING"], columns["TRAFFIC-NEW"], columns["CAPACITY-NEW"]) == (
        "True",
        "25",
        "50",
    ), columns
