"""Model cache prefetch (spec.storage.modelCache.prefetch) on the local cluster.

On the fake nodes: the download Job comes first and no RayService exists while its pod
cannot run; the pod is held by a head node selector (the Job runs beside the head) that
no node carries until the test labels a CPU node with it. The pod then lands on that
kwok node, and kwok ends it as a kubelet would: its built-in fast stages
(kustomize/stage/pod/fast/pod-complete.yaml in kwok) mark a running pod owned by a Job
Succeeded. Should this cluster's kwok lack that stage, the test writes the same pod
status itself. Kubernetes' own Job controller then marks the Job Complete (after
SuccessCriteriaMet), the operator creates the RayService and ModelCached turns True. A
failure: the same held pod with activeDeadlineSeconds 1, which the Job controller fails
(DeadlineExceeded); ModelCached says DownloadFailed with the Job's message and no
RayService is made.

On the real node (marker `ray`): the Job runs the download program in the local Ray
image for real, copying a small model directory from a pvc:// source claim into the
cache claim; both claims bind to hostPath volumes on this machine (where the real node's
kubelet runs), so the test reads the copied files and the marker there.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from standin import standin_deployment
from support import (
    Body,
    Kube,
    bind_claims,
    condition,
    converged,
    host_volume,
    operator_metrics_url,
    sample,
    scrape,
    wait_for,
)

from llm_operator.render import names
from llm_operator.render.download_program import MARKER
from llm_operator.render.sources import CACHE_DIR, model_key

NAME = "qwen-small"
HOLD_LABEL = "llmops.dev/e2e-prefetch"
# A CPU node of e2e/cluster/nodes.yaml (kwok): where the held pod may go once labelled.
CPU_NODE = "cpu-1"
# Time for kwok to run and complete a pod and the Job controller to mark its Job.
JOB_SECONDS = 60.0


def reconciles_done() -> float:
    """Reconciles the operator has finished, whatever their result, from its /metrics."""
    series = scrape(operator_metrics_url())
    return sum(v for (name, _), v in series.items() if name == "llmop_reconciles_total")


def batch(kube: Kube) -> client.BatchV1Api:
    return client.BatchV1Api(kube.api)


def prefetch_jobs(kube: Kube, namespace: str, name: str = NAME) -> list[client.V1Job]:
    selector = f"{names.DEPLOYMENT_LABEL}={name},{names.COMPONENT_LABEL}=model-prefetch"
    return list(batch(kube).list_namespaced_job(namespace, label_selector=selector).items)


def ray_service(kube: Kube, namespace: str, name: str = NAME) -> Body | None:
    return kube.ray("rayservices", namespace, names.ray_service_name(name))


def held_deployment(namespace: str, **prefetch_job: int) -> Body:
    """The quick start with prefetch, its Job's pod (and the head) held off every node
    until one carries the hold label."""

    def edit(body: Body) -> None:
        cache: Body = {"size": "1Gi", "prefetch": True}
        if prefetch_job:
            cache["prefetchJob"] = prefetch_job
        body["spec"]["storage"] = {"modelCache": cache}
        body["spec"]["rayCluster"] = {"head": {"nodeSelector": {HOLD_LABEL: namespace}}}

    return sample("quickstart", namespace, edit)


@contextlib.contextmanager
def node_label(kube: Kube, node: str, key: str, value: str) -> Iterator[None]:
    kube.core.patch_node(node, {"metadata": {"labels": {key: value}}})
    try:
        yield
    finally:
        kube.core.patch_node(node, {"metadata": {"labels": {key: None}}})


def model_cached(kube: Kube, namespace: str, status: str, name: str = NAME) -> Body:
    def reached() -> Body | None:
        body = kube.get_llmd(namespace, name)
        cached = condition(body, "ModelCached") or {}
        return body if converged(body) and cached.get("status") == status else None

    return wait_for(reached, f"ModelCached={status} on {namespace}/{name}", JOB_SECONDS * 2)


def job_pod(kube: Kube, namespace: str, job: str) -> client.V1Pod | None:
    pods = kube.pods(namespace, f"batch.kubernetes.io/job-name={job}")
    return pods[0] if pods else None


def succeed_as_the_kubelet_would(kube: Kube, namespace: str, pod: client.V1Pod) -> None:
    """What a kubelet reports for a container that exited 0 (kwok's pod-complete stage
    writes the same)."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    statuses = [
        {
            "name": c.name,
            "image": c.image,
            "ready": False,
            "restartCount": 0,
            "started": False,
            "state": {
                "terminated": {
                    "exitCode": 0,
                    "reason": "Completed",
                    "startedAt": now,
                    "finishedAt": now,
                }
            },
        }
        for c in pod.spec.containers
    ]
    kube.core.patch_namespaced_pod_status(
        pod.metadata.name,
        namespace,
        {"status": {"phase": "Succeeded", "containerStatuses": statuses}},
    )


def job_complete(kube: Kube, namespace: str, job: str) -> bool:
    live = batch(kube).read_namespaced_job(job, namespace)
    return any(c.type == "Complete" and c.status == "True" for c in live.status.conditions or [])


# --- fake nodes ------------------------------------------------------------------------------
def test_the_job_runs_first_and_the_ray_service_follows_its_completion(
    kube: Kube, namespace: str
) -> None:
    kube.create_llmd(held_deployment(namespace))
    bind_claims(kube, namespace, [names.model_cache_claim(NAME)])
    (job,) = wait_for(lambda: prefetch_jobs(kube, namespace), "the prefetch Job")
    job_name = job.metadata.name
    assert job.metadata.owner_references[0].kind == "LLMDeployment"
    assert job.metadata.owner_references[0].controller is True
    body = model_cached(kube, namespace, "False")
    assert condition(body, "ModelCached")["reason"] == "Downloading"  # type: ignore[index]
    assert body["status"]["phase"] == "Pending"
    pod = wait_for(lambda: job_pod(kube, namespace, job_name), "the Job's pod")
    assert pod.status.phase == "Pending" and not pod.spec.node_name
    assert ray_service(kube, namespace) is None, "the RayService came before the model"
    mounts = {m.name: m.mount_path for m in pod.spec.containers[0].volume_mounts}
    assert mounts[names.MODEL_CACHE_VOLUME] == "/models"

    with node_label(kube, CPU_NODE, HOLD_LABEL, namespace):
        try:
            wait_for(
                lambda: job_complete(kube, namespace, job_name),
                "kwok and the Job controller",
                JOB_SECONDS,
            )
        except AssertionError:
            # No pod-complete stage in this kwok: the test plays the kubelet's part.
            running = job_pod(kube, namespace, job_name)
            assert running is not None and running.spec.node_name == CPU_NODE
            succeed_as_the_kubelet_would(kube, namespace, running)
            wait_for(lambda: job_complete(kube, namespace, job_name), "the Job Complete")
        body = model_cached(kube, namespace, "True")
        service = wait_for(lambda: ray_service(kube, namespace), "the RayService")
    key = model_key("hf://Qwen/Qwen2.5-0.5B-Instruct", None)
    path = f"/models/{CACHE_DIR}/{key}"
    assert body["status"]["cachedModel"] == path
    assert f"model_source: {path}" in service["spec"]["serveConfigV2"]
    assert condition(body, "ModelCached")["reason"] == "Cached"  # type: ignore[index]

    # The Job's deletion deletes nothing and downloads nothing again.
    uid = service["metadata"]["uid"]
    done_before = reconciles_done()
    batch(kube).delete_namespaced_job(job_name, namespace, propagation_policy="Background")
    wait_for(lambda: not prefetch_jobs(kube, namespace), "the Job gone")
    wait_for(lambda: reconciles_done() > done_before, "the operator to reconcile on the deletion")
    assert prefetch_jobs(kube, namespace) == []
    assert (ray_service(kube, namespace) or {}).get("metadata", {}).get("uid") == uid


def test_a_failed_download_says_why_and_makes_no_ray_service(kube: Kube, namespace: str) -> None:
    kube.create_llmd(held_deployment(namespace, activeDeadlineSeconds=1, backoffLimit=0))
    bind_claims(kube, namespace, [names.model_cache_claim(NAME)])
    body = wait_for(
        lambda: (
            b
            if (condition(b := kube.get_llmd(namespace, NAME), "ModelCached") or {}).get("reason")
            == "DownloadFailed"
            else None
        ),
        "ModelCached reason DownloadFailed",
        JOB_SECONDS,
    )
    cached = condition(body, "ModelCached") or {}
    assert cached["status"] == "False"
    # The Job controller's own words (DeadlineExceeded).
    assert "deadline" in cached["message"].lower(), cached["message"]
    assert body["status"]["phase"] == "Pending"
    assert (condition(body, "Progressing") or {}).get("reason") == "DownloadFailed"
    assert ray_service(kube, namespace) is None


def test_prefetch_in_mode_job_is_refused_at_admission(kube: Kube, namespace: str) -> None:
    def edit(body: Body) -> None:
        body["spec"]["storage"]["modelCache"] = {"prefetch": True}
        body["spec"]["model"] = {"source": "hf://Qwen/Qwen2.5-0.5B"}

    with pytest.raises(ApiException) as refused:
        kube.create_llmd(sample("finetune-job", namespace, edit))
    assert refused.value.status == 422
    assert "spec.storage.modelCache.prefetch" in str(refused.value.body)


# --- the real node ---------------------------------------------------------------------------
RUN_SECONDS = 300.0


def source_claim(kube: Kube, namespace: str, name: str) -> None:
    kube.core.create_namespaced_persistent_volume_claim(
        namespace,
        client.V1PersistentVolumeClaim(
            metadata=client.V1ObjectMeta(name=name),
            spec=client.V1PersistentVolumeClaimSpec(
                access_modes=["ReadWriteOnce"],
                storage_class_name="",
                resources=client.V1VolumeResourceRequirements(requests={"storage": "1Gi"}),
            ),
        ),
    )


def tiny_model(directory: Path) -> dict[str, bytes]:
    """A model directory in the shape of a Hugging Face snapshot (a config, a tokenizer,
    weights in a subdirectory), small enough to copy in a second."""
    files = {
        "config.json": json.dumps({"model_type": "qwen2", "hidden_size": 8}).encode(),
        "tokenizer.json": json.dumps({"version": "1.0"}).encode(),
        "weights/model.safetensors": bytes(range(256)) * 64,
    }
    for relative, data in files.items():
        target = directory / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        target.chmod(0o644)
    for sub in [directory, *[p for p in directory.rglob("*") if p.is_dir()]]:
        sub.chmod(0o755)
    return files


@pytest.mark.ray
def test_the_download_runs_for_real_from_a_pvc_source(kube: Kube, ray_namespace: str) -> None:
    ns = ray_namespace
    source = "pvc://model-store/qwen/tiny"
    body: Any = standin_deployment(ns)
    body["spec"]["model"]["source"] = source
    body["spec"]["storage"] = {
        "modelCache": {
            "size": "1Gi",
            "storageClassName": "",
            "accessModes": ["ReadWriteOnce"],
            "prefetch": True,
        }
    }
    cache_claim = names.model_cache_claim(NAME)
    with (
        host_volume(kube, ns, "model-store", "llmop-prefetch-") as store,
        host_volume(kube, ns, cache_claim, "llmop-prefetch-") as cache,
    ):
        files = tiny_model(store / "qwen" / "tiny")
        source_claim(kube, ns, "model-store")
        started = time.monotonic()
        kube.create_llmd(body)
        done = wait_for(
            lambda: (
                b
                if (condition(b := kube.get_llmd(ns, NAME), "ModelCached") or {}).get("reason")
                in ("Cached", "DownloadFailed")
                else None
            ),
            "the download to finish",
            RUN_SECONDS,
        )
        took = time.monotonic() - started
        print(f"prefetch of a {sum(map(len, files.values()))}-byte model: {took:.1f}s")
        assert condition(done, "ModelCached")["reason"] == "Cached", done["status"]  # type: ignore[index]
        target = cache / CACHE_DIR / model_key(source, None)
        for relative, data in files.items():
            assert (target / relative).read_bytes() == data, relative
        assert json.loads((target / MARKER).read_text()) == {"source": source, "revision": ""}
        assert not list((cache / CACHE_DIR).glob("*.partial-*"))
        # The Ray pods mount the cache claim, not the source claim: they load the copy.
        service = wait_for(lambda: ray_service(kube, ns), "the RayService")
        head = service["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]
        volumes = {v["name"]: v for v in head["volumes"]}
        assert names.MODEL_SOURCE_VOLUME not in volumes
        claim = volumes[names.MODEL_CACHE_VOLUME]["persistentVolumeClaim"]["claimName"]
        assert claim == cache_claim
