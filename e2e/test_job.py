"""Mode Job: an LLMDeployment becomes a KubeRay RayJob.

On the fake GPU nodes, KubeRay accepts the RayJob and makes its Ray cluster, whose pods
land on the GPU nodes; the job's status is driven the way the local suite drives Serve
status (a status patch, as KubeRay would write it) and the LLMDeployment mirrors it. A
finished run is never made again, and a later spec change is refused.

On the real node (marker `ray`), a small CPU training run (llm_standin.train in the
local Ray image) checkpoints to the checkpoints claim, its head pod is deleted mid-run,
and the retry resumes from the newest checkpoint and ends Succeeded. The claim binds to a
static hostPath PersistentVolume this test makes, on a directory of the machine that
runs the real node's kubelet (the test reads the resumed step there).
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from standin import HEAD_RESOURCES, WORKER_RESOURCES, ray_image
from support import (
    Body,
    Kube,
    bind_claims,
    condition,
    converged,
    head_pods,
    host_volume,
    operator_metrics_url,
    sample,
    scheduled,
    scrape,
    wait_for,
    worker_pods,
)

from llm_operator.render import names

JOB = "finetune-job"


def reconciles_done() -> float:
    """Reconciles the operator has finished, whatever their result, from its /metrics."""
    series = scrape(operator_metrics_url())
    return sum(v for (name, _), v in series.items() if name == "llmop_reconciles_total")


def ray_job(kube: Kube, namespace: str, name: str = JOB) -> Body:
    return kube.ray("rayjobs", namespace, names.ray_job_name(name)) or {}


def job_cluster(kube: Kube, namespace: str, name: str = JOB) -> str:
    def made() -> str | None:
        cluster = (ray_job(kube, namespace, name).get("status") or {}).get("rayClusterName")
        return str(cluster) if cluster and kube.ray("rayclusters", namespace, cluster) else None

    return wait_for(made, f"KubeRay to create the RayCluster of RayJob {namespace}/{name}")


def kuberay_writes(kube: Kube, namespace: str, status: Body, name: str = JOB) -> None:
    """Stand in for KubeRay's job status (no Ray runs on the fake nodes)."""
    kube.custom.patch_namespaced_custom_object_status(
        names.RAY_GROUP,
        names.RAY_VERSION,
        namespace,
        "rayjobs",
        names.ray_job_name(name),
        {"status": status},
    )


def created_then_reported(kube: Kube, namespace: str, status: Body) -> None:
    """The sample job created and first reconciled, then `status` written as KubeRay's."""
    kube.create_llmd(sample(JOB, namespace))
    wait_for(lambda: ray_job(kube, namespace), "the RayJob")
    wait_for(lambda: converged(kube.get_llmd(namespace, JOB)), "first status")
    kuberay_writes(kube, namespace, status)


def phase(kube: Kube, namespace: str, wanted: str, name: str = JOB) -> Body:
    def reached() -> Body | None:
        body = kube.get_llmd(namespace, name)
        return body if (body.get("status") or {}).get("phase") == wanted else None

    return wait_for(reached, f"LLMDeployment {namespace}/{name} in phase {wanted}")


# --- fake GPU nodes ------------------------------------------------------------------------
def test_the_ray_job_is_accepted_and_its_cluster_placed(kube: Kube, namespace: str) -> None:
    kube.create_llmd(sample(JOB, namespace))
    bind_claims(kube, namespace, [names.model_cache_claim(JOB), names.checkpoints_claim(JOB)])
    cluster = job_cluster(kube, namespace)
    workers = wait_for(
        lambda: scheduled(worker_pods(kube, namespace, cluster), 2), "2 GPU worker pods placed"
    )
    for pod in workers:
        node = kube.node(pod.spec.node_name)
        assert node.metadata.labels.get("nvidia.com/gpu.product") or node.status.allocatable.get(
            "nvidia.com/gpu"
        ), pod.spec.node_name
        env = {e.name: e.value for e in pod.spec.containers[0].env or []}
        assert env["LLMOP_CHECKPOINT_DIR"] == "/checkpoints"
    wait_for(lambda: scheduled(head_pods(kube, namespace, cluster), 1), "the head pod placed")
    body = wait_for(lambda: b if converged(b := kube.get_llmd(namespace, JOB)) else None, "status")
    assert body["status"]["rayJob"] == names.ray_job_name(JOB)
    assert body["status"]["phase"] in ("Pending", "Running")


def test_the_job_status_is_mirrored_and_a_finished_run_is_kept(kube: Kube, namespace: str) -> None:
    created_then_reported(
        kube,
        namespace,
        {
            "jobDeploymentStatus": "Complete",
            "jobStatus": "SUCCEEDED",
            "message": "Job finished successfully.",
            "startTime": "2026-11-26T10:00:00Z",
            "endTime": "2026-11-26T10:05:00Z",
            "dashboardURL": f"{JOB}-x-head-svc.{namespace}.svc.cluster.local:8265",
        },
    )
    body = phase(kube, namespace, "Succeeded")
    job = body["status"]["job"]
    assert (job["jobStatus"], job["jobDeploymentStatus"]) == ("SUCCEEDED", "Complete")
    assert (job["startTime"], job["endTime"]) == ("2026-11-26T10:00:00Z", "2026-11-26T10:05:00Z")
    assert job["dashboardURL"].endswith(":8265")
    assert condition(body, "Ready")["status"] == "True"  # type: ignore[index]
    uid = ray_job(kube, namespace)["metadata"]["uid"]

    # A spec change after the run: refused, the RayJob untouched.
    kube.patch_llmd(namespace, JOB, {"spec": {"job": {"entrypoint": "python -m other"}}})

    def refused() -> Body | None:
        found = kube.get_llmd(namespace, JOB)
        progressing = condition(found, "Progressing") or {}
        ok = converged(found) and progressing.get("reason") == "JobFinishedSpecChangeRefused"
        return found if ok else None

    wait_for(refused, "the spec change refused")
    live = ray_job(kube, namespace)
    assert live["metadata"]["uid"] == uid
    assert live["spec"]["entrypoint"] != "python -m other"

    # Deleting the finished RayJob does not make the run again: once the operator has
    # reconciled on the deletion event (its reconcile counter grows), the RayJob is
    # still gone.
    done_before = reconciles_done()
    kube.custom.delete_namespaced_custom_object(
        names.RAY_GROUP, names.RAY_VERSION, namespace, "rayjobs", names.ray_job_name(JOB)
    )
    wait_for(lambda: not ray_job(kube, namespace), "the RayJob gone")
    wait_for(lambda: reconciles_done() > done_before, "the operator to reconcile on the deletion")
    assert not ray_job(kube, namespace), "a finished run was made again"
    assert kube.get_llmd(namespace, JOB)["status"]["phase"] == "Succeeded"


def test_a_failed_job_says_kuberays_reason(kube: Kube, namespace: str) -> None:
    created_then_reported(
        kube,
        namespace,
        {"jobDeploymentStatus": "Failed", "jobStatus": "FAILED", "reason": "AppFailed"},
    )
    body = phase(kube, namespace, "Failed")
    ready = condition(body, "Ready") or {}
    assert ready.get("reason") == "JobFailed" and "AppFailed" in ready.get("message", "")


# --- the real node ---------------------------------------------------------------------------
TRAIN_STEPS = 300
# 0.2 s a step: about 60 s of training, long enough to kill it midway.
TRAIN = f"python -m llm_standin.train --steps {TRAIN_STEPS} --every 20 --step-seconds 0.2"
RUN_SECONDS = 420.0


def training_job(namespace: str) -> Body:
    resources: Any = {"requests": HEAD_RESOURCES, "limits": HEAD_RESOURCES}
    workers: Any = {"requests": WORKER_RESOURCES, "limits": WORKER_RESOURCES}
    return {
        "apiVersion": "llmops.dev/v1alpha1",
        "kind": "LLMDeployment",
        "metadata": {"name": "train", "namespace": namespace},
        "spec": {
            "mode": "Job",
            # A retry (a new Ray cluster) if the head's loss fails the attempt.
            "job": {"entrypoint": TRAIN, "backoffLimit": 2},
            "accelerator": {"type": "L4", "gpusPerNode": 1},
            "replicas": 1,
            "storage": {
                "checkpoints": {
                    "size": "1Gi",
                    "storageClassName": "",
                    "accessModes": ["ReadWriteOnce"],
                }
            },
            "rayCluster": {"image": ray_image(), "head": {"resources": resources},
                           "worker": {"resources": workers}},
        },
    }  # fmt: skip


@pytest.mark.ray
def test_training_resumes_from_its_checkpoint_after_the_head_is_killed(
    kube: Kube, ray_namespace: str
) -> None:
    ns = ray_namespace
    claim = names.checkpoints_claim("train")
    with host_volume(kube, ns, claim, "llmop-job-") as checkpoints:
        started = time.monotonic()
        kube.create_llmd(training_job(ns))
        wait_for(
            lambda: len(list(checkpoints.glob("ckpt-*.json"))) >= 2,
            "two checkpoints written",
            RUN_SECONDS,
        )
        first_checkpoint_s = time.monotonic() - started
        cluster = str(ray_job(kube, ns, "train")["status"]["rayClusterName"])
        (head,) = head_pods(kube, ns, cluster)
        kube.core.delete_namespaced_pod(head.metadata.name, ns, grace_period_seconds=0)
        killed_at = time.monotonic()

        body = wait_for(
            lambda: (
                b
                if (b := kube.get_llmd(ns, "train")).get("status", {}).get("phase")
                in ("Succeeded", "Failed")
                else None
            ),
            "the training job to finish",
            RUN_SECONDS,
        )
        resumed_s = time.monotonic() - killed_at
        starts = [int(s) for s in (checkpoints / "resumes.log").read_text().split()]
        print(
            f"first checkpoints {first_checkpoint_s:.0f}s, after the kill {resumed_s:.0f}s, "
            f"starts {starts}"
        )
        assert body["status"]["phase"] == "Succeeded", body["status"]
        assert starts[0] == 0 and len(starts) >= 2, starts
        assert starts[-1] >= 20, f"the retry started over: {starts}"
        assert (checkpoints / "done.json").exists()
