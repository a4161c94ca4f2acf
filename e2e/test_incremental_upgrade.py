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
pending cluster, the HTTPRoute and its weights) is not reachable there: the test marked
`ray` runs it on the real node, where Ray serves the stand-in app and the test plays the
Gateway controller (KubeRay moves capacity only once its Gateway is Accepted and
Programmed and its HTTPRoute Accepted with ResolvedRefs). What the fake nodes show:
KubeRay accepts the spec (no ValidationFailed, no InvalidRayServiceSpec Event), makes its
Gateway, starts the first cluster at target capacity 100 (which it does only for this
strategy), and a cluster change reaches the RayService with the strategy kept and
KubeRay's Gateway left alone.

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
    Body,
    Kube,
    condition,
    converged,
    sample,
    serving_cluster_name,
    wait_for,
)

from llm_operator.render import names
from test_exposure import _gw, install_gateway_api, patch_status

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
    install_gateway_api(kube)


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


# --- the upgrade proper, on the real node (Ray runs; the test plays the Gateway controller) --

REAL_OPTIONS = {
    "gatewayClassName": GATEWAY_CLASS,
    "stepSizePercent": 25,
    "intervalSeconds": 15,
    "maxSurgePercent": 50,
}
NOW = "2026-01-01T00:00:00Z"


def _true(kind: str, generation: int) -> Body:
    return {"type": kind, "status": "True", "reason": kind, "message": "",
            "lastTransitionTime": NOW, "observedGeneration": generation}  # fmt: skip


def accept_gateway(kube: Kube, namespace: str, name: str) -> None:
    """What a Gateway controller reports of a Gateway it serves: KubeRay moves Serve's
    target capacity only once its Gateway is Accepted and Programmed
    (utils.IsGatewayReady)."""
    generation = gateway(kube, namespace, name)["metadata"]["generation"]  # type: ignore[index]
    patch_status(kube, namespace, names.GATEWAYS, name, {"status": {
        "conditions": [_true("Accepted", generation), _true("Programmed", generation)],
        "addresses": [{"type": "IPAddress", "value": "203.0.113.10"}],
    }})  # fmt: skip


def accept_route(kube: Kube, namespace: str, name: str, gateway_name: str) -> None:
    """What a Gateway controller reports of a route it took (utils.IsHTTPRouteReady)."""
    route: Body = _gw(kube, "get", namespace, names.HTTP_ROUTES, name)
    generation = route["metadata"]["generation"]
    patch_status(kube, namespace, names.HTTP_ROUTES, name, {"status": {"parents": [{
        "parentRef": {"name": gateway_name, "namespace": namespace},
        "controllerName": "example.com/e2e",
        "conditions": [_true("Accepted", generation), _true("ResolvedRefs", generation)],
    }]}})  # fmt: skip


def route_of(kube: Kube, namespace: str, name: str) -> Body | None:
    try:
        found: Body = _gw(kube, "get", namespace, names.HTTP_ROUTES, name)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return found


@pytest.mark.ray
def test_an_incremental_upgrade_moves_capacity_and_traffic_in_steps(
    kube: Kube, ray_namespace: str
) -> None:
    """KubeRay itself upgrades: a pending cluster whose Serve target capacity grows by
    maxSurgePercent at a time while the active one's shrinks, traffic moved by
    stepSizePercent through its HTTPRoute, then the pending cluster promoted. The
    LLMDeployment mirrors each step."""
    from standin import standin_deployment  # the real node's image: only for this test
    from test_ray import READY_SECONDS, kuberay_ready

    namespace = ray_namespace
    body = standin_deployment(namespace)
    body["spec"]["upgradeStrategy"] = INCREMENTAL
    body["spec"]["incrementalUpgrade"] = dict(REAL_OPTIONS)
    kube.create_llmd(body)
    gateway_name = names.upgrade_gateway_name(NAME)
    wait_for(lambda: gateway(kube, namespace, gateway_name), "KubeRay's Gateway")
    accept_gateway(kube, namespace, gateway_name)
    wait_for(lambda: kuberay_ready(kube, namespace, NAME), "KubeRay Ready", READY_SECONDS)
    # KubeRay promotes the first cluster in a reconcile after the one that reports Ready
    # (its serve endpoints count before the promotion): wait for the promotion itself.
    first = wait_for(
        lambda: (
            (rayservice(kube, namespace).get("status") or {}).get("activeServiceStatus") or {}
        ).get("rayClusterName"),
        "KubeRay to promote the first cluster to active",
        READY_SECONDS,
    )
    route_name = names.upgrade_route_name(NAME)
    wait_for(lambda: route_of(kube, namespace, route_name), "KubeRay's HTTPRoute")
    accept_route(kube, namespace, route_name, gateway_name)

    kube.patch_llmd(
        namespace, NAME, {"spec": {"rayCluster": {"env": [{"name": "E2E_CHANGE", "value": "1"}]}}}
    )
    seen: list[tuple[int | None, int | None, int | None, int | None]] = []
    upgrading_seen: set[str] = set()

    def promoted() -> Body | None:
        found = kube.get_llmd(namespace, NAME)
        upgrade = (found.get("status") or {}).get("upgrade") or {}
        active, pending = upgrade.get("active") or {}, upgrade.get("pending") or {}
        upgrading_seen.add(str((condition(found, "Upgrading") or {}).get("reason")))
        if pending:
            seen.append((
                active.get("targetCapacity"), pending.get("targetCapacity"),
                active.get("trafficRoutedPercent"), pending.get("trafficRoutedPercent"),
            ))  # fmt: skip
        done = active.get("rayCluster") not in (None, first) and not pending
        return found if done else None

    # Within Ray's per-test bound (e2e/conftest.py): the pending cluster starts on the 2-core
    # node, then 4 traffic steps of 15 s and 4 capacity steps.
    after = wait_for(promoted, "the upgrade to finish", READY_SECONDS + 300)
    assert "MigratingTraffic" in upgrading_seen, upgrading_seen
    assert seen, "the split was never mirrored"
    for active_capacity, pending_capacity, _, pending_traffic in seen:
        # Never twice the capacity: at most maxSurgePercent above one cluster's.
        assert (active_capacity or 0) + (pending_capacity or 0) <= 150, seen
        # Traffic only goes where the capacity is.
        assert (pending_traffic or 0) <= (pending_capacity or 0), seen
    # The pending cluster grew by maxSurgePercent (50) at a time, traffic by 25.
    assert {c for _, c, _, _ in seen if c} <= {50, 100}, seen
    assert 50 in {c for _, c, _, _ in seen}, seen
    assert {t for _, _, _, t in seen if t} <= {25, 50, 75, 100}, seen
    upgrading = condition(after, "Upgrading") or {}
    assert (upgrading.get("status"), upgrading.get("reason")) == ("False", "NoUpgrade")
    assert after["status"]["upgrade"]["active"]["trafficRoutedPercent"] == 100
    assert after["status"]["endpoint"] == "http://203.0.113.10/v1"
