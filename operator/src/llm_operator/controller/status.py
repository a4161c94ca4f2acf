"""Status of an LLMDeployment, computed from its KubeRay child. Pure: no API calls.

KubeRay reports a RayService through its `Ready`/`UpgradeInProgress` conditions and
per-application Serve statuses, and a RayCluster through `state` and conditions. This
module folds either into one phase and the four conditions `kubectl` users read, keeping
KubeRay's own reason and message so nothing is lost in translation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from llm_operator.api.models import (
    Condition,
    GcsFaultToleranceState,
    LLMDeployment,
    LLMDeploymentStatus,
    Phase,
    ReplicaStatus,
)
from llm_operator.api.validation import memory_fit_of
from llm_operator.render import layout_of, names
from llm_operator.sizing import MemoryFit

READY = "Ready"
PROGRESSING = "Progressing"
SPEC_VALID = "SpecValid"
RESOURCES_FIT = "ResourcesFit"

# Serve application states that mean the model is not being served as asked.
FAILED_APP_STATES = frozenset({"DEPLOY_FAILED", "UNHEALTHY"})
# RayService Ready reasons after which KubeRay stops trying on its own.
TERMINAL_SERVICE_REASONS = frozenset({"InitializingTimeout", "ValidationFailed"})
MAX_MESSAGE = 1024
KUBERAY_NOT_INSTALLED = "KubeRayNotInstalled"

Body = Mapping[str, Any]


@dataclass(frozen=True)
class ConditionState:
    status: str
    reason: str
    message: str = ""


@dataclass(frozen=True)
class Observed:
    """What the KubeRay child says, in our terms."""

    phase: Phase
    ready: ConditionState
    progressing: ConditionState
    ready_replicas: int = 0
    ray_cluster: str | None = None
    # Every cluster KubeRay built from the RayService (active, and pending during a
    # rollout): each needs the current worker bounds.
    serving_clusters: tuple[str, ...] = ()
    # Whether the serving RayCluster has gcsFaultToleranceOptions; None: no cluster read.
    gcs_fault_tolerance: bool | None = None


def has_gcs_fault_tolerance(cluster: Body | None) -> bool | None:
    """Whether a RayCluster asks KubeRay for GCS fault tolerance (None for no cluster)."""
    if cluster is None:
        return None
    return bool((cluster.get("spec") or {}).get("gcsFaultToleranceOptions"))


def gcs_fault_tolerance_state(requested: bool, serving: bool | None) -> GcsFaultToleranceState:
    """Enabled when the serving cluster has it; else Pending while the spec asks for it."""
    if serving:
        return "Enabled"
    return "Pending" if requested else "Disabled"


def _conditions(body: Body) -> dict[str, Body]:
    return {c.get("type", ""): c for c in body.get("status", {}).get("conditions") or []}


def _state(condition: Body | None, default_reason: str) -> ConditionState:
    if condition is None:
        return ConditionState("Unknown", default_reason)
    return ConditionState(
        str(condition.get("status", "Unknown")),
        str(condition.get("reason") or default_reason),
        str(condition.get("message", ""))[:MAX_MESSAGE],
    )


def _replicas_from_pods(ready_worker_pods: int, hosts_per_replica: int) -> int:
    # KubeRay counts worker pods; a multi-host replica is ready with all of its hosts.
    return ready_worker_pods // max(1, hosts_per_replica)


def _serving_replicas(cluster_status: Body, hosts_per_replica: int) -> int:
    """Replicas of a RayService's serving cluster whose worker pods are all up.

    KubeRay's readiness probe on a RayService worker asks that pod's Serve proxy, and
    Serve drains the proxy of a pod that holds no Serve replica: the extra hosts of a
    multi-host replica (its pipeline stages' bundles) never turn Ready, although they
    serve. So a multi-host layout counts running worker pods, once the RayService is
    Ready; a single-host one counts Ready pods.
    """
    key = "availableWorkerReplicas" if hosts_per_replica > 1 else "readyWorkerReplicas"
    return _replicas_from_pods(int(cluster_status.get(key) or 0), hosts_per_replica)


def observe_missing(kind: str) -> Observed:
    waiting = ConditionState("False", "ChildMissing", f"the {kind} does not exist yet")
    return Observed("Pending", waiting, ConditionState("True", "Creating", f"creating the {kind}"))


def _failed_applications(status: Body) -> list[str]:
    problems: list[str] = []
    for part in ("activeServiceStatus", "pendingServiceStatus"):
        for app, app_status in (status.get(part, {}).get("applicationStatuses") or {}).items():
            if app_status.get("status") in FAILED_APP_STATES:
                problems.append(
                    f"Serve application {app} is {app_status['status']}: "
                    f"{app_status.get('message', '')}".strip()
                )
    return problems


def observe_ray_service(service: Body, hosts_per_replica: int) -> Observed:
    """Fold a RayService's status into a phase and Ready/Progressing states."""
    status = service.get("status") or {}
    if not status:
        waiting = ConditionState("Unknown", "WaitingForKubeRay", "KubeRay has not reported yet")
        return Observed("Pending", waiting, ConditionState("True", "WaitingForKubeRay"))
    conditions = _conditions(service)
    ready = _state(conditions.get("Ready"), "WaitingForKubeRay")
    active = status.get("activeServiceStatus") or {}
    cluster = active.get("rayClusterName") or None
    pending = (status.get("pendingServiceStatus") or {}).get("rayClusterName") or None
    serving = tuple(name for name in (cluster, pending) if name)
    replicas = _serving_replicas(active.get("rayClusterStatus") or {}, hosts_per_replica)
    replicas = replicas if ready.status == "True" else 0

    failures = _failed_applications(status)
    upgrade = conditions.get("UpgradeInProgress")
    stale = status.get("observedGeneration", 0) < service.get("metadata", {}).get("generation", 0)
    if stale:
        progressing = ConditionState(
            "True", "WaitingForKubeRay", "KubeRay has not observed the latest RayService spec"
        )
    elif upgrade is not None and upgrade.get("status") == "True":
        progressing = _state(upgrade, "UpgradeInProgress")
    elif ready.status != "True" and not failures:
        progressing = ConditionState("True", ready.reason, ready.message)
    else:
        progressing = ConditionState("False", "Stable", "no rollout in progress")

    if failures:
        message = "; ".join(failures)[:MAX_MESSAGE]
        phase: Phase = "Degraded" if ready.status == "True" else "Failed"
        if ready.status != "True":
            ready = ConditionState("False", "ServeApplicationFailed", message)
        progressing = ConditionState("False", "ServeApplicationFailed", message)
    elif ready.status == "True":
        phase = "Ready"
    elif ready.reason in TERMINAL_SERVICE_REASONS:
        phase = "Failed"
        progressing = ConditionState("False", ready.reason, ready.message)
    else:
        phase = "Progressing"
    return Observed(phase, ready, progressing, replicas, cluster, serving)


def observe_ray_cluster(cluster: Body, hosts_per_replica: int) -> Observed:
    """Fold a RayCluster's `state` and conditions into a phase and Ready/Progressing,
    with whether it asks for GCS fault tolerance."""
    observed = _observe_ray_cluster_state(cluster, hosts_per_replica)
    return replace(observed, gcs_fault_tolerance=has_gcs_fault_tolerance(cluster))


def _observe_ray_cluster_state(cluster: Body, hosts_per_replica: int) -> Observed:
    status = cluster.get("status") or {}
    name = cluster.get("metadata", {}).get("name")
    if not status:
        waiting = ConditionState("Unknown", "WaitingForKubeRay", "KubeRay has not reported yet")
        return Observed("Pending", waiting, ConditionState("True", "WaitingForKubeRay"), 0, name)
    conditions = _conditions(cluster)
    state = status.get("state", "")
    replicas = _replicas_from_pods(int(status.get("readyWorkerReplicas") or 0), hosts_per_replica)
    failure = conditions.get("ReplicaFailure")
    stable = ConditionState("False", "Stable", "no rollout in progress")
    if failure is not None and failure.get("status") == "True":
        failed = _state(failure, "ReplicaFailure")
        ready = ConditionState(
            "True" if state == "ready" else "False", failed.reason, failed.message
        )
        return Observed(
            "Degraded",
            ready,
            ConditionState("False", failed.reason, failed.message),
            replicas,
            name,
        )
    if state == "ready":
        ready = _state(conditions.get("HeadPodReady"), "HeadPodReady")
        ready = ConditionState(
            "True", "RayClusterReady", ready.message or "the Ray cluster is ready"
        )
        return Observed("Ready", ready, stable, replicas, name)
    if state == "failed":
        reason = str(status.get("reason", ""))[:MAX_MESSAGE]
        failed = ConditionState("False", "RayClusterFailed", reason)
        return Observed(
            "Failed", failed, ConditionState("False", "RayClusterFailed", reason), replicas, name
        )
    if state == "suspended":
        suspended = ConditionState("False", "Suspended", "the Ray cluster is suspended")
        return Observed("Pending", suspended, stable, replicas, name)
    head = _state(conditions.get("HeadPodReady"), "WaitingForHeadPod")
    starting = ConditionState("False", head.reason, head.message)
    return Observed(
        "Progressing", starting, ConditionState("True", head.reason, head.message), replicas, name
    )


def _fit_state(fit: MemoryFit) -> ConditionState:
    status = {True: "True", False: "False", None: "Unknown"}[fit.fits]
    return ConditionState(status, fit.reason, fit.message[:MAX_MESSAGE])


def merge_conditions(
    previous: Sequence[Body], wanted: Mapping[str, ConditionState], generation: int | None, now: str
) -> list[Condition]:
    """Conditions in Kubernetes form; lastTransitionTime moves only when status moves."""
    before = {c.get("type"): c for c in previous}
    out: list[Condition] = []
    for kind, state in wanted.items():
        old = before.get(kind)
        same = old is not None and old.get("status") == state.status
        out.append(
            Condition(
                type=kind,
                status=state.status,
                reason=state.reason,
                message=state.message,
                last_transition_time=(old or {}).get("lastTransitionTime") if same else now,
                observed_generation=generation,
            )
        )
    # Keep conditions other writers may have added, in their place after ours.
    out.extend(Condition.model_validate(c) for c in previous if c.get("type") not in wanted)
    return out


def _dump(status: LLMDeploymentStatus) -> dict[str, Any]:
    return status.model_dump(by_alias=True, exclude_none=True)


def reconciled_status(
    llmd: LLMDeployment,
    observed: Observed,
    previous: Body,
    now: str,
    gpu_memory_gib: Mapping[str, float],
) -> dict[str, Any]:
    """The full status of a valid LLMDeployment given what its child reports."""
    generation = llmd.metadata.generation
    wanted = {
        READY: observed.ready,
        PROGRESSING: observed.progressing,
        SPEC_VALID: ConditionState("True", "Valid", "the spec passed validation"),
        RESOURCES_FIT: _fit_state(
            memory_fit_of(llmd, layout_of(llmd).gpus_per_replica, gpu_memory_gib)
        ),
    }
    service = llmd.spec.mode == "Service"
    status = LLMDeploymentStatus(
        phase=observed.phase,
        conditions=merge_conditions(previous.get("conditions") or [], wanted, generation, now),
        observed_generation=generation,
        model=llmd.served_model_id,
        endpoint=names.endpoint(llmd.name, llmd.namespace) if service else None,
        ray_service=names.ray_service_name(llmd.name) if service else None,
        ray_cluster=observed.ray_cluster,
        gpus_per_replica=layout_of(llmd).gpus_per_replica,
        replicas=ReplicaStatus(desired=llmd.spec.min_replicas, ready=observed.ready_replicas),
        gcs_fault_tolerance=gcs_fault_tolerance_state(
            llmd.spec.ray_cluster.gcs_fault_tolerance is not None, observed.gcs_fault_tolerance
        ),
    )
    return _dump(status)


def invalid_status(
    problems: str, generation: int | None, previous: Body, now: str
) -> dict[str, Any]:
    """Status for a spec that failed validation: the children keep running as they were.

    Children exist once a valid spec was applied, which is when status first names them.
    """
    applied = bool(previous.get("rayService") or previous.get("rayCluster"))
    wanted = {SPEC_VALID: ConditionState("False", "InvalidSpec", problems[:MAX_MESSAGE])}
    if not applied:
        wanted[READY] = ConditionState("False", "InvalidSpec", "fix the spec; nothing was created")
        wanted[PROGRESSING] = ConditionState("False", "InvalidSpec", "waiting for a valid spec")
    kept = {k: v for k, v in previous.items() if k not in ("conditions", "observedGeneration")}
    status = LLMDeploymentStatus.model_validate(kept)
    if not applied:
        status.phase = "Failed"
    status.conditions = merge_conditions(previous.get("conditions") or [], wanted, generation, now)
    status.observed_generation = generation
    return _dump(status)


def not_served_status(
    message: str, generation: int | None, previous: Body, now: str
) -> dict[str, Any]:
    """Status while the API server does not serve KubeRay's kinds (KubeRay not installed).

    `observedGeneration` stays as it was: the generation is not handled until its children
    exist, so the retry that follows still counts as unfinished work.
    """
    wanted = {
        READY: ConditionState("False", KUBERAY_NOT_INSTALLED, message[:MAX_MESSAGE]),
        PROGRESSING: ConditionState(
            "False", KUBERAY_NOT_INSTALLED, "waiting for KubeRay's CRDs to be installed"
        ),
    }
    kept = {k: v for k, v in previous.items() if k != "conditions"}
    status = LLMDeploymentStatus.model_validate(kept)
    status.phase = "Pending"
    status.conditions = merge_conditions(previous.get("conditions") or [], wanted, generation, now)
    return _dump(status)


_STATUS_KEYS = frozenset(
    field.alias or name for name, field in LLMDeploymentStatus.model_fields.items()
)


def status_patch(previous: Body, current: Mapping[str, Any]) -> dict[str, Any] | None:
    """The merge patch from `previous` to `current`, or None when nothing changed.

    Only our own keys are compared and removed; anything else in status is left alone.
    """
    patch: dict[str, Any] = {
        key: None for key in previous if key in _STATUS_KEYS and key not in current
    }
    patch.update({key: value for key, value in current.items() if previous.get(key) != value})
    return patch or None
