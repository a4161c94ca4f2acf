"""Updates reach KubeRay the way KubeRay expects them."""

from __future__ import annotations

import subprocess
from typing import Any

import yaml
from support import (
    Kube,
    converged,
    sample,
    scheduled,
    serving_cluster_name,
    wait_for,
    worker_pods,
)

from llm_operator.api.constants import GROUP, PLURAL, VERSION
from llm_operator.render import names


def serve_app(service: dict[str, Any]) -> dict[str, Any]:
    (app,) = yaml.safe_load(service["spec"]["serveConfigV2"])["applications"]
    return dict(app)


def llm_config(service: dict[str, Any]) -> dict[str, Any]:
    (config,) = serve_app(service)["args"]["llm_configs"]
    return dict(config)


def worker_group(body: dict[str, Any]) -> dict[str, Any]:
    spec = body["spec"].get("rayClusterConfig", body["spec"])
    (group,) = spec["workerGroupSpecs"]
    return dict(group)


def test_serve_only_change_updates_the_rayservice_in_place(kube: Kube, namespace: str) -> None:
    """The operator's half: a Serve-only change updates serveConfigV2 of the same
    RayService and leaves rayClusterConfig alone, which is what KubeRay applies in place.
    KubeRay's half (the running cluster takes the new config, no new RayCluster appears)
    needs Ray running: e2e/test_ray.py checks it on the real node."""
    llmd = kube.create_llmd(sample("quickstart", namespace))
    name = llmd["metadata"]["name"]
    cluster_name = serving_cluster_name(kube, namespace, name)
    before = kube.ray("rayservices", namespace, name)
    assert before is not None

    kube.patch_llmd(namespace, name, {"spec": {"engine": {"maxModelLen": 2048}}})

    def updated() -> dict[str, Any] | None:
        service = kube.ray("rayservices", namespace, name)
        if service and llm_config(service)["engine_kwargs"].get("max_model_len") == 2048:
            return service
        return None

    service = wait_for(updated, "the new serve config on the RayService")
    assert service["metadata"]["uid"] == before["metadata"]["uid"], "updated, not replaced"
    assert service["metadata"]["generation"] == before["metadata"]["generation"] + 1
    # KubeRay starts a new cluster only when rayClusterConfig changes.
    assert service["spec"]["rayClusterConfig"] == before["spec"]["rayClusterConfig"]
    assert [c["metadata"]["name"] for c in kube.rays("rayclusters", namespace)] == [cluster_name]


def test_scaling_change_moves_worker_group_bounds(kube: Kube, namespace: str) -> None:
    llmd = kube.create_llmd(sample("llama-8b-l4", namespace))
    name = llmd["metadata"]["name"]
    cluster_name = serving_cluster_name(kube, namespace, name)
    cluster = kube.ray("rayclusters", namespace, cluster_name)
    assert cluster is not None
    before = worker_group(cluster)
    assert (before["minReplicas"], before["maxReplicas"]) == (1, 4)

    kube.patch_llmd(namespace, name, {"spec": {"autoscaling": {"maxReplicas": 6}}})

    def bounds() -> tuple[int, int] | None:
        group = worker_group(kube.ray("rayclusters", namespace, cluster_name))  # type: ignore[arg-type]
        found = (group["minReplicas"], group["maxReplicas"])
        return found if found == (1, 6) else None

    wait_for(bounds, "worker group bounds 1..6 on the serving RayCluster")
    service = kube.ray("rayservices", namespace, name)
    assert service is not None
    assert worker_group(service)["maxReplicas"] == 6
    autoscaling = llm_config(service)["deployment_config"]["autoscaling_config"]
    assert autoscaling["max_replicas"] == 6
    after = kube.ray("rayclusters", namespace, cluster_name)
    assert after is not None
    assert after["metadata"]["uid"] == cluster["metadata"]["uid"], "moved in place, not replaced"


def test_kubectl_scale(kube: Kube, namespace: str) -> None:
    llmd = kube.create_llmd(sample("quickstart", namespace))
    name = llmd["metadata"]["name"]
    cluster_name = serving_cluster_name(kube, namespace, name)
    wait_for(lambda: scheduled(worker_pods(kube, namespace, cluster_name), 1), "one worker")

    subprocess.run(
        ["kubectl", "scale", "llmd", name, "-n", namespace, "--replicas", "2"],
        check=True,
        capture_output=True,
    )

    body = wait_for(
        lambda: (b := kube.get_llmd(namespace, name)) and converged(b) and b,
        "the operator to handle the new replica count",
    )
    assert body["spec"]["replicas"] == 2
    assert body["status"]["replicas"]["desired"] == 2
    service = kube.ray("rayservices", namespace, names.ray_service_name(name))
    assert service is not None
    assert llm_config(service)["deployment_config"]["num_replicas"] == 2
    wait_for(lambda: scheduled(worker_pods(kube, namespace, cluster_name), 2), "two workers")
    scale = kube.custom.get_namespaced_custom_object_scale(GROUP, VERSION, namespace, PLURAL, name)
    assert scale["spec"]["replicas"] == 2
