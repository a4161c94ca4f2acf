"""Status mirroring and write decisions of the controller: pure functions only."""

from __future__ import annotations

from typing import Any

from conftest import sample_plan
from llm_operator.api.vocabulary import RayKind
from llm_operator.controller import status
from llm_operator.controller.merge import (
    bounds_patch,
    claim_metadata_patch,
    contains,
    keep_autoscaler_fields,
)
from llm_operator.render import names, render
from llm_operator.render.names import RETAIN_ANNOTATION

NOW = "2026-11-22T10:00:00Z"
LATER = "2026-11-22T11:00:00Z"


def service(conditions: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "kind": "RayService",
        "metadata": {"name": "m", "generation": 2},
        "status": {"observedGeneration": 2, "conditions": conditions, **extra},
    }
    return body


def cond(kind: str, state: str, reason: str, message: str = "") -> dict[str, str]:
    return {"type": kind, "status": state, "reason": reason, "message": message}


def by_type(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in result["conditions"]}


# --- RayService ----------------------------------------------------------------------


def test_initializing_service_is_progressing_with_kuberay_reason() -> None:
    seen = status.observe_ray_service(
        service([cond("Ready", "False", "Initializing", "waiting for serve")]), 1
    )
    assert seen.phase == "Progressing"
    assert seen.progressing == status.ConditionState("True", "Initializing", "waiting for serve")
    assert seen.ready.status == "False"


def test_ready_service_counts_replicas_by_hosts() -> None:
    # As KubeRay reported a TP 2 x PP 2 replica on two 2-GPU pods on the real node: the
    # pod without a Serve replica runs, but its drained Serve proxy keeps it unready.
    workers = {"availableWorkerReplicas": 4, "readyWorkerReplicas": 2}
    active = {"rayClusterName": "m-abc", "rayClusterStatus": workers}
    body = service([cond("Ready", "True", "NonZeroServeEndpoints")], activeServiceStatus=active)
    seen = status.observe_ray_service(body, hosts_per_replica=2)
    assert (seen.phase, seen.ready_replicas, seen.ray_cluster) == ("Ready", 2, "m-abc")
    assert seen.serving_clusters == ("m-abc",)
    assert seen.progressing.status == "False"


def test_single_host_replicas_count_ready_worker_pods_only() -> None:
    workers = {"availableWorkerReplicas": 2, "readyWorkerReplicas": 1}
    active = {"rayClusterName": "m-abc", "rayClusterStatus": workers}
    body = service([cond("Ready", "True", "NonZeroServeEndpoints")], activeServiceStatus=active)
    assert status.observe_ray_service(body, hosts_per_replica=1).ready_replicas == 1


def test_pending_cluster_also_gets_the_worker_bounds() -> None:
    active = {"rayClusterName": "m-old"}
    pending = {"rayClusterName": "m-new"}
    body = service(
        [cond("Ready", "False", "Initializing")],
        activeServiceStatus=active,
        pendingServiceStatus=pending,
    )
    seen = status.observe_ray_service(body, hosts_per_replica=1)
    assert seen.ray_cluster == "m-old"
    assert seen.serving_clusters == ("m-old", "m-new")


def test_failed_serve_application_is_failed_or_degraded() -> None:
    apps = {"applicationStatuses": {"llm": {"status": "DEPLOY_FAILED", "message": "OOM"}}}
    not_ready = service([cond("Ready", "False", "Initializing")], activeServiceStatus=apps)
    seen = status.observe_ray_service(not_ready, 1)
    assert seen.phase == "Failed"
    assert "DEPLOY_FAILED" in seen.ready.message and "OOM" in seen.ready.message
    serving = service([cond("Ready", "True", "NonZeroServeEndpoints")], pendingServiceStatus=apps)
    assert status.observe_ray_service(serving, 1).phase == "Degraded"


def test_upgrade_in_progress_is_reported() -> None:
    body = service(
        [
            cond("Ready", "True", "NonZeroServeEndpoints"),
            cond("UpgradeInProgress", "True", "BothActivePendingClustersExist", "upgrading"),
        ]
    )
    seen = status.observe_ray_service(body, 1)
    assert seen.phase == "Ready"
    assert seen.progressing.reason == "BothActivePendingClustersExist"


def test_stale_kuberay_observation_is_progressing() -> None:
    body = service([cond("Ready", "True", "NonZeroServeEndpoints")])
    body["metadata"]["generation"] = 3
    seen = status.observe_ray_service(body, 1)
    assert seen.progressing == status.ConditionState(
        "True", "WaitingForKubeRay", "KubeRay has not observed the latest RayService spec"
    )


def test_initializing_timeout_is_failed() -> None:
    body = service([cond("Ready", "False", "InitializingTimeout", "gave up")])
    assert status.observe_ray_service(body, 1).phase == "Failed"


def test_service_without_status_is_pending() -> None:
    assert status.observe_ray_service({"metadata": {}}, 1).phase == "Pending"


# --- RayCluster ----------------------------------------------------------------------


def test_ray_cluster_states() -> None:
    def cluster(**st: Any) -> dict[str, Any]:
        return {"metadata": {"name": "c"}, "status": st}

    ready = status.observe_ray_cluster(cluster(state="ready", readyWorkerReplicas=3), 1)
    assert (ready.phase, ready.ready.status, ready.ready_replicas) == ("Ready", "True", 3)
    starting = status.observe_ray_cluster(
        cluster(conditions=[cond("HeadPodReady", "False", "HeadPodNotFound")]), 1
    )
    assert (starting.phase, starting.progressing.reason) == ("Progressing", "HeadPodNotFound")
    failing = status.observe_ray_cluster(
        cluster(
            state="ready", conditions=[cond("ReplicaFailure", "True", "FailedCreate", "quota")]
        ),
        1,
    )
    assert (failing.phase, failing.ready.message) == ("Degraded", "quota")
    assert status.observe_ray_cluster(cluster(state="failed", reason="x"), 1).phase == "Failed"


# --- the LLMDeployment status --------------------------------------------------------


def test_reconciled_status_fields() -> None:
    plan = sample_plan("llama-405b-h100")
    plan.llmd.metadata.generation = 5
    seen = status.observe_missing(RayKind.RAY_SERVICE)
    result = status.reconciled_status(plan, seen, {}, NOW)
    assert result["phase"] == "Pending"
    assert result["observedGeneration"] == 5
    assert result["gpusPerReplica"] == 16
    assert result["endpoint"] == "http://llama-405b-serve-svc.default.svc.cluster.local:8000/v1"
    assert result["rayService"] == "llama-405b"
    assert result["replicas"] == {"desired": 1, "ready": 0}
    conditions = by_type(result)
    assert set(conditions) == {"Ready", "Progressing", "SpecValid", "ResourcesFit", "Upgrading"}
    assert conditions["ResourcesFit"]["status"] == "True"
    assert all(c["observedGeneration"] == 5 for c in conditions.values())
    assert all(c["lastTransitionTime"] == NOW for c in conditions.values())


def test_transition_time_moves_only_with_status() -> None:
    plan = sample_plan("quickstart")
    first = status.reconciled_status(plan, status.observe_missing(RayKind.RAY_SERVICE), {}, NOW)
    ready = status.Observed(
        "Ready",
        status.ConditionState("True", "NonZeroServeEndpoints"),
        status.ConditionState("False", "Stable"),
        1,
    )
    second = status.reconciled_status(plan, ready, first, LATER)
    times = {k: c["lastTransitionTime"] for k, c in by_type(second).items()}
    assert times == {
        "Ready": LATER,
        "Progressing": LATER,
        "SpecValid": NOW,
        "ResourcesFit": NOW,
        "Upgrading": NOW,
    }
    assert status.status_patch(second, second) is None
    assert status.status_patch(first, second)["phase"] == "Ready"


def test_cluster_mode_has_no_endpoint() -> None:
    plan = sample_plan("cluster-checkpoints")
    result = status.reconciled_status(plan, status.observe_missing(RayKind.RAY_CLUSTER), {}, NOW)
    assert "endpoint" not in result and "rayService" not in result


def test_status_patch_removes_stale_keys_and_keeps_foreign_ones() -> None:
    previous = {"phase": "Ready", "endpoint": "http://old", "kopf": {"progress": {}}}
    patch = status.status_patch(previous, {"phase": "Ready"})
    assert patch == {"endpoint": None}


def test_status_patch_drops_a_nested_key_that_is_gone() -> None:
    """A finished incremental upgrade has no pending cluster: a merge patch that only
    leaves `pending` out would keep it in the stored status for good."""
    active = {"rayCluster": "new", "targetCapacity": 100, "trafficRoutedPercent": 100}
    pending = {"rayCluster": "new", "targetCapacity": 100, "trafficRoutedPercent": 100}
    old = {"rayCluster": "old", "targetCapacity": 0, "trafficRoutedPercent": 0}
    previous = {"phase": "Ready", "upgrade": {"active": old, "pending": pending}}
    patch = status.status_patch(previous, {"phase": "Ready", "upgrade": {"active": active}})
    assert patch == {
        "upgrade": {
            "active": {"rayCluster": "new", "targetCapacity": 100, "trafficRoutedPercent": 100},
            "pending": None,
        }
    }


def test_invalid_spec_keeps_a_running_deployment_running() -> None:
    running = {"phase": "Ready", "endpoint": "http://e", "rayService": "m", "conditions": []}
    result = status.invalid_status("spec.x: bad", 7, running, NOW)
    assert result["phase"] == "Ready" and result["endpoint"] == "http://e"
    assert "Ready" not in by_type(result)  # the serving state is not ours to overwrite
    waiting = status.invalid_status("spec.x: bad", 7, {"phase": "Pending", "rayService": "m"}, NOW)
    assert waiting["phase"] == "Pending"
    assert by_type(result)["SpecValid"]["status"] == "False"
    assert by_type(result)["SpecValid"]["message"] == "spec.x: bad"
    fresh = status.invalid_status("spec.x: bad", 1, {}, NOW)
    assert fresh["phase"] == "Failed"
    assert by_type(fresh)["Ready"]["reason"] == "InvalidSpec"


def test_missing_kuberay_is_said_in_ready_and_leaves_the_generation_unhandled() -> None:
    message = "RayService ns/m: the API server does not serve it; install KubeRay's CRDs"
    fresh = status.not_served_status(message, 1, {}, NOW)
    assert fresh["phase"] == "Pending"
    assert by_type(fresh)["Ready"]["reason"] == "KubeRayNotInstalled"
    assert by_type(fresh)["Ready"]["message"] == message
    assert by_type(fresh)["Ready"]["observedGeneration"] == 1
    assert "observedGeneration" not in fresh, "the kopf retry must still see unhandled work"
    handled_before = status.not_served_status(message, 3, {"observedGeneration": 2}, NOW)
    assert handled_before["observedGeneration"] == 2


# --- write decisions -----------------------------------------------------------------


def test_contains_tolerates_server_defaults_but_not_drift() -> None:
    wanted = {"a": {"b": [1, {"c": 2}]}}
    assert contains(wanted, {"a": {"b": [1, {"c": 2, "default": 0}]}, "extra": 1})
    assert not contains(wanted, {"a": {"b": [1, {"c": 3}]}})
    assert not contains(wanted, {"a": {"b": [1, {"c": 2}, 3]}})


def test_updates_keep_the_autoscalers_replicas() -> None:
    desired = next(c for c in render(sample_plan("llama-8b-l4")) if c["kind"] == "RayService")
    live = keep_autoscaler_fields(desired, desired)
    group = live["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]
    group["replicas"] = 3
    group["scaleStrategy"] = {"workersToDelete": ["pod-a"]}
    merged = keep_autoscaler_fields(desired, live)
    out = merged["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]
    assert out["replicas"] == 3 and out["scaleStrategy"] == {"workersToDelete": ["pod-a"]}
    assert desired["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["replicas"] == 1
    assert contains(merged, live)


def test_bounds_patch_targets_the_named_group() -> None:
    cluster = {
        "spec": {
            "workerGroupSpecs": [
                {"groupName": "x"},
                {"groupName": names.WORKER_GROUP, "minReplicas": 1, "maxReplicas": 1},
            ]
        }
    }
    patch = bounds_patch(cluster, names.WORKER_GROUP, 2, 5)
    assert patch is not None
    assert patch[0] == {
        "op": "test",
        "path": "/spec/workerGroupSpecs/1/groupName",
        "value": names.WORKER_GROUP,
    }
    assert {"op": "replace", "path": "/spec/workerGroupSpecs/1/maxReplicas", "value": 5} in patch
    assert bounds_patch(cluster, names.WORKER_GROUP, 1, 1) is None


def test_claim_retention_switches_ownership() -> None:
    owner = {"apiVersion": "llmops.dev/v1alpha1", "kind": "LLMDeployment", "name": "m", "uid": "u1"}
    retained = {"metadata": {"labels": {"a": "b"}, "annotations": {RETAIN_ANNOTATION: "true"}}}
    owned_live = {"metadata": {"labels": {"a": "b"}, "ownerReferences": [owner]}}
    patch = claim_metadata_patch(retained, owned_live, "u1")
    assert patch == {
        "metadata": {"annotations": {RETAIN_ANNOTATION: "true"}, "ownerReferences": []}
    }
    owned = {"metadata": {"labels": {"a": "b"}, "ownerReferences": [owner]}}
    retained_live = {"metadata": {"labels": {"a": "b"}, "annotations": {RETAIN_ANNOTATION: "true"}}}
    patch = claim_metadata_patch(owned, retained_live, "u1")
    assert patch == {
        "metadata": {"annotations": {RETAIN_ANNOTATION: None}, "ownerReferences": [owner]}
    }
    assert claim_metadata_patch(owned, owned_live, "u1") is None
