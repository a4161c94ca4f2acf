"""The status vocabulary of LLMDeployment: phases, condition types and statuses, and the
reasons the operator writes. Status folding, Events, metrics and the CRD read them here.

They are `StrEnum`s, so each member is its wire string: a status read back from the API
server compares equal to the member, and JSON and YAML write the plain value.
"""

from __future__ import annotations

from enum import StrEnum, unique


@unique
class Phase(StrEnum):
    """`status.phase`, in the order a deployment usually passes through them."""

    PENDING = "Pending"
    PROGRESSING = "Progressing"
    READY = "Ready"
    DEGRADED = "Degraded"
    FAILED = "Failed"
    # Mode Job only: its run is under way, or finished well.
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"


# Phases worth a Warning Event rather than a Normal one.
WARNING_PHASES = frozenset({Phase.DEGRADED, Phase.FAILED})


@unique
class ConditionType(StrEnum):
    READY = "Ready"
    PROGRESSING = "Progressing"
    SPEC_VALID = "SpecValid"
    RESOURCES_FIT = "ResourcesFit"
    # Only with spec.storage.modelCache.prefetch: the download Job's outcome.
    MODEL_CACHED = "ModelCached"
    # Mode Service: whether KubeRay is moving the model to a new Ray cluster.
    UPGRADING = "Upgrading"


@unique
class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


@unique
class GcsFaultToleranceState(StrEnum):
    ENABLED = "Enabled"
    DISABLED = "Disabled"
    PENDING = "Pending"


@unique
class Reason(StrEnum):
    """Reasons of the operator's own making. KubeRay's reasons pass through as KubeRay
    wrote them, and the memory fit's come from `sizing`."""

    VALID = "Valid"
    INVALID_SPEC = "InvalidSpec"
    KUBERAY_NOT_INSTALLED = "KubeRayNotInstalled"
    GATEWAY_API_NOT_INSTALLED = "GatewayAPINotInstalled"
    CHILD_MISSING = "ChildMissing"
    CREATING = "Creating"
    WAITING_FOR_KUBERAY = "WaitingForKubeRay"
    STABLE = "Stable"
    UPGRADE_IN_PROGRESS = "UpgradeInProgress"
    SERVE_APPLICATION_FAILED = "ServeApplicationFailed"
    REPLICA_FAILURE = "ReplicaFailure"
    HEAD_POD_READY = "HeadPodReady"
    WAITING_FOR_HEAD_POD = "WaitingForHeadPod"
    RAY_CLUSTER_READY = "RayClusterReady"
    RAY_CLUSTER_FAILED = "RayClusterFailed"
    SUSPENDED = "Suspended"
    # Upgrading: KubeRay serves from an active and a pending cluster (NewCluster), shifts
    # traffic between them (NewClusterWithIncrementalUpgrade), or rolls that back; else
    # no upgrade, or the first cluster of the RayService is still starting.
    NEW_CLUSTER_STARTING = "NewClusterStarting"
    MIGRATING_TRAFFIC = "MigratingTraffic"
    ROLLING_BACK = "RollingBack"
    NO_UPGRADE = "NoUpgrade"
    FIRST_CLUSTER_STARTING = "FirstClusterStarting"
    # Mode Job: where the run is, as folded from KubeRay's jobDeploymentStatus/jobStatus.
    JOB_PENDING = "JobPending"
    JOB_RUNNING = "JobRunning"
    JOB_RETRYING = "JobRetrying"
    JOB_SUCCEEDED = "JobSucceeded"
    JOB_FAILED = "JobFailed"
    # A finished run is a record: a later spec change is not applied (see README, mode Job).
    JOB_FINISHED_SPEC_CHANGE_REFUSED = "JobFinishedSpecChangeRefused"
    # spec.storage.modelCache.prefetch: the download Job runs, finished, or failed.
    DOWNLOADING = "Downloading"
    CACHED = "Cached"
    DOWNLOAD_FAILED = "DownloadFailed"


@unique
class KubeJobCondition(StrEnum):
    """The `batch/v1` Job conditions that end a Job (k8s.io/api batch/v1 types.go):
    `Complete` and `Failed`, each `True` once the Job controller decides."""

    COMPLETE = "Complete"
    FAILED = "Failed"


@unique
class RayKind(StrEnum):
    """The KubeRay kind an LLMDeployment becomes: `spec.mode` Service, Cluster or Job."""

    RAY_SERVICE = "RayService"
    RAY_CLUSTER = "RayCluster"
    RAY_JOB = "RayJob"


@unique
class KubeRayJobDeploymentStatus(StrEnum):
    """KubeRay's `RayJob.status.jobDeploymentStatus` (ray-operator v1.6.1,
    apis/ray/v1/rayjob_types.go; "" is JobDeploymentStatusNew)."""

    NEW = ""
    INITIALIZING = "Initializing"
    RUNNING = "Running"
    COMPLETE = "Complete"
    FAILED = "Failed"
    VALIDATION_FAILED = "ValidationFailed"
    SUSPENDING = "Suspending"
    SUSPENDED = "Suspended"
    RETRYING = "Retrying"
    WAITING = "Waiting"


# KubeRay's IsJobDeploymentTerminal: after these KubeRay does nothing more with the RayJob.
TERMINAL_JOB_DEPLOYMENT_STATUSES = frozenset(
    {KubeRayJobDeploymentStatus.COMPLETE, KubeRayJobDeploymentStatus.FAILED}
)


@unique
class KubeRayJobStatus(StrEnum):
    """KubeRay's `RayJob.status.jobStatus`, Ray's own job states (same source)."""

    NEW = ""
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    STOPPED = "STOPPED"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
