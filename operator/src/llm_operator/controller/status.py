"""Status of an LLMDeployment, computed from its KubeRay child. Pure: no API calls.

KubeRay reports a RayService through its `Ready`/`UpgradeInProgress` conditions and
per-application Serve statuses, and a RayCluster through `state` and conditions. This
module folds either into one phase and the four conditions `kubectl` users read, keeping
KubeRay's own reason and message so nothing is lost in translation.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from llm_operator.api.models import (
    ClusterTrafficStatus,
    Condition,
    JobStatus,
    LLMDeploymentStatus,
    ReplicaStatus,
    UpgradeStatus,
)
from llm_operator.api.plan import Plan
from llm_operator.api.vocabulary import (
    TERMINAL_JOB_DEPLOYMENT_STATUSES,
    ConditionStatus,
    ConditionType,
    GcsFaultToleranceState,
    KubeJobCondition,
    KubeRayJobDeploymentStatus,
    KubeRayJobStatus,
    Phase,
    RayKind,
    Reason,
)
from llm_operator.render import names
from llm_operator.sizing import MemoryFit

TRUE, FALSE, UNKNOWN = ConditionStatus.TRUE, ConditionStatus.FALSE, ConditionStatus.UNKNOWN

# Serve application states that mean the model is not being served as asked.
FAILED_APP_STATES = frozenset({"DEPLOY_FAILED", "UNHEALTHY"})
# RayService Ready reasons after which KubeRay stops trying on its own.
TERMINAL_SERVICE_REASONS = frozenset({"InitializingTimeout", "ValidationFailed"})
MAX_MESSAGE = 1024

Body = Mapping[str, Any]


class KubeRayCondition(StrEnum):
    """The condition types of KubeRay's children that the folding reads."""

    READY = "Ready"
    UPGRADE_IN_PROGRESS = "UpgradeInProgress"
    ROLLBACK_IN_PROGRESS = "RollbackInProgress"
    REPLICA_FAILURE = "ReplicaFailure"
    HEAD_POD_READY = "HeadPodReady"


@dataclass(frozen=True)
class ConditionState:
    status: ConditionStatus
    reason: str  # one of `Reason`, or KubeRay's own
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
    # Mode Job: the run as KubeRay reports it.
    job: JobStatus | None = None
    # The HTTPRoute of spec.exposure.gateway that exists, and why the one asked for does
    # not (the Gateway API is not served); None: no route, no problem.
    http_route: str | None = None
    route_problem: str | None = None
    # The URL clients outside the cluster use, once the route's Gateway has an address.
    external_endpoint: str | None = None
    # spec.storage.modelCache.prefetch: the ModelCached condition (None: no prefetch) and
    # the directory the Ray resource loads from, once a download finished.
    model_cached: ConditionState | None = None
    cached_model: str | None = None
    # Mode Service: whether KubeRay moves the model to a new cluster, and (incremental
    # upgrades) the traffic split and target capacity of both clusters.
    upgrading: ConditionState | None = None
    upgrade: UpgradeStatus | None = None
    # Why the Ray resource was left as it is: the spec's upgradeStrategy needs the
    # Gateway API, which the cluster does not serve.
    upgrade_problem: str | None = None


# Ports a URL of each scheme leaves out.
DEFAULT_PORTS = {"http": 80, "https": 443}


def _listener(gateway: Body, section_name: str | None, port: int | None) -> Body:
    """The listener a parent reference attaches to: by name, else by port, else the first."""
    listeners: list[Body] = list((gateway.get("spec") or {}).get("listeners") or [])
    for listener in listeners:
        if section_name is not None and listener.get("name") == section_name:
            return listener
        if section_name is None and port is not None and listener.get("port") == port:
            return listener
    return listeners[0] if listeners else {}


def gateway_endpoint(
    gateway: Body | None,
    *,
    hostnames: Sequence[str],
    path: str,
    section_name: str | None = None,
    port: int | None = None,
) -> str | None:
    """The OpenAI-compatible base URL through the Gateway, or None until the Gateway
    reports an address (`status.addresses`, written by its controller).

    The host is the route's first exact host name, else the Gateway's first address; the
    scheme and port are the listener's (HTTPS is https)."""
    addresses = ((gateway or {}).get("status") or {}).get("addresses") or []
    values = [str(a.get("value")) for a in addresses if a.get("value")]
    if gateway is None or not values:
        return None
    exact = [h for h in hostnames if not h.startswith("*.")]
    host = exact[0] if exact else values[0]
    if ":" in host:  # an IPv6 address
        host = f"[{host}]"
    listener = _listener(gateway, section_name, port)
    scheme = "https" if listener.get("protocol") == "HTTPS" else "http"
    listener_port = listener.get("port", DEFAULT_PORTS[scheme])
    authority = host if listener_port == DEFAULT_PORTS[scheme] else f"{host}:{listener_port}"
    prefix = "" if path == "/" else path
    return f"{scheme}://{authority}{prefix}/v1"


def has_gcs_fault_tolerance(cluster: Body | None) -> bool | None:
    """Whether a RayCluster asks KubeRay for GCS fault tolerance (None for no cluster)."""
    if cluster is None:
        return None
    return bool((cluster.get("spec") or {}).get("gcsFaultToleranceOptions"))


def gcs_fault_tolerance_state(requested: bool, serving: bool | None) -> GcsFaultToleranceState:
    """Enabled when the serving cluster has it; else Pending while the spec asks for it."""
    if serving:
        return GcsFaultToleranceState.ENABLED
    return GcsFaultToleranceState.PENDING if requested else GcsFaultToleranceState.DISABLED


def _conditions(body: Body) -> dict[str, Body]:
    return {c.get("type", ""): c for c in body.get("status", {}).get("conditions") or []}


def _state(condition: Body | None, default_reason: str) -> ConditionState:
    if condition is None:
        return ConditionState(UNKNOWN, default_reason)
    return ConditionState(
        ConditionStatus(str(condition.get("status", UNKNOWN))),
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


def observe_missing(kind: RayKind) -> Observed:
    waiting = ConditionState(FALSE, Reason.CHILD_MISSING, f"the {kind} does not exist yet")
    upgrading = None
    if kind is RayKind.RAY_SERVICE:
        upgrading = ConditionState(FALSE, Reason.NO_UPGRADE, f"the {kind} does not exist yet")
    return Observed(
        Phase.PENDING,
        waiting,
        ConditionState(TRUE, Reason.CREATING, f"creating the {kind}"),
        upgrading=upgrading,
    )


def waiting_for_gateway_api(problem: str) -> Observed:
    """No RayService yet, and its upgradeStrategy needs the Gateway API the cluster lacks."""
    held = ConditionState(FALSE, Reason.GATEWAY_API_NOT_INSTALLED, problem[:MAX_MESSAGE])
    return Observed(
        Phase.PENDING,
        held,
        held,
        upgrading=ConditionState(FALSE, Reason.NO_UPGRADE, "the RayService does not exist yet"),
        upgrade_problem=problem,
    )


def _cluster_traffic(service_status: Body) -> ClusterTrafficStatus | None:
    """One of KubeRay's activeServiceStatus/pendingServiceStatus; None without a cluster."""
    name = service_status.get("rayClusterName") or None
    if name is None:
        return None
    return ClusterTrafficStatus(
        ray_cluster=name,
        traffic_routed_percent=service_status.get("trafficRoutedPercent"),
        target_capacity=service_status.get("targetCapacity"),
        last_traffic_migrated_time=service_status.get("lastTrafficMigratedTime"),
    )


def _shifts_traffic(cluster: ClusterTrafficStatus | None) -> bool:
    return cluster is not None and (
        cluster.traffic_routed_percent is not None or cluster.target_capacity is not None
    )


def upgrade_status(status: Body) -> UpgradeStatus | None:
    """The traffic split and target capacity KubeRay reports during incremental upgrades
    (ray-operator v1.6.1 apis/ray/v1/rayservice_types.go, RayServiceStatus); None when
    it reports neither (other upgrade strategies)."""
    active = _cluster_traffic(status.get("activeServiceStatus") or {})
    pending = _cluster_traffic(status.get("pendingServiceStatus") or {})
    if not (_shifts_traffic(active) or _shifts_traffic(pending)):
        return None
    return UpgradeStatus(active=active, pending=pending)


def _percent(value: int | None) -> str:
    return "unset" if value is None else f"{value}%"


def _split(cluster: ClusterTrafficStatus) -> str:
    return (
        f"{cluster.ray_cluster} (traffic {_percent(cluster.traffic_routed_percent)}, "
        f"target capacity {_percent(cluster.target_capacity)})"
    )


def upgrading_state(status: Body) -> ConditionState:
    """Upgrading: True while KubeRay serves from an active and a pending cluster, shifts
    traffic between them, or rolls an upgrade back; False otherwise."""
    active = _cluster_traffic(status.get("activeServiceStatus") or {})
    pending = _cluster_traffic(status.get("pendingServiceStatus") or {})
    rollback = _conditions({"status": status}).get(KubeRayCondition.ROLLBACK_IN_PROGRESS)
    if rollback is not None and rollback.get("status") == TRUE:
        said = _state(rollback, Reason.ROLLING_BACK).message
        clusters = "; ".join(_split(c) for c in (active, pending) if c is not None)
        message = f"{said}: {clusters}" if said else clusters
        return ConditionState(TRUE, Reason.ROLLING_BACK, message[:MAX_MESSAGE])
    if active is not None and pending is not None:
        if _shifts_traffic(active) or _shifts_traffic(pending):
            message = f"from {_split(active)} to {_split(pending)}"
            return ConditionState(TRUE, Reason.MIGRATING_TRAFFIC, message[:MAX_MESSAGE])
        message = (
            f"KubeRay starts Ray cluster {pending.ray_cluster} to replace "
            f"{active.ray_cluster}; traffic moves once it serves"
        )
        return ConditionState(TRUE, Reason.NEW_CLUSTER_STARTING, message)
    if pending is not None:
        message = f"the RayService's first Ray cluster {pending.ray_cluster} is starting"
        return ConditionState(FALSE, Reason.FIRST_CLUSTER_STARTING, message)
    return ConditionState(FALSE, Reason.NO_UPGRADE, "no pending Ray cluster")


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
        waiting = ConditionState(
            UNKNOWN, Reason.WAITING_FOR_KUBERAY, "KubeRay has not reported yet"
        )
        return Observed(
            Phase.PENDING,
            waiting,
            ConditionState(TRUE, Reason.WAITING_FOR_KUBERAY),
            upgrading=waiting,
        )
    conditions = _conditions(service)
    ready = _state(conditions.get(KubeRayCondition.READY), Reason.WAITING_FOR_KUBERAY)
    active = status.get("activeServiceStatus") or {}
    cluster = active.get("rayClusterName") or None
    pending = (status.get("pendingServiceStatus") or {}).get("rayClusterName") or None
    serving = tuple(name for name in (cluster, pending) if name)
    replicas = _serving_replicas(active.get("rayClusterStatus") or {}, hosts_per_replica)
    replicas = replicas if ready.status is TRUE else 0

    failures = _failed_applications(status)
    upgrade = conditions.get(KubeRayCondition.UPGRADE_IN_PROGRESS)
    stale = status.get("observedGeneration", 0) < service.get("metadata", {}).get("generation", 0)
    if stale:
        progressing = ConditionState(
            TRUE, Reason.WAITING_FOR_KUBERAY, "KubeRay has not observed the latest RayService spec"
        )
    elif upgrade is not None and upgrade.get("status") == TRUE:
        progressing = _state(upgrade, Reason.UPGRADE_IN_PROGRESS)
    elif ready.status is not TRUE and not failures:
        progressing = ConditionState(TRUE, ready.reason, ready.message)
    else:
        progressing = ConditionState(FALSE, Reason.STABLE, "no rollout in progress")

    if failures:
        message = "; ".join(failures)[:MAX_MESSAGE]
        phase: Phase = Phase.DEGRADED if ready.status is TRUE else Phase.FAILED
        if ready.status is not TRUE:
            ready = ConditionState(FALSE, Reason.SERVE_APPLICATION_FAILED, message)
        progressing = ConditionState(FALSE, Reason.SERVE_APPLICATION_FAILED, message)
    elif ready.status is TRUE:
        phase = Phase.READY
    elif ready.reason in TERMINAL_SERVICE_REASONS:
        phase = Phase.FAILED
        progressing = ConditionState(FALSE, ready.reason, ready.message)
    else:
        phase = Phase.PROGRESSING
    return Observed(
        phase,
        ready,
        progressing,
        replicas,
        cluster,
        serving,
        upgrading=upgrading_state(status),
        upgrade=upgrade_status(status),
    )


def observe_ray_cluster(cluster: Body, hosts_per_replica: int) -> Observed:
    """Fold a RayCluster's `state` and conditions into a phase and Ready/Progressing,
    with whether it asks for GCS fault tolerance."""
    observed = _observe_ray_cluster_state(cluster, hosts_per_replica)
    return replace(observed, gcs_fault_tolerance=has_gcs_fault_tolerance(cluster))


def _observe_ray_cluster_state(cluster: Body, hosts_per_replica: int) -> Observed:
    status = cluster.get("status") or {}
    name = cluster.get("metadata", {}).get("name")
    if not status:
        waiting = ConditionState(
            UNKNOWN, Reason.WAITING_FOR_KUBERAY, "KubeRay has not reported yet"
        )
        return Observed(
            Phase.PENDING, waiting, ConditionState(TRUE, Reason.WAITING_FOR_KUBERAY), 0, name
        )
    conditions = _conditions(cluster)
    state = status.get("state", "")
    replicas = _replicas_from_pods(int(status.get("readyWorkerReplicas") or 0), hosts_per_replica)
    failure = conditions.get(KubeRayCondition.REPLICA_FAILURE)
    stable = ConditionState(FALSE, Reason.STABLE, "no rollout in progress")
    if failure is not None and failure.get("status") == TRUE:
        failed = _state(failure, Reason.REPLICA_FAILURE)
        ready = ConditionState(TRUE if state == "ready" else FALSE, failed.reason, failed.message)
        return Observed(
            Phase.DEGRADED,
            ready,
            ConditionState(FALSE, failed.reason, failed.message),
            replicas,
            name,
        )
    if state == "ready":
        ready = _state(conditions.get(KubeRayCondition.HEAD_POD_READY), Reason.HEAD_POD_READY)
        ready = ConditionState(
            TRUE, Reason.RAY_CLUSTER_READY, ready.message or "the Ray cluster is ready"
        )
        return Observed(Phase.READY, ready, stable, replicas, name)
    if state == "failed":
        reason = str(status.get("reason", ""))[:MAX_MESSAGE]
        failed = ConditionState(FALSE, Reason.RAY_CLUSTER_FAILED, reason)
        return Observed(
            Phase.FAILED,
            failed,
            ConditionState(FALSE, Reason.RAY_CLUSTER_FAILED, reason),
            replicas,
            name,
        )
    if state == "suspended":
        suspended = ConditionState(FALSE, Reason.SUSPENDED, "the Ray cluster is suspended")
        return Observed(Phase.PENDING, suspended, stable, replicas, name)
    head = _state(conditions.get(KubeRayCondition.HEAD_POD_READY), Reason.WAITING_FOR_HEAD_POD)
    starting = ConditionState(FALSE, head.reason, head.message)
    return Observed(
        Phase.PROGRESSING, starting, ConditionState(TRUE, head.reason, head.message), replicas, name
    )


# --- mode Job: a RayJob's run ---------------------------------------------------------
JDS, JS = KubeRayJobDeploymentStatus, KubeRayJobStatus
# jobDeploymentStatus -> (phase, Ready, Progressing, reason) while the run is not over.
_UNDER_WAY: dict[KubeRayJobDeploymentStatus, tuple[Phase, ConditionStatus, Reason]] = {
    JDS.NEW: (Phase.PENDING, FALSE, Reason.JOB_PENDING),
    JDS.INITIALIZING: (Phase.PENDING, FALSE, Reason.JOB_PENDING),
    JDS.WAITING: (Phase.PENDING, FALSE, Reason.JOB_PENDING),
    JDS.SUSPENDING: (Phase.PENDING, FALSE, Reason.SUSPENDED),
    JDS.SUSPENDED: (Phase.PENDING, FALSE, Reason.SUSPENDED),
    JDS.RUNNING: (Phase.RUNNING, TRUE, Reason.JOB_RUNNING),
    JDS.RETRYING: (Phase.RUNNING, FALSE, Reason.JOB_RETRYING),
}


def job_finished(ray_job: Body) -> bool:
    """Whether KubeRay is done with the RayJob (its IsJobDeploymentTerminal): Complete,
    or Failed with every retry spent."""
    deployment = (ray_job.get("status") or {}).get("jobDeploymentStatus", "")
    return deployment in TERMINAL_JOB_DEPLOYMENT_STATUSES


def _job_status(ray_job: Body) -> JobStatus:
    status = ray_job.get("status") or {}
    info = status.get("rayJobInfo") or {}
    return JobStatus(
        job_status=status.get("jobStatus") or None,
        job_deployment_status=status.get("jobDeploymentStatus") or None,
        job_id=status.get("jobId") or None,
        message=str(status.get("message") or "")[:MAX_MESSAGE] or None,
        start_time=status.get("startTime") or info.get("startTime"),
        end_time=status.get("endTime") or info.get("endTime"),
        dashboard_url=status.get("dashboardURL") or None,
        ray_cluster=status.get("rayClusterName") or None,
        failed=status.get("failed"),
        succeeded=status.get("succeeded"),
    )


def _job_message(job: JobStatus, reason: str = "") -> str:
    said = f"jobDeploymentStatus {job.job_deployment_status or 'New'}"
    said += f", jobStatus {job.job_status or 'none yet'}"
    if reason:
        said += f", reason {reason}"
    if job.message:
        said += f": {job.message}"
    return said[:MAX_MESSAGE]


def observe_ray_job(ray_job: Body, hosts_per_replica: int) -> Observed:
    """Fold a RayJob's jobDeploymentStatus and jobStatus into Pending, Running, Succeeded
    or Failed, with KubeRay's words in the Ready and Progressing messages."""
    status = ray_job.get("status") or {}
    job = _job_status(ray_job)
    message = _job_message(job, str(status.get("reason") or ""))
    cluster_status = status.get("rayClusterStatus") or {}
    replicas = _replicas_from_pods(
        int(cluster_status.get("readyWorkerReplicas") or 0), hosts_per_replica
    )
    deployment = str(status.get("jobDeploymentStatus") or "")
    if deployment == JDS.COMPLETE and status.get("jobStatus") == JS.SUCCEEDED:
        done = ConditionState(FALSE, Reason.JOB_SUCCEEDED, message)
        return Observed(
            Phase.SUCCEEDED,
            ConditionState(TRUE, Reason.JOB_SUCCEEDED, message),
            done,
            0,
            job.ray_cluster,
            job=job,
        )
    if deployment in (JDS.COMPLETE, JDS.FAILED, JDS.VALIDATION_FAILED):
        failed = ConditionState(FALSE, Reason.JOB_FAILED, message)
        return Observed(Phase.FAILED, failed, failed, 0, job.ray_cluster, job=job)
    try:
        phase, ready, reason = _UNDER_WAY[JDS(deployment)]
    except (ValueError, KeyError):  # a status newer than KubeRay v1.6.1: not started, say
        phase, ready, reason = _UNDER_WAY[JDS.NEW]
    return Observed(
        phase,
        ConditionState(ready, reason, message),
        ConditionState(TRUE, reason, message),
        replicas,
        job.ray_cluster,
        job=job,
    )


def finished_generation(previous: Body) -> int | None:
    """The generation whose run finished, as the status recorded it; None while no run
    has finished."""
    value = (previous.get("job") or {}).get("finishedGeneration")
    return value if isinstance(value, int) else None


def kept_run(previous: Body) -> Observed:
    """A finished run whose RayJob is gone (deleted by hand or by a TTL): the status keeps
    what it recorded, and the run is not made again."""
    job = JobStatus.model_validate(previous.get("job") or {})
    before = {c.get("type"): c for c in previous.get("conditions") or []}
    phase = Phase(previous.get("phase") or Phase.FAILED)
    ready = _state(before.get(ConditionType.READY), Reason.JOB_FAILED)
    progressing = _state(before.get(ConditionType.PROGRESSING), Reason.JOB_FAILED)
    return Observed(phase, ready, progressing, 0, job.ray_cluster, job=job)


def refused_change(observed: Observed, finished_at: int) -> Observed:
    """A spec change after the run finished: the run stays as it was, and Progressing
    says why nothing happens."""
    message = (
        f"the job finished ({observed.phase}) at generation {finished_at}; a finished run is "
        "never changed or re-run. To run again, delete and re-create the LLMDeployment "
        "(the checkpoints claim is kept, so the new run resumes from its checkpoints)"
    )
    return replace(
        observed,
        progressing=ConditionState(FALSE, Reason.JOB_FINISHED_SPEC_CHANGE_REFUSED, message),
    )


# --- spec.storage.modelCache.prefetch: the download Job -----------------------------


@dataclass(frozen=True)
class PrefetchState:
    """Where the download of the model into `path` is: cached, or not (yet) with
    ModelCached's reason and message."""

    path: str
    cached: bool
    condition: ConditionState


def cached(path: str) -> PrefetchState:
    return PrefetchState(path, True, ConditionState(TRUE, Reason.CACHED, f"the model is in {path}"))


def _job_condition(job: Body, kind: KubeJobCondition) -> Body | None:
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("type") == kind and condition.get("status") == TRUE:
            return dict(condition)
    return None


def prefetch_state(job: Body, path: str) -> PrefetchState:
    """A download Job's outcome as the Job controller reports it: Complete or Failed
    (terminal, `True`), else still running (or not started)."""
    name = (job.get("metadata") or {}).get("name", "")
    if _job_condition(job, KubeJobCondition.COMPLETE) is not None:
        return cached(path)
    failed = _job_condition(job, KubeJobCondition.FAILED)
    if failed is not None:
        said = str(failed.get("message") or failed.get("reason") or "the Job failed")
        message = (
            f"Job {name} failed: {said}. Delete the Job to download again, or change "
            "spec.model.source or revision"
        )
        return PrefetchState(
            path, False, ConditionState(FALSE, Reason.DOWNLOAD_FAILED, message[:MAX_MESSAGE])
        )
    active = int((job.get("status") or {}).get("active") or 0)
    doing = f"Job {name} downloads the model into {path}"
    if active == 0:
        doing = f"Job {name} is to download the model into {path} (no pod running yet)"
    return PrefetchState(path, False, ConditionState(FALSE, Reason.DOWNLOADING, doing))


def with_prefetch(
    observed: Observed, cache: PrefetchState, *, ray_exists: bool, previous: Body
) -> Observed:
    """The observed state with the download's: ModelCached, and while the model is not
    cached, Progressing says so; with no Ray resource yet (it waits for the download),
    the phase is Pending and Ready says what it waits for."""
    kept = cache.path if cache.cached else previous.get("cachedModel")
    observed = replace(observed, model_cached=cache.condition, cached_model=kept or None)
    if cache.cached:
        return observed
    waiting = cache.condition
    failed = waiting.reason == Reason.DOWNLOAD_FAILED
    progressing = ConditionState(FALSE if failed else TRUE, waiting.reason, waiting.message)
    if ray_exists:
        return replace(observed, progressing=progressing)
    ready = ConditionState(FALSE, waiting.reason, waiting.message)
    return replace(observed, phase=Phase.PENDING, ready=ready, progressing=progressing)


def _fit_state(fit: MemoryFit) -> ConditionState:
    status = {True: TRUE, False: FALSE, None: UNKNOWN}[fit.fits]
    return ConditionState(status, fit.reason, fit.message[:MAX_MESSAGE])


def merge_conditions(
    previous: Sequence[Body],
    wanted: Mapping[ConditionType, ConditionState],
    generation: int | None,
    now: str,
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
    # JSON mode: the vocabulary's members become the plain strings the API server stores.
    return status.model_dump(mode="json", by_alias=True, exclude_none=True)


# The mode's strategy, by the kind the plan chose: how to read the live Ray child.
OBSERVERS: dict[RayKind, Callable[[Body, int], Observed]] = {
    RayKind.RAY_SERVICE: observe_ray_service,
    RayKind.RAY_CLUSTER: observe_ray_cluster,
    RayKind.RAY_JOB: observe_ray_job,
}


def observe(plan: Plan, live: Body | None, serving_cluster: Body | None = None) -> Observed:
    """What the plan's live Ray child (None: not there) says, in our terms; a RayService's
    ready replicas from its serving cluster's own status when that cluster is given."""
    if live is None:
        return observe_missing(plan.ray_kind)
    observed = OBSERVERS[plan.ray_kind](live, plan.layout.hosts_per_replica)
    if serving_cluster is not None and observed.ready.status is TRUE:
        # KubeRay rewrites a RayService's status only when its conditions, endpoints or
        # applications change (utils/consistency.go), so the copy of the cluster's worker
        # counts in it can stay stale for good; the RayCluster's own status is current.
        counted = _serving_replicas(
            serving_cluster.get("status") or {}, plan.layout.hosts_per_replica
        )
        observed = replace(observed, ready_replicas=counted)
    sharing = plan.layout.replicas_per_pod
    if sharing == 1:
        return observed
    # Replicas sharing a GPU: a Ready pod holds up to `sharing` of them. KubeRay counts
    # pods only, so this is an upper bound, capped by the most replicas the spec allows.
    ready = min(observed.ready_replicas * sharing, plan.max_replicas)
    return replace(observed, ready_replicas=ready)


def _spec_valid_state(observed: Observed) -> ConditionState:
    """Valid, unless the spec asks for what the cluster's missing Gateway API cannot give:
    a route (the Ray resource serves in the cluster meanwhile), or an incremental upgrade
    (the Ray resource is left as it was)."""
    problem = observed.upgrade_problem or observed.route_problem
    if problem is None:
        return ConditionState(TRUE, Reason.VALID, "the spec passed validation")
    return ConditionState(FALSE, Reason.GATEWAY_API_NOT_INSTALLED, problem[:MAX_MESSAGE])


def reconciled_status(
    plan: Plan,
    observed: Observed,
    previous: Body,
    now: str,
    finished_at: int | None = None,
) -> dict[str, Any]:
    """The full status of a valid LLMDeployment given what its child reports;
    `finished_at`, the generation a run finished with (mode Job)."""
    llmd = plan.llmd
    generation = llmd.metadata.generation
    wanted = {
        ConditionType.READY: observed.ready,
        ConditionType.PROGRESSING: observed.progressing,
        ConditionType.SPEC_VALID: _spec_valid_state(observed),
        ConditionType.RESOURCES_FIT: _fit_state(plan.fit),
    }
    conditions: Sequence[Body] = previous.get("conditions") or []
    if observed.model_cached is not None:
        wanted[ConditionType.MODEL_CACHED] = observed.model_cached
    else:  # no prefetch (any more): no condition about one
        conditions = [c for c in conditions if c.get("type") != ConditionType.MODEL_CACHED]
    if observed.upgrading is not None:
        wanted[ConditionType.UPGRADING] = observed.upgrading
    service = plan.serves
    # With an incremental upgrade KubeRay makes no <rayservice>-serve-svc (only one per
    # cluster): the endpoint is its Gateway's, once that has an address.
    serve_service = service and llmd.spec.upgrade_strategy != "NewClusterWithIncrementalUpgrade"
    in_cluster = names.endpoint(llmd.name, llmd.namespace) if serve_service else None
    status = LLMDeploymentStatus(
        phase=observed.phase,
        conditions=merge_conditions(conditions, wanted, generation, now),
        observed_generation=generation,
        model=llmd.served_model_id if llmd.spec.model is not None else None,
        endpoint=observed.external_endpoint or in_cluster,
        ray_service=names.ray_service_name(llmd.name) if service else None,
        http_route=observed.http_route,
        cached_model=observed.cached_model,
        ray_job=names.ray_job_name(llmd.name) if plan.runs_to_completion else None,
        job=(
            None
            if observed.job is None
            else observed.job.model_copy(update={"finished_generation": finished_at})
        ),
        ray_cluster=observed.ray_cluster,
        gpus_per_replica=plan.gpus_per_replica,
        replicas=ReplicaStatus(desired=plan.min_replicas, ready=observed.ready_replicas),
        gcs_fault_tolerance=gcs_fault_tolerance_state(
            llmd.spec.ray_cluster.gcs_fault_tolerance is not None, observed.gcs_fault_tolerance
        ),
        upgrade=observed.upgrade,
    )
    return _dump(status)


def invalid_status(
    problems: str, generation: int | None, previous: Body, now: str
) -> dict[str, Any]:
    """Status for a spec that failed validation: the children keep running as they were.

    Children exist once a valid spec was applied, which is when status first names them.
    """
    applied = bool(
        previous.get("rayService") or previous.get("rayCluster") or previous.get("rayJob")
    )
    wanted = {
        ConditionType.SPEC_VALID: ConditionState(FALSE, Reason.INVALID_SPEC, problems[:MAX_MESSAGE])
    }
    if not applied:
        wanted[ConditionType.READY] = ConditionState(
            FALSE, Reason.INVALID_SPEC, "fix the spec; nothing was created"
        )
        wanted[ConditionType.PROGRESSING] = ConditionState(
            FALSE, Reason.INVALID_SPEC, "waiting for a valid spec"
        )
    kept = {k: v for k, v in previous.items() if k not in ("conditions", "observedGeneration")}
    status = LLMDeploymentStatus.model_validate(kept)
    if not applied:
        status.phase = Phase.FAILED
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
        ConditionType.READY: ConditionState(
            FALSE, Reason.KUBERAY_NOT_INSTALLED, message[:MAX_MESSAGE]
        ),
        ConditionType.PROGRESSING: ConditionState(
            FALSE, Reason.KUBERAY_NOT_INSTALLED, "waiting for KubeRay's CRDs to be installed"
        ),
    }
    kept = {k: v for k, v in previous.items() if k != "conditions"}
    status = LLMDeploymentStatus.model_validate(kept)
    status.phase = Phase.PENDING
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
    patch.update(
        {
            key: _merge_diff(previous.get(key), value)
            for key, value in current.items()
            if previous.get(key) != value
        }
    )
    return patch or None


def _merge_diff(before: Any, after: Any) -> Any:
    """A merge patch's value from `before` to `after`: a map names each key it drops with
    null, or the API server keeps it (a finished upgrade's `pending` would stay forever);
    anything else is replaced whole."""
    if not (isinstance(before, Mapping) and isinstance(after, Mapping)):
        return after
    diff: dict[str, Any] = {key: None for key in before if key not in after}
    diff.update(
        {
            key: _merge_diff(before.get(key), value)
            for key, value in after.items()
            if before.get(key) != value
        }
    )
    return diff
