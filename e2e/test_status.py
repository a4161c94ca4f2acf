"""The LLMDeployment's status mirrors what KubeRay reports about its children."""

from __future__ import annotations

from typing import Any

from support import Kube, condition, converged, sample, wait_for

from llm_operator.render import names


def test_progressing_carries_kuberays_reason(kube: Kube, namespace: str) -> None:
    llmd = kube.create_llmd(sample("quickstart", namespace))
    name = llmd["metadata"]["name"]

    def kuberay_reason() -> str | None:
        service = kube.ray("rayservices", namespace, names.ray_service_name(name))
        ready = condition(service, "Ready")
        return ready.get("reason") if ready else None

    reason = wait_for(kuberay_reason, "KubeRay's Ready condition on the RayService")

    def mirrored() -> dict[str, Any] | None:
        body = kube.get_llmd(namespace, name)
        progressing = condition(body, "Progressing")
        if converged(body) and progressing and progressing["reason"] == reason:
            return body
        return None

    body = wait_for(mirrored, f"Progressing with KubeRay's reason {reason!r}")
    assert body["status"]["phase"] == "Progressing"
    assert condition(body, "Progressing")["status"] == "True"  # type: ignore[index]
    assert condition(body, "Ready")["status"] != "True"  # type: ignore[index]
    assert condition(body, "SpecValid")["status"] == "True"  # type: ignore[index]
    assert body["status"]["rayService"] == names.ray_service_name(name)


def kuberay_ready_status(service: dict[str, Any], cluster: str) -> dict[str, Any]:
    """What KubeRay writes once the Serve application runs (condition and active cluster)."""
    return {
        "observedGeneration": service["metadata"]["generation"],
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "NonZeroServeEndpoints",
                "message": "Number of serve endpoints is greater than 0",
                "lastTransitionTime": "2026-01-01T00:00:00Z",
            }
        ],
        "numServeEndpoints": 1,
        "activeServiceStatus": {
            "rayClusterName": cluster,
            "applicationStatuses": {names.SERVE_APP: {"status": "RUNNING"}},
            "rayClusterStatus": {"readyWorkerReplicas": 1},
        },
    }


def test_ready_with_endpoint_when_kuberay_reports_ready(
    kube: Kube, unwatched_namespace: str
) -> None:
    namespace = unwatched_namespace
    llmd = kube.create_llmd(sample("quickstart", namespace))
    name = llmd["metadata"]["name"]
    service = wait_for(
        lambda: kube.ray("rayservices", namespace, names.ray_service_name(name)),
        "the operator's RayService",
    )
    wait_for(lambda: converged(kube.get_llmd(namespace, name)), "first status")
    cluster = f"{name}-raycluster-e2e"
    kube.custom.patch_namespaced_custom_object_status(
        names.RAY_GROUP,
        names.RAY_VERSION,
        namespace,
        "rayservices",
        service["metadata"]["name"],
        {"status": kuberay_ready_status(service, cluster)},
    )

    def ready() -> dict[str, Any] | None:
        body = kube.get_llmd(namespace, name)
        return body if (body.get("status") or {}).get("phase") == "Ready" else None

    body = wait_for(ready, "phase Ready")
    status = body["status"]
    assert status["endpoint"] == f"http://{name}-serve-svc.{namespace}.svc.cluster.local:8000/v1"
    assert condition(body, "Ready")["status"] == "True"  # type: ignore[index]
    assert condition(body, "Progressing")["status"] == "False"  # type: ignore[index]
    assert status["rayCluster"] == cluster
    assert status["replicas"]["ready"] == 1
    assert status["observedGeneration"] == body["metadata"]["generation"]

    def phase_events() -> list[Any] | None:
        events = kube.core.list_namespaced_event(
            namespace,
            field_selector=f"involvedObject.name={name},involvedObject.kind=LLMDeployment",
        ).items
        return events or None

    (event,) = wait_for(phase_events, "the Event of the move to Ready")
    assert (event.type, event.reason) == ("Normal", "Ready"), "the first status posts no Event"
    assert event.message.startswith("phase Pending -> Ready"), event.message
