"""Each sample through the real API server, the real KubeRay operator and the scheduler.

The operator's children must pass KubeRay's CRD validation, KubeRay must turn them into
head and worker pods, and the scheduler must put GPU workers on nodes of the requested
accelerator with enough GPUs, never GPUs on CPU nodes and none on the head.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from kubernetes import client
from support import (
    ACCELERATOR_LABEL,
    GPU,
    SAMPLES,
    Kube,
    bind_claims,
    condition,
    create_claim,
    gpu_request,
    head_pods,
    sample,
    scheduled,
    serving_cluster_name,
    wait_for,
    worker_pods,
)

from llm_operator.render import names

# Per sample: worker pods at start, GPUs per worker pod, claims to bind, claims the
# user brings. Derived by hand from the samples and the sizing rules in DESIGN.md.
EXPECTED: dict[str, dict[str, Any]] = {
    "quickstart": {"workers": 1, "gpus": 1},
    "llama-8b-l4": {"workers": 1, "gpus": 1, "claims": ["llama-8b-model-cache"]},
    "llama-70b-a100": {"workers": 1, "gpus": 4, "claims": ["llama-70b-model-cache"]},
    "llama-405b-h100": {"workers": 2, "gpus": 8, "claims": ["llama-405b-model-cache"]},
    "scale-to-zero": {"workers": 0, "gpus": 1},
    "custom-engine": {"workers": 2, "gpus": 2},
    "cluster-checkpoints": {
        "workers": 2,
        "gpus": 2,
        "claims": ["finetune-8b-model-cache", "finetune-8b-checkpoints"],
    },
    "pvc-source": {"workers": 2, "gpus": 1, "existing": ["model-store"]},
    # Serving patterns: one replica of 4 data-parallel ranks x TP 2 fills an 8-GPU H100
    # node; LoRA and prefix-aware routing change nothing in placement; four replicas of a
    # quarter GPU share one whole-GPU pod (autoscaling minReplicas 2 -> one pod).
    "data-parallel": {"workers": 1, "gpus": 8},
    "lora-adapters": {"workers": 2, "gpus": 1},
    "prefix-cache-routing": {"workers": 2, "gpus": 1},
    "shared-gpu": {"workers": 1, "gpus": 1},
    # Prefill/decode: two 1-GPU prefill engines (TP 1 x 2 replicas) in prefill-workers and
    # one 2-GPU decode engine (TP 2) in decode-workers: 3 pods, 4 L4 GPUs in all.
    # Mode Job: KubeRay's RayJob makes the same cluster as mode Cluster: 2 replicas of
    # TP 2 on 4-GPU L4 nodes, one 2-GPU pod each.
    "finetune-job": {
        "workers": 2,
        "gpus": 2,
        "claims": ["finetune-job-model-cache", "finetune-job-checkpoints"],
    },
    "prefill-decode": {
        "workers": 3,
        "groups": {"prefill-workers": (2, 1), "decode-workers": (1, 2)},
    },
    # GPU-type fallback: the preferred group (H100) holds the one minimum replica; the L4
    # fallback group starts with no pods.
    "gpu-fallback": {"workers": 1, "groups": {"gpu-workers": (1, 1)}},
    # The quick start with an HTTPRoute: the route changes nothing in placement.
    "gateway-route": {"workers": 1, "gpus": 1},
}


def test_every_sample_is_covered() -> None:
    assert sorted(EXPECTED) == sorted(p.stem for p in SAMPLES.glob("*.yaml"))


def _cluster_of(kube: Kube, namespace: str, llmd: dict[str, Any]) -> str:
    name = llmd["metadata"]["name"]
    if llmd["spec"].get("mode") == "Job":
        # KubeRay names the RayJob's cluster itself and reports it in the job's status.
        return str(
            wait_for(
                lambda: (
                    (job := kube.ray("rayjobs", namespace, names.ray_job_name(name)))
                    and (job.get("status") or {}).get("rayClusterName")
                ),
                "KubeRay's RayCluster of the operator's RayJob",
            )
        )
    if llmd["spec"].get("mode", "Service") == "Cluster":
        wait_for(
            lambda: kube.ray("rayclusters", namespace, names.ray_cluster_name(name)),
            "the operator's RayCluster",
        )
        return names.ray_cluster_name(name)
    wait_for(
        lambda: kube.ray("rayservices", namespace, names.ray_service_name(name)),
        "the operator's RayService",
    )
    return serving_cluster_name(kube, namespace, name)


def assert_placement(
    kube: Kube, pods: list[client.V1Pod], accelerator: str, gpus: int
) -> list[client.V1Node]:
    """Each worker asks for `gpus` GPUs and sits on a node of that accelerator with enough."""
    nodes = []
    for pod in pods:
        node = kube.node(pod.spec.node_name)
        labels = node.metadata.labels
        assert gpu_request(pod) == gpus, pod.metadata.name
        assert labels.get(ACCELERATOR_LABEL) == accelerator, (pod.metadata.name, labels)
        assert int(node.status.allocatable.get(GPU, "0")) >= gpus, node.metadata.name
        nodes.append(node)
    return nodes


def assert_head_on_cpu_node(kube: Kube, namespace: str, cluster: str) -> None:
    (head,) = wait_for(lambda: scheduled(head_pods(kube, namespace, cluster), 1), "head pod")
    assert gpu_request(head) == 0
    node = kube.node(head.spec.node_name)
    assert GPU not in (node.status.allocatable or {}), f"head on GPU node {node.metadata.name}"


@pytest.mark.parametrize("name", sorted(EXPECTED), ids=str)
def test_sample_runs_on_kuberay(kube: Kube, namespace: str, name: str) -> None:
    expected = EXPECTED[name]
    for claim in expected.get("existing", []):
        create_claim(kube, namespace, claim)
        bind_claims(kube, namespace, [claim])
    llmd = kube.create_llmd(sample(name, namespace))
    if expected.get("claims"):
        bind_claims(kube, namespace, expected["claims"])

    cluster = _cluster_of(kube, namespace, llmd)
    assert_head_on_cpu_node(kube, namespace, cluster)
    if expected["workers"] == 0:
        # Scale to zero: KubeRay made the head (above) from a group that asks for none.
        # Wait until KubeRay itself reports the head ready: it does so in a reconcile that
        # has made every pod the cluster asks for, so any worker would exist by then.
        ray_cluster = wait_for(
            lambda: (
                (found := kube.ray("rayclusters", namespace, cluster))
                and (condition(found, "HeadPodReady") or {}).get("status") == "True"
                and found
            ),
            "KubeRay to report the head of the scale-to-zero cluster ready",
        )
        (group,) = ray_cluster["spec"]["workerGroupSpecs"]
        assert (group["minReplicas"], group.get("replicas", 0)) == (0, 0)
        assert ray_cluster["status"].get("desiredWorkerReplicas", 0) == 0
        assert worker_pods(kube, namespace, cluster) == []
        return
    workers = wait_for(
        lambda: scheduled(worker_pods(kube, namespace, cluster), expected["workers"]),
        f"{expected['workers']} scheduled worker pods",
    )
    accelerator = llmd["spec"]["accelerator"]["type"]
    if "groups" not in expected:
        assert_placement(kube, workers, accelerator, expected["gpus"])
        return
    # One worker group per side of a disaggregated model: (pods, GPUs per pod) each.
    by_group: dict[str, list[client.V1Pod]] = {}
    for pod in workers:
        by_group.setdefault(pod.metadata.labels["ray.io/group"], []).append(pod)
    assert sorted(by_group) == sorted(expected["groups"]), sorted(by_group)
    for group, (count, gpus) in expected["groups"].items():
        assert len(by_group[group]) == count, (group, [p.metadata.name for p in by_group[group]])
        assert_placement(kube, by_group[group], accelerator, gpus)


def test_tensor_parallel_4_fills_one_l4_node(kube: Kube, namespace: str) -> None:
    def tp4(body: dict[str, Any]) -> None:
        body["spec"]["engine"]["tensorParallelSize"] = 4

    llmd = kube.create_llmd(sample("quickstart", namespace, tp4))
    cluster = serving_cluster_name(kube, namespace, llmd["metadata"]["name"])
    (worker,) = wait_for(lambda: scheduled(worker_pods(kube, namespace, cluster), 1), "worker")
    (node,) = assert_placement(kube, [worker], "L4", 4)
    assert node.status.allocatable[GPU] == "4"


def test_405b_replica_spans_two_h100_nodes(kube: Kube, namespace: str) -> None:
    llmd = kube.create_llmd(sample("llama-405b-h100", namespace))
    bind_claims(kube, namespace, ["llama-405b-model-cache"])
    cluster = serving_cluster_name(kube, namespace, llmd["metadata"]["name"])
    workers = wait_for(lambda: scheduled(worker_pods(kube, namespace, cluster), 2), "2 workers")
    nodes = assert_placement(kube, workers, "H100", 8)
    assert len({node.metadata.name for node in nodes}) == 2, "one replica, two different hosts"
    # Both hosts belong to the same multi-host replica of the one worker group.
    groups = {pod.metadata.labels["ray.io/group"] for pod in workers}
    assert groups == {names.WORKER_GROUP}


MERGE = "application/merge-patch+json"


@contextmanager
def cordoned(kube: Kube, accelerator: str) -> Iterator[list[str]]:
    """Every node of `accelerator` cordoned (new pods cannot land there) for the block,
    as when that GPU type is sold out; uncordoned after, whatever happens."""
    nodes = kube.core.list_node(label_selector=f"{ACCELERATOR_LABEL}={accelerator}").items
    found = [node.metadata.name for node in nodes]
    assert found, f"no {accelerator} nodes in the cluster"
    try:
        for name in found:
            kube.core.patch_node(name, {"spec": {"unschedulable": True}}, _content_type=MERGE)
        yield found
    finally:
        for name in found:
            kube.core.patch_node(name, {"spec": {"unschedulable": None}}, _content_type=MERGE)


def _unschedulable(pod: client.V1Pod) -> bool:
    return any(
        c.type == "PodScheduled" and c.status == "False" and c.reason == "Unschedulable"
        for c in (pod.status.conditions or [])
    )


def test_fallback_group_takes_new_replicas_while_preferred_nodes_are_full(
    kube: Kube, namespace: str
) -> None:
    """With every H100 node cordoned, the preferred group's pod stays Pending and a pod
    added to the L4 fallback group lands on an L4 node.

    What this shows: KubeRay accepts one worker group per type and creates each group's
    pods; each group's pod template (node selector, GPU resource, tolerations) puts its
    pods on its own type's nodes only; the scale-up of the fallback group survives the
    operator's reconciles (it owns bounds, not replicas). What it does not show: no Ray
    autoscaler runs on fake nodes, so the test writes the fallback group's `replicas` as
    Ray's autoscaler would when it picks that group (see the README for when it does).
    """
    with cordoned(kube, "H100") as h100_nodes:
        llmd = kube.create_llmd(sample("gpu-fallback", namespace))
        cluster = serving_cluster_name(kube, namespace, llmd["metadata"]["name"])
        fallback_group = names.fallback_worker_group("L4")
        ray_cluster = wait_for(lambda: kube.ray("rayclusters", namespace, cluster), "RayCluster")
        groups = {g["groupName"]: g for g in ray_cluster["spec"]["workerGroupSpecs"]}
        assert list(groups) == [names.WORKER_GROUP, fallback_group]
        assert (groups[fallback_group]["minReplicas"], groups[fallback_group]["maxReplicas"]) == (
            0,
            4,
        )

        def group_pods(group: str) -> list[client.V1Pod]:
            return [
                pod
                for pod in worker_pods(kube, namespace, cluster)
                if pod.metadata.labels.get("ray.io/group") == group
            ]

        (preferred,) = wait_for(
            lambda: (
                (pods := group_pods(names.WORKER_GROUP)) and all(map(_unschedulable, pods)) and pods
            ),
            "the H100 group's pod to be unschedulable while the H100 nodes are cordoned",
        )
        assert preferred.spec.node_name is None
        assert group_pods(fallback_group) == []

        # Play Ray's autoscaler: one more replica, on the fallback group.
        index = list(groups).index(fallback_group)
        kube.custom.patch_namespaced_custom_object(
            names.RAY_GROUP,
            names.RAY_VERSION,
            namespace,
            "rayclusters",
            cluster,
            [
                {
                    "op": "test",
                    "path": f"/spec/workerGroupSpecs/{index}/groupName",
                    "value": fallback_group,
                },
                {"op": "replace", "path": f"/spec/workerGroupSpecs/{index}/replicas", "value": 1},
            ],
            _content_type="application/json-patch+json",
        )
        (fallback,) = wait_for(
            lambda: scheduled(group_pods(fallback_group), 1), "the L4 group's pod on a node"
        )
        (node,) = assert_placement(kube, [fallback], "L4", 1)
        assert node.metadata.name not in h100_nodes
        # Still Pending: nothing moved the preferred group's pod elsewhere.
        (still,) = group_pods(names.WORKER_GROUP)
        assert still.spec.node_name is None
        # The operator reconciles on the cluster's change and keeps the autoscaler's count.
        live = kube.ray("rayclusters", namespace, cluster)
        assert live is not None
        assert live["spec"]["workerGroupSpecs"][index]["replicas"] == 1
