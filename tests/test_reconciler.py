"""The reconciler against an in-memory API server: every path of a reconcile, no cluster.

The reconcile runs with the operator's own `kube.KubeApi` over the real Kubernetes client,
whose requests `fakeapi.FakeApiServer` answers (objects, resourceVersions, field managers,
404/403/409/422), so what these tests see written is what a cluster would receive.
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Callable, Iterator
from typing import Any

import kopf
import pytest

from conftest import SAMPLES, load_one
from fakeapi import (
    NAMESPACE,
    SERVED,
    Access,
    FakeApiServer,
    RecordingKubeApi,
    claim_path,
    llmd_path,
    ray_path,
)
from llm_operator import sizing
from llm_operator.api.constants import GROUP, VERSION
from llm_operator.api.validation import SpecError
from llm_operator.api.vocabulary import ConditionType, Phase, RayKind, Reason
from llm_operator.controller import kube, reconciler
from llm_operator.controller.merge import worker_groups
from llm_operator.render import names
from llm_operator.settings import OperatorSettings

Body = dict[str, Any]
SETTINGS = OperatorSettings()
OWNER_UID = "uid-of-the-llmdeployment"
READ_VERBS = frozenset({"get", "list", "watch"})


def stored_body(server: FakeApiServer, body: Body) -> str:
    """`body` in the fake API server, as kopf would hand it over; returns its name."""
    body["metadata"].update(namespace=NAMESPACE, uid=OWNER_UID)
    server.put(llmd_path(body["metadata"]["name"]), body)
    return str(body["metadata"]["name"])


def stored(server: FakeApiServer, sample: str, **spec: Any) -> str:
    """A sample LLMDeployment in the fake API server, as kopf would hand it over."""
    body = load_one(SAMPLES / f"{sample}.yaml")
    body["spec"].update(copy.deepcopy(spec))
    return stored_body(server, body)


def reconcile(server: FakeApiServer, name: str, api: RecordingKubeApi) -> Body:
    """One reconcile of the stored object; returns its status afterwards."""
    reconciler.reconcile(copy.deepcopy(server.objects[llmd_path(name)]), api, SETTINGS)
    found: Body = server.objects[llmd_path(name)].get("status", {})
    return found


def conditions(status: Body) -> dict[str, Body]:
    return {c["type"]: c for c in status.get("conditions", [])}


def writes_since(server: FakeApiServer, start: int) -> list[Access]:
    return [a for a in server.accesses[start:] if a.verb not in READ_VERBS]


# --- creation, no-op, update ------------------------------------------------------------


def test_first_reconcile_creates_the_claim_then_the_ray_service(
    server: FakeApiServer, api: RecordingKubeApi
) -> None:
    name = stored(server, "llama-8b-l4")
    status = reconcile(server, name, api)

    writes = [(w.access.resource, w.access.verb, w.field_manager) for w in server.writes]
    assert writes == [
        ("persistentvolumeclaims", "create", kube.FIELD_MANAGER),
        ("rayservices", "create", kube.FIELD_MANAGER),
        ("llmdeployments/status", "patch", kube.FIELD_MANAGER),
    ]
    service = server.objects[ray_path("rayservices", names.ray_service_name(name))]
    (ref,) = service["metadata"]["ownerReferences"]
    assert (ref["uid"], ref["kind"], ref["controller"]) == (OWNER_UID, "LLMDeployment", True)
    # The model cache outlives its deployment by default: no owner, an annotation instead.
    claim = server.objects[claim_path(names.model_cache_claim(name))]
    assert "ownerReferences" not in claim["metadata"]
    assert claim["metadata"]["annotations"] == {names.RETAIN_ANNOTATION: "true"}
    assert status["phase"] == Phase.PENDING
    assert status["observedGeneration"] == 1
    assert status["rayService"] == names.ray_service_name(name)
    assert conditions(status)[ConditionType.SPEC_VALID]["status"] == "True"
    assert conditions(status)[ConditionType.RESOURCES_FIT]["reason"] == "Fits"
    assert api.events == [], "the first status is no phase move"


def test_cluster_mode_becomes_a_ray_cluster(server: FakeApiServer, api: RecordingKubeApi) -> None:
    name = stored(server, "quickstart", mode="Cluster")
    status = reconcile(server, name, api)
    assert ray_path("rayclusters", names.ray_cluster_name(name)) in server.objects
    assert not any(a.resource == "rayservices" for a in server.accesses)
    assert "rayService" not in status and "endpoint" not in status


def test_an_unchanged_deployment_writes_nothing(
    server: FakeApiServer, api: RecordingKubeApi
) -> None:
    name = stored(server, "llama-8b-l4")
    reconcile(server, name, api)
    start = len(server.accesses)
    reconcile(server, name, api)
    assert writes_since(server, start) == []
    # A re-run reads its children; with a status it reads before it creates.
    assert {a.resource for a in server.accesses[start:]} == {
        "persistentvolumeclaims",
        "rayservices",
    }


def test_an_update_keeps_the_autoscalers_replicas_and_scale_strategy(
    server: FakeApiServer, api: RecordingKubeApi
) -> None:
    name = stored(server, "llama-8b-l4")
    reconcile(server, name, api)
    path = ray_path("rayservices", names.ray_service_name(name))
    live = copy.deepcopy(server.objects[path])
    (group,) = worker_groups(live)
    group["replicas"] = 3
    group["scaleStrategy"] = {"workersToDelete": ["worker-a"]}
    server.put(path, live)  # the Ray autoscaler's write

    body = server.objects[llmd_path(name)]
    body["spec"]["autoscaling"]["maxReplicas"] = 6
    body["metadata"]["generation"] = 2
    reconcile(server, name, api)

    (group,) = worker_groups(server.objects[path])
    assert (group["maxReplicas"], group["replicas"]) == (6, 3)
    assert group["scaleStrategy"] == {"workersToDelete": ["worker-a"]}
    (apply,) = [
        w for w in server.writes if w.access.resource == "rayservices" and w.access.verb == "patch"
    ]
    assert apply.content_type == kube.APPLY_PATCH
    assert apply.field_manager == kube.FIELD_MANAGER


def test_a_conflict_is_retried_and_then_converges(
    server: FakeApiServer, api: RecordingKubeApi
) -> None:
    """A write that loses a race (409: a stale resourceVersion) fails the reconcile with a
    temporary error, which kopf retries; the retry reads the new version and applies."""
    name = stored(server, "quickstart")
    reconcile(server, name, api)
    body = server.objects[llmd_path(name)]
    body["spec"]["engine"]["maxModelLen"] = 2048
    body["metadata"]["generation"] = 2
    server.fail("patch", "rayservices", 409, "the object has been modified")

    with pytest.raises(kopf.TemporaryError, match="HTTP 409"):
        reconcile(server, name, api)
    assert server.objects[llmd_path(name)]["status"]["observedGeneration"] == 1

    status = reconcile(server, name, api)
    assert status["observedGeneration"] == 2
    service = server.objects[ray_path("rayservices", names.ray_service_name(name))]
    assert "max_model_len: 2048" in service["spec"]["serveConfigV2"]


def test_a_stale_resource_version_is_a_conflict(server: FakeApiServer) -> None:
    """The fake honours resourceVersion as the API server does (what the retry relies on)."""
    server.put("/x", {"metadata": {}})
    assert (
        server.patch("/x", server.objects["/x"], "", {"metadata": {"resourceVersion": "0"}}) == 409
    )


def test_an_unforced_apply_over_another_managers_fields_conflicts(server: FakeApiServer) -> None:
    server.put("/x", {"metadata": {}})
    apply = kube.APPLY_PATCH
    assert server.patch("/x", server.objects["/x"], apply, {}, {"fieldManager": ["other"]})
    assert server.patch("/x", server.objects["/x"], apply, {}, {"fieldManager": ["me"]})[0] == 409
    forced = {"fieldManager": ["me"], "force": ["true"]}
    assert server.patch("/x", server.objects["/x"], apply, {}, forced)["metadata"]


# --- claims ------------------------------------------------------------------------------


def _claim(name: str, owners: list[Body] | None = None, annotations: Body | None = None) -> Body:
    meta: Body = {"name": name, "namespace": NAMESPACE}
    if owners is not None:
        meta["ownerReferences"] = owners
    if annotations is not None:
        meta["annotations"] = annotations
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": meta, "spec": {}}


# A model cache the deployment owns (the default keeps it after deletion).
OWNED_CACHE = {"modelCache": {"size": "100Gi", "retainOnDelete": False}}


def test_an_existing_claim_is_adopted(server: FakeApiServer, api: RecordingKubeApi) -> None:
    """A claim of that name left from before (say, retained by an earlier deployment) is
    reused as it is and owned from now on."""
    claim = names.model_cache_claim("llama-8b")
    server.put(claim_path(claim), _claim(claim))
    reconcile(server, stored(server, "llama-8b-l4", storage=OWNED_CACHE), api)
    live = server.objects[claim_path(claim)]
    assert [r["uid"] for r in live["metadata"]["ownerReferences"]] == [OWNER_UID]
    assert live["spec"] == {}, "the claim's spec is left alone"
    assert not any(w.access.verb == "create" for w in server.writes if "claims" in w.path)


def test_a_claim_owned_by_someone_else_keeps_that_owner(
    server: FakeApiServer, api: RecordingKubeApi
) -> None:
    claim = names.model_cache_claim("llama-8b")
    theirs = {"apiVersion": "v1", "kind": "ConfigMap", "name": "keeper", "uid": "other-uid"}
    server.put(claim_path(claim), _claim(claim, owners=[theirs]))
    reconcile(server, stored(server, "llama-8b-l4", storage=OWNED_CACHE), api)
    refs = server.objects[claim_path(claim)]["metadata"]["ownerReferences"]
    assert [r["uid"] for r in refs] == ["other-uid", OWNER_UID]


def test_a_retained_claim_carries_no_owner(server: FakeApiServer, api: RecordingKubeApi) -> None:
    """finetune-8b (cluster-checkpoints) keeps its checkpoints claim after deletion: the
    annotation says so and no ownerReference lets garbage collection take it; one that was
    owned (the retention switched on later) loses our reference."""
    claim = names.checkpoints_claim("finetune-8b")
    ours = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "LLMDeployment",
        "name": "finetune-8b",
        "uid": OWNER_UID,
    }
    server.put(claim_path(claim), _claim(claim, owners=[ours]))
    reconcile(server, stored(server, "cluster-checkpoints"), api)
    meta = server.objects[claim_path(claim)]["metadata"]
    assert meta["annotations"] == {names.RETAIN_ANNOTATION: "true"}
    assert meta.get("ownerReferences") in (None, [])


# --- refusals and missing kinds -----------------------------------------------------------


def test_a_refused_child_is_reported_as_an_invalid_spec(
    server: FakeApiServer, api: RecordingKubeApi
) -> None:
    name = stored(server, "quickstart")
    server.fail("create", "rayservices", 422, 'RayService "m" is invalid: spec.x: Invalid value')
    with pytest.raises(SpecError, match=r"spec\.x: Invalid value"):
        reconcile(server, name, api)
    status = server.objects[llmd_path(name)]["status"]
    spec_valid = conditions(status)[ConditionType.SPEC_VALID]
    assert (spec_valid["status"], spec_valid["reason"]) == ("False", Reason.INVALID_SPEC)
    assert "spec.x: Invalid value" in spec_valid["message"]
    assert status["phase"] == Phase.FAILED, "nothing was created"


def test_an_invalid_spec_touches_no_child(server: FakeApiServer, api: RecordingKubeApi) -> None:
    name = stored(server, "quickstart", engine={"tensorParallelSize": 3, "pipelineParallelSize": 1})
    server.objects[llmd_path(name)]["spec"]["accelerator"]["gpusPerNode"] = 2
    with pytest.raises(SpecError):
        reconcile(server, name, api)
    assert [w.access.resource for w in server.writes] == ["llmdeployments/status"]


def test_kuberay_not_installed(api: RecordingKubeApi, server: FakeApiServer) -> None:
    server.served = {f"{GROUP}/{VERSION}": SERVED[f"{GROUP}/{VERSION}"]}
    name = stored(server, "quickstart")
    with pytest.raises(kube.NotServed, match="install KubeRay"):
        reconcile(server, name, api)
    status = server.objects[llmd_path(name)]["status"]
    ready = conditions(status)[ConditionType.READY]
    assert (ready["status"], ready["reason"]) == ("False", Reason.KUBERAY_NOT_INSTALLED)
    assert status["phase"] == Phase.PENDING
    assert "observedGeneration" not in status, "the generation is not handled yet"


@pytest.mark.parametrize(
    ("message", "hint"),
    [("forbidden", "check the operator's RBAC"), ("NamespaceTerminating", "being deleted")],
)
def test_a_forbidden_write_is_retried_later(
    server: FakeApiServer, api: RecordingKubeApi, message: str, hint: str
) -> None:
    name = stored(server, "quickstart")
    server.fail("create", "rayservices", 403, message)
    with pytest.raises(kopf.TemporaryError, match=hint) as caught:
        reconcile(server, name, api)
    assert caught.value.delay == kube.FORBIDDEN_RETRY_SECONDS


# --- the serving cluster's bounds -----------------------------------------------------------


def _serving_cluster(
    server: FakeApiServer, service: str, cluster_name: str, bounds: tuple[int, int]
) -> str:
    """KubeRay's part: a RayCluster made from the RayService, with the bounds it had then,
    named as the active one in the RayService's status."""
    made = server.objects[ray_path("rayservices", service)]
    spec = copy.deepcopy(made["spec"]["rayClusterConfig"])
    (group,) = spec["workerGroupSpecs"]
    group["minReplicas"], group["maxReplicas"] = bounds
    path = ray_path("rayclusters", cluster_name)
    server.put(
        path,
        {
            "kind": "RayCluster",
            "metadata": {"name": cluster_name, "namespace": NAMESPACE},
            "spec": spec,
        },
    )
    made["status"] = {"activeServiceStatus": {"rayClusterName": cluster_name}}
    return path


def test_the_active_clusters_bounds_follow_the_spec(
    server: FakeApiServer, api: RecordingKubeApi
) -> None:
    name = stored(server, "llama-8b-l4")
    reconcile(server, name, api)
    path = _serving_cluster(server, names.ray_service_name(name), f"{name}-abc", (1, 2))
    status = reconcile(server, name, api)

    (group,) = worker_groups(server.objects[path])
    assert (group["minReplicas"], group["maxReplicas"]) == (1, 4)
    (patch,) = [w for w in server.writes if w.access.resource == "rayclusters"]
    assert (patch.content_type, patch.field_manager) == (kube.JSON_PATCH, kube.FIELD_MANAGER)
    assert status["rayCluster"] == f"{name}-abc"

    start = len(server.accesses)
    reconcile(server, name, api)
    assert writes_since(server, start) == [], "bounds in line: no patch"


def test_ready_replicas_come_from_the_serving_clusters_own_status(
    server: FakeApiServer, api: RecordingKubeApi
) -> None:
    """KubeRay leaves the RayService's copy of its cluster's status stale until something
    else changes (its status writes compare conditions, endpoints and applications only):
    a worker that turned Ready after the RayService did shows in the RayCluster alone."""
    name = stored(server, "quickstart")
    reconcile(server, name, api)
    service = names.ray_service_name(name)
    path = _serving_cluster(server, service, f"{name}-abc", (1, 1))
    ready = {"type": "Ready", "status": "True", "reason": "NonZeroServeEndpoints"}
    server.objects[ray_path("rayservices", service)]["status"].update(
        conditions=[ready],
        activeServiceStatus={
            "rayClusterName": f"{name}-abc",
            "rayClusterStatus": {"desiredWorkerReplicas": 1, "availableWorkerReplicas": 1},
        },
    )
    server.objects[path]["status"] = {"desiredWorkerReplicas": 1, "readyWorkerReplicas": 0}
    assert reconcile(server, name, api)["replicas"] == {"desired": 1, "ready": 0}

    server.objects[path]["status"]["readyWorkerReplicas"] = 1
    status = reconcile(server, name, api)
    assert status["replicas"] == {"desired": 1, "ready": 1}
    assert status["phase"] == Phase.READY


# --- one plan per reconcile -------------------------------------------------------------------


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, int]]:
    """Counts calls of the layout and fit functions, wherever a module imported them."""
    calls = {"gpu_layout": 0, "memory_fit": 0}

    def counting(name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            calls[name] += 1
            return real(*args, **kwargs)

        return wrapper

    for fn in calls:
        real = getattr(sizing, fn)
        wrapped = counting(fn, real)
        for module in list(sys.modules.values()):
            named = getattr(module, "__name__", "")
            if named.startswith("llm_operator") and getattr(module, fn, None) is real:
                monkeypatch.setattr(module, fn, wrapped)
    yield calls


@pytest.mark.parametrize("sample", ["llama-8b-l4", "cluster-checkpoints"])
def test_layout_and_fit_are_computed_once_per_reconcile(
    server: FakeApiServer, api: RecordingKubeApi, counted: dict[str, int], sample: str
) -> None:
    name = stored(server, sample)
    reconcile(server, name, api)
    assert counted == {"gpu_layout": 1, "memory_fit": 1}
    reconcile(server, name, api)
    assert counted == {"gpu_layout": 2, "memory_fit": 2}


def test_the_plan_chooses_the_kind_once(server: FakeApiServer, api: RecordingKubeApi) -> None:
    name = stored(server, "quickstart")
    plan = reconciler.reconcile(copy.deepcopy(server.objects[llmd_path(name)]), api, SETTINGS)
    assert (plan.ray_kind, plan.serves) == (RayKind.RAY_SERVICE, True)


# --- child events -------------------------------------------------------------------------------


def test_child_events_name_their_parent() -> None:
    labelled = {"metadata": {"namespace": NAMESPACE, "labels": {names.DEPLOYMENT_LABEL: "m"}}}
    assert reconciler.parent_of(labelled) == (NAMESPACE, "m")
    assert reconciler.parent_of({"metadata": {"namespace": NAMESPACE}}) is None
    assert reconciler.redundant_child_event("ADDED", "RayService")
    assert not reconciler.redundant_child_event("ADDED", "RayCluster")
    assert not reconciler.redundant_child_event(None, "RayService")


def test_a_child_event_reconciles_only_a_handled_living_parent() -> None:
    def parent(generation: int, observed: int | None, deleting: bool = False) -> Body:
        meta: Body = {"generation": generation}
        if deleting:
            meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
        return {"metadata": meta, "status": {"observedGeneration": observed}}

    assert reconciler.parent_needs_reconcile(parent(2, 2))
    assert not reconciler.parent_needs_reconcile(parent(3, 2))
    assert not reconciler.parent_needs_reconcile(parent(2, 2, deleting=True))
    assert not reconciler.parent_needs_reconcile(None)


def test_a_phase_move_posts_one_event(server: FakeApiServer, api: RecordingKubeApi) -> None:
    name = stored(server, "quickstart")
    reconcile(server, name, api)
    service = server.objects[ray_path("rayservices", names.ray_service_name(name))]
    service["status"] = {
        "observedGeneration": 1,
        "conditions": [{"type": "Ready", "status": "False", "reason": "InitializingTimeout"}],
    }
    reconcile(server, name, api)
    (event,) = api.events
    assert (event.type, event.reason) == ("Warning", Phase.FAILED)
    assert event.message.startswith("phase Pending -> Failed")
