"""Zero-downtime upgrades without double GPUs: upgradeStrategy
NewClusterWithIncrementalUpgrade, as KubeRay v1.6.1 reads it and reports it back.

KubeRay's side, checked here against its RayService CRD (linked by e2e/tools.sh) and
written down from its Go source (ray-operator v1.6.1):
- apis/ray/v1/rayservice_types.go: `upgradeStrategy{type, clusterUpgradeOptions{
  maxSurgePercent, stepSizePercent, intervalSeconds, gatewayClassName}}`; each of
  activeServiceStatus/pendingServiceStatus carries `targetCapacity`,
  `trafficRoutedPercent` and `lastTrafficMigratedTime`; conditions `UpgradeInProgress`
  (reason BothActivePendingClustersExist or NoPendingCluster) and `RollbackInProgress`.
- controllers/ray/utils/validation.go ValidateClusterUpgradeOptions: the in-tree
  autoscaler is required, options are required, gatewayClassName is not empty.
- controllers/ray/rayservice_controller.go: a Gateway `<rayservice>-gateway` and an
  HTTPRoute `<rayservice>-httproute` of KubeRay's own, hence the Gateway API.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from conftest import BIN_DIR, SAMPLES, crd_schema, load_one, refusals, unknown_fields
from fakeapi import (
    NAMESPACE,
    SERVED,
    FakeApiServer,
    RecordingKubeApi,
    cluster_api,
    gateway_path,
    llmd_path,
    ray_path,
)
from llm_operator.api import crd
from llm_operator.api.validation import names_field, resolve
from llm_operator.api.vocabulary import ConditionType, Phase, Reason
from llm_operator.controller import kube, reconciler
from llm_operator.render import names, render
from test_reconciler import reconcile, stored_body

Body = dict[str, Any]
INCREMENTAL = "NewClusterWithIncrementalUpgrade"
OPTIONS = {"gatewayClassName": "istio", "stepSizePercent": 20, "intervalSeconds": 30}


def incremental(**options: Any) -> Body:
    """The quick start with an incremental upgrade strategy."""
    body = load_one(SAMPLES / "quickstart.yaml")
    body["spec"]["upgradeStrategy"] = INCREMENTAL
    body["spec"]["incrementalUpgrade"] = {**OPTIONS, **options}
    return body


def rayservice_schema() -> Body:
    path = BIN_DIR / "kuberay-crds" / "ray.io_rayservices.yaml"
    return crd_schema(path, "`e2e/tools.sh kuberay` links KubeRay's CRDs")


# --- the spec KubeRay gets ------------------------------------------------------------------


def test_cluster_upgrade_options_are_kuberays_fields() -> None:
    (service,) = render(resolve(incremental(maxSurgePercent=50)))
    strategy = service["spec"]["upgradeStrategy"]
    assert strategy == {
        "type": INCREMENTAL,
        "clusterUpgradeOptions": {
            "gatewayClassName": "istio",
            "stepSizePercent": 20,
            "intervalSeconds": 30,
            "maxSurgePercent": 50,
        },
    }
    schema = rayservice_schema()["properties"]["spec"]["properties"]["upgradeStrategy"]
    assert unknown_fields(strategy, schema) == []
    options = schema["properties"]["clusterUpgradeOptions"]
    # What KubeRay's CRD requires is always rendered.
    assert set(options["required"]) <= set(strategy["clusterUpgradeOptions"])
    # KubeRay refuses NewClusterWithIncrementalUpgrade without its in-tree autoscaler.
    assert service["spec"]["rayClusterConfig"]["enableInTreeAutoscaling"] is True


def test_other_strategies_carry_no_options() -> None:
    body = load_one(SAMPLES / "quickstart.yaml")
    (service,) = render(resolve(body))
    assert service["spec"]["upgradeStrategy"] == {"type": "NewCluster"}


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("stepSizePercent", 0),
        ("stepSizePercent", 101),
        ("intervalSeconds", 0),
        ("maxSurgePercent", -1),
        ("maxSurgePercent", 101),
    ],
)
def test_options_out_of_kuberays_range_are_refused(option: str, value: int) -> None:
    messages = refusals(incremental(**{option: value}))
    assert any(names_field(m, f"spec.incrementalUpgrade.{option}") for m in messages), messages


def test_options_without_their_strategy_are_refused() -> None:
    body = incremental()
    body["spec"]["upgradeStrategy"] = "NewCluster"
    messages = refusals(body)
    assert any(names_field(m, "spec.incrementalUpgrade") for m in messages), messages


@pytest.mark.parametrize("strategy", [INCREMENTAL, "None"])
def test_an_upgrade_strategy_in_mode_cluster_is_refused(strategy: str) -> None:
    body = incremental()
    body["spec"].update(mode="Cluster", upgradeStrategy=strategy)
    if strategy != INCREMENTAL:
        del body["spec"]["incrementalUpgrade"]
    messages = refusals(body)
    assert any(names_field(m, "spec.upgradeStrategy") for m in messages), messages


# --- status: what KubeRay reports, mirrored -----------------------------------------------

T0, T1 = "2026-11-20T10:00:00Z", "2026-11-20T10:00:30Z"


def _cluster(name: str, traffic: int | None, capacity: int | None, moved: str | None) -> Body:
    """One of KubeRay's activeServiceStatus/pendingServiceStatus."""
    found: Body = {
        "applicationStatuses": {"llm": {"status": "RUNNING", "serveDeploymentStatuses": {}}},
        "rayClusterName": name,
        "rayClusterStatus": {"state": "ready", "readyWorkerReplicas": 1},
    }
    for key, value in (
        ("trafficRoutedPercent", traffic),
        ("targetCapacity", capacity),
        ("lastTrafficMigratedTime", moved),
    ):
        if value is not None:
            found[key] = value
    return found


def _condition(kind: str, status: str, reason: str, message: str) -> Body:
    return {
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": T0,
        "observedGeneration": 1,
    }


READY = _condition("Ready", "True", "NonZeroServeEndpoints", "Number of serve endpoints is > 0")
BOTH = _condition(
    "UpgradeInProgress",
    "True",
    "BothActivePendingClustersExist",
    "Both active and pending Ray clusters exist",
)
NO_PENDING = _condition(
    "UpgradeInProgress",
    "False",
    "NoPendingCluster",
    "Active Ray cluster exists and no pending Ray cluster",
)


def kuberay_status(
    active: Body | None, pending: Body | None, *conditions: Body, generation: int = 1
) -> Body:
    """A RayService's status as KubeRay v1.6.1 writes it (RayServiceStatuses)."""
    found: Body = {
        "conditions": list(conditions),
        "observedGeneration": generation,
        "numServeEndpoints": 1,
        "lastUpdateTime": T1,
        "serviceStatus": "Running",
    }
    if active is not None:
        found["activeServiceStatus"] = active
    if pending is not None:
        found["pendingServiceStatus"] = pending
    return found


MID_UPGRADE = kuberay_status(
    _cluster("qwen-small-aaaaa", 80, 60, T1), _cluster("qwen-small-bbbbb", 20, 40, T1), READY, BOTH
)
STEADY = kuberay_status(_cluster("qwen-small-aaaaa", 100, 100, T0), None, READY, NO_PENDING)
FIRST = kuberay_status(
    None,
    _cluster("qwen-small-aaaaa", None, 100, None),
    _condition("Ready", "False", "Initializing", "RayService is initializing"),
    _condition("UpgradeInProgress", "False", "Initializing", "RayService is initializing"),
)
ROLLBACK = kuberay_status(
    _cluster("qwen-small-aaaaa", 90, 100, T1),
    _cluster("qwen-small-bbbbb", 10, 0, T1),
    READY,
    BOTH,
    _condition("RollbackInProgress", "True", "TargetClusterChanged", "The target changed back"),
)
# upgradeStrategy NewCluster: no traffic fields, both clusters while the new one starts.
BLUE_GREEN = kuberay_status(
    _cluster("qwen-small-aaaaa", None, None, None),
    _cluster("qwen-small-bbbbb", None, None, None),
    READY,
    BOTH,
)
BODIES = {
    "mid-upgrade": MID_UPGRADE,
    "steady": STEADY,
    "first": FIRST,
    "rollback": ROLLBACK,
    "blue-green": BLUE_GREEN,
}


@pytest.mark.parametrize("case", sorted(BODIES))
def test_the_status_bodies_are_kuberays_shape(case: str) -> None:
    schema = rayservice_schema()["properties"]["status"]
    assert unknown_fields(BODIES[case], schema, ".status") == []
    assert unknown_fields({"pendingServiceStatus": {"trafficPercent": 1}}, schema) != []  # guard


def observed(server: FakeApiServer, api: RecordingKubeApi, kuberay: Body) -> Body:
    """The LLMDeployment's status after KubeRay reported `kuberay` on its RayService."""
    name = stored_body(server, incremental())
    reconcile(server, name, api)
    service = server.objects[ray_path("rayservices", names.ray_service_name(name))]
    service["status"] = copy.deepcopy(kuberay)
    service["metadata"]["generation"] = kuberay["observedGeneration"]
    return reconcile(server, name, api)


def upgrading(status: Body) -> Body:
    found: Body = {c["type"]: c for c in status["conditions"]}[ConditionType.UPGRADING]
    return found


def test_mid_upgrade_mirrors_the_split_and_says_upgrading(
    server: FakeApiServer, api: RecordingKubeApi
) -> None:
    status = observed(server, api, MID_UPGRADE)
    assert status["upgrade"] == {
        "active": {
            "rayCluster": "qwen-small-aaaaa",
            "trafficRoutedPercent": 80,
            "targetCapacity": 60,
            "lastTrafficMigratedTime": T1,
        },
        "pending": {
            "rayCluster": "qwen-small-bbbbb",
            "trafficRoutedPercent": 20,
            "targetCapacity": 40,
            "lastTrafficMigratedTime": T1,
        },
    }
    condition = upgrading(status)
    assert (condition["status"], condition["reason"]) == ("True", Reason.MIGRATING_TRAFFIC)
    assert "qwen-small-bbbbb (traffic 20%, target capacity 40%)" in condition["message"]
    assert status["phase"] == Phase.READY, "the active cluster keeps serving"


def test_after_the_upgrade_only_the_active_cluster_is_left(
    server: FakeApiServer, api: RecordingKubeApi
) -> None:
    status = observed(server, api, STEADY)
    assert status["upgrade"] == {
        "active": {
            "rayCluster": "qwen-small-aaaaa",
            "trafficRoutedPercent": 100,
            "targetCapacity": 100,
            "lastTrafficMigratedTime": T0,
        }
    }
    condition = upgrading(status)
    assert (condition["status"], condition["reason"]) == ("False", Reason.NO_UPGRADE)


def test_the_first_cluster_is_no_upgrade(server: FakeApiServer, api: RecordingKubeApi) -> None:
    status = observed(server, api, FIRST)
    condition = upgrading(status)
    assert (condition["status"], condition["reason"]) == ("False", Reason.FIRST_CLUSTER_STARTING)
    assert status["upgrade"] == {
        "pending": {"rayCluster": "qwen-small-aaaaa", "targetCapacity": 100}
    }


def test_a_rollback_is_upgrading(server: FakeApiServer, api: RecordingKubeApi) -> None:
    condition = upgrading(observed(server, api, ROLLBACK))
    assert (condition["status"], condition["reason"]) == ("True", Reason.ROLLING_BACK)
    assert condition["message"].startswith("The target changed back: ")


def test_a_blue_green_upgrade_is_upgrading_without_a_split(
    server: FakeApiServer, api: RecordingKubeApi
) -> None:
    status = observed(server, api, BLUE_GREEN)
    condition = upgrading(status)
    assert (condition["status"], condition["reason"]) == ("True", Reason.NEW_CLUSTER_STARTING)
    assert "upgrade" not in status


def test_an_unchanged_split_writes_nothing(server: FakeApiServer, api: RecordingKubeApi) -> None:
    observed(server, api, MID_UPGRADE)
    writes = len(server.writes)
    reconcile(server, "qwen-small", api)
    assert len(server.writes) == writes


def test_kubectl_wide_shows_the_split() -> None:
    columns = {c["name"]: c for c in crd.PRINTER_COLUMNS}
    status = crd.build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"][
        "status"
    ]
    for name, field in (
        ("Traffic-New", "trafficRoutedPercent"),
        ("Capacity-New", "targetCapacity"),
    ):
        column = columns[name]
        assert column["jsonPath"] == f".status.upgrade.pending.{field}"
        assert column["priority"] == 1, "with -o wide only"
        pending = status["properties"]["upgrade"]["properties"]["pending"]
        assert pending["properties"][field]["type"] == "integer"
    assert columns["Upgrading"]["jsonPath"] == '.status.conditions[?(@.type=="Upgrading")].status'


# --- refused where the Gateway API is not served -------------------------------------------


def without_gateway_api() -> FakeApiServer:
    server = FakeApiServer()
    server.served = {k: v for k, v in SERVED.items() if k != names.GATEWAY_API_VERSION}
    return server


def spec_valid(status: Body) -> Body:
    found: Body = {c["type"]: c for c in status["conditions"]}[ConditionType.SPEC_VALID]
    return found


def test_a_new_deployment_is_held_back_without_the_gateway_api() -> None:
    server = without_gateway_api()
    name = stored_body(server, incremental())
    with pytest.raises(kube.UpgradeNotServed) as caught:
        reconcile(server, name, cluster_api(server))
    assert caught.value.delay == kube.NOT_SERVED_RETRY_SECONDS
    assert ray_path("rayservices", name) not in server.objects
    assert {w.access.resource for w in server.writes} == {"llmdeployments/status"}, "status only"
    status = server.objects[llmd_path(name)]["status"]
    valid = spec_valid(status)
    assert (valid["status"], valid["reason"]) == ("False", Reason.GATEWAY_API_NOT_INSTALLED)
    assert names_field(valid["message"], "spec.upgradeStrategy")
    assert "httproutes.gateway.networking.k8s.io/v1" in valid["message"]
    assert status["phase"] == Phase.PENDING
    ready = {c["type"]: c for c in status["conditions"]}[ConditionType.READY]
    assert ready["reason"] == Reason.GATEWAY_API_NOT_INSTALLED


def test_a_running_deployment_is_left_as_it_was_then_upgraded_once_served() -> None:
    server = without_gateway_api()
    api = cluster_api(server)
    body = incremental()
    body["spec"]["upgradeStrategy"] = "NewCluster"
    del body["spec"]["incrementalUpgrade"]
    name = stored_body(server, body)
    reconcile(server, name, api)  # NewCluster needs no Gateway API
    path = ray_path("rayservices", names.ray_service_name(name))
    server.objects[path]["status"] = copy.deepcopy(STEADY)
    reconcile(server, name, api)
    before = copy.deepcopy(server.objects[path])

    llmd = server.objects[llmd_path(name)]
    llmd["spec"].update(upgradeStrategy=INCREMENTAL, incrementalUpgrade=dict(OPTIONS))
    llmd["metadata"]["generation"] = 2
    start = len(server.writes)
    with pytest.raises(kube.UpgradeNotServed):
        reconcile(server, name, api)
    assert {w.access.resource for w in server.writes[start:]} == {"llmdeployments/status"}
    assert server.objects[path] == before, "the running RayService is not patched"
    status = server.objects[llmd_path(name)]["status"]
    assert status["phase"] == Phase.READY, "what KubeRay reports is still mirrored"
    assert status["endpoint"] == names.endpoint(name, NAMESPACE), "it still serves there"
    assert spec_valid(status)["reason"] == Reason.GATEWAY_API_NOT_INSTALLED

    # The Gateway API's CRDs are installed: the retry applies the strategy.
    server.served = dict(SERVED)
    status = reconcile(server, name, api)
    assert server.objects[path]["spec"]["upgradeStrategy"]["type"] == INCREMENTAL
    assert "endpoint" not in status, "KubeRay's Gateway has no address yet"
    assert (spec_valid(status)["status"], spec_valid(status)["reason"]) == ("True", Reason.VALID)


def test_other_strategies_ask_nothing_of_the_gateway_api(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    asked: list[object] = []
    monkeypatch.setattr(kube, "gateway_api_served", asked.append)
    server = without_gateway_api()
    body = load_one(SAMPLES / "quickstart.yaml")
    name = stored_body(server, body)
    reconcile(server, name, cluster_api(server))
    assert asked == []
    assert ray_path("rayservices", name) in server.objects


def test_the_child_watch_treats_the_refusal_as_recorded() -> None:
    # on_child_event returns quietly on RouteNotServed: the refusal is in status already.
    assert issubclass(kube.UpgradeNotServed, kube.RouteNotServed)
    assert reconciler.INCREMENTAL_UPGRADE == INCREMENTAL


# --- the endpoint: KubeRay's Gateway, not the RayService's Serve service --------------------


def test_the_endpoint_is_kuberays_gateway_once_it_has_an_address(
    server: FakeApiServer, api: RecordingKubeApi
) -> None:
    status = observed(server, api, STEADY)
    # KubeRay makes no <rayservice>-serve-svc with this strategy: no in-cluster URL to give.
    assert "endpoint" not in status
    gateway = {
        "apiVersion": names.GATEWAY_API_VERSION,
        "kind": "Gateway",
        "metadata": {"name": "qwen-small-gateway", "namespace": NAMESPACE},
        "spec": {
            "gatewayClassName": "istio",
            "listeners": [{"name": "http", "protocol": "HTTP", "port": 80}],
        },
        "status": {"addresses": [{"type": "IPAddress", "value": "203.0.113.9"}]},
    }
    assert gateway["metadata"]["name"] == names.upgrade_gateway_name("qwen-small")
    server.put(gateway_path(names.GATEWAYS, "qwen-small-gateway"), gateway)
    status = reconcile(server, "qwen-small", api)
    assert status["endpoint"] == "http://203.0.113.9/v1"


def test_a_route_of_ours_is_refused_with_an_incremental_upgrade() -> None:
    body = load_one(SAMPLES / "gateway-route.yaml")
    body["spec"]["upgradeStrategy"] = INCREMENTAL
    body["spec"]["incrementalUpgrade"] = dict(OPTIONS)
    messages = refusals(body)
    assert any(names_field(m, "spec.exposure.gateway") for m in messages), messages
