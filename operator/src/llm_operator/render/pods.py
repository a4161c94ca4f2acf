"""Head and GPU worker groups of the Ray cluster: pod templates, volumes, scheduling."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from llm_operator.api.constants import CHECKPOINT_DIR_ENV, MODEL_SOURCE_ENV
from llm_operator.api.models import (
    LLMDeployment,
    PodResourcesSpec,
    ResourceRequirements,
    Toleration,
    VolumeSpec,
)
from llm_operator.api.plan import FallbackGroup, GpuRole, Plan
from llm_operator.render import names
from llm_operator.render.sources import ModelSource, optional_model_source, serving_source
from llm_operator.settings import OperatorSettings
from llm_operator.yamlio import Manifest

RAY_PORTS: tuple[tuple[str, int], ...] = (
    ("gcs-server", 6379),
    ("dashboard", 8265),
    ("client", 10001),
)
METRICS_PATH = "/metrics"


def container_security() -> Manifest:
    """The security context of every container the operator renders."""
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _quantities(values: dict[str, int | str]) -> dict[str, str]:
    return {key: str(value) for key, value in values.items()}


def _requirements(spec: ResourceRequirements) -> Manifest:
    out: Manifest = {}
    if spec.requests:
        out["requests"] = _quantities(spec.requests)
    if spec.limits:
        out["limits"] = _quantities(spec.limits)
    return out


def head_resources(spec: ResourceRequirements, settings: OperatorSettings) -> Manifest:
    """The user's head resources, or the operator's defaults; never a GPU."""
    if spec.requests or spec.limits:
        return _requirements(spec)
    defaults = {"cpu": settings.head_cpu, "memory": settings.head_memory}
    return {"requests": dict(defaults), "limits": dict(defaults)}


def autoscaler_resources(spec: ResourceRequirements, settings: OperatorSettings) -> Manifest:
    """KubeRay's autoscaler sidecar: the user's resources, or the operator's default."""
    return _requirements(spec if spec.requests or spec.limits else settings.autoscaler_resources)


def worker_resources(
    spec: ResourceRequirements, gpu_resource: str, gpus: int, settings: OperatorSettings
) -> Manifest:
    """The user's CPU and memory (or defaults per GPU) plus the derived GPU count."""
    if spec.requests or spec.limits:
        requests = _quantities(spec.requests)
        limits = _quantities(spec.limits)
    else:
        base = {
            "cpu": str(settings.worker_cpu_per_gpu * gpus),
            "memory": f"{settings.worker_memory_gib_per_gpu * gpus}Gi",
        }
        requests, limits = dict(base), dict(base)
    # Extended resources need requests equal to limits.
    requests[gpu_resource] = str(gpus)
    limits[gpu_resource] = str(gpus)
    return {"requests": requests, "limits": limits}


def _claim_volume(name: str, claim: str, *, read_only: bool = False) -> Manifest:
    source: Manifest = {"claimName": claim}
    if read_only:
        source["readOnly"] = True
    return {"name": name, "persistentVolumeClaim": source}


def claim_name(volume: VolumeSpec, default_name: str) -> str:
    return volume.existing_claim or default_name


def _volumes_and_mounts(
    llmd: LLMDeployment, source: ModelSource | None, *, shm: bool
) -> tuple[list[Manifest], list[Manifest]]:
    storage = llmd.spec.storage
    volumes: list[Manifest] = []
    mounts: list[Manifest] = []
    if storage.model_cache is not None:
        claim = claim_name(storage.model_cache, names.model_cache_claim(llmd.name))
        volumes.append(_claim_volume(names.MODEL_CACHE_VOLUME, claim))
        mounts.append(
            {"name": names.MODEL_CACHE_VOLUME, "mountPath": storage.model_cache.mount_path}
        )
    if storage.checkpoints is not None:
        claim = claim_name(storage.checkpoints, names.checkpoints_claim(llmd.name))
        volumes.append(_claim_volume(names.CHECKPOINTS_VOLUME, claim))
        mounts.append(
            {"name": names.CHECKPOINTS_VOLUME, "mountPath": storage.checkpoints.mount_path}
        )
    if source is not None and source.claim is not None:
        volume, mount = source_volume(source.claim)
        volumes.append(volume)
        mounts.append(mount)
    if shm:
        # NCCL and the Ray object store need more shared memory than the runtime's 64Mi.
        volumes.append({"name": names.SHM_VOLUME, "emptyDir": {"medium": "Memory"}})
        mounts.append({"name": names.SHM_VOLUME, "mountPath": "/dev/shm"})
    return volumes, mounts


def source_volume(claim: str) -> tuple[Manifest, Manifest]:
    """The pvc:// source claim, read-only at the model-source mount: volume and mount."""
    mount = {
        "name": names.MODEL_SOURCE_VOLUME,
        "mountPath": names.MODEL_SOURCE_MOUNT,
        "readOnly": True,
    }
    return _claim_volume(names.MODEL_SOURCE_VOLUME, claim, read_only=True), mount


def job_env(llmd: LLMDeployment) -> list[Manifest]:
    """What a job's entrypoint reads (mode Job): the checkpoint directory, on the
    checkpoints claim, and the base model's source (a local path for pvc://)."""
    env: list[Manifest] = []
    checkpoints = llmd.spec.storage.checkpoints
    if checkpoints is not None:
        env.append({"name": CHECKPOINT_DIR_ENV, "value": checkpoints.mount_path})
    source = optional_model_source(llmd)
    if source is not None:
        env.append({"name": MODEL_SOURCE_ENV, "value": source.model_source})
    return env


def hub_token_env(llmd: LLMDeployment) -> list[Manifest]:
    """HF_TOKEN from the model's tokenSecretRef, by reference (never read), or nothing."""
    model = llmd.spec.model
    token = None if model is None else model.token_secret_ref
    if token is None:
        return []
    ref = {"name": token.name, "key": token.key}
    return [{"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": ref}}]


def container_env(plan: Plan) -> list[Manifest]:
    """Operator-set variables first, then the user's (validation forbids overlaps)."""
    llmd = plan.llmd
    env: list[Manifest] = hub_token_env(llmd)
    cache = llmd.spec.storage.model_cache
    if cache is not None:
        env.append({"name": "HF_HOME", "value": cache.mount_path})
    if plan.runs_to_completion:
        env.extend(job_env(llmd))
    env.extend(e.model_dump(by_alias=True, exclude_none=True) for e in llmd.spec.ray_cluster.env)
    return env


def _pod_metadata(llmd: LLMDeployment, component: str) -> Manifest:
    spec = llmd.spec
    annotations = dict(spec.ray_cluster.pod_annotations)
    if spec.monitoring.prometheus:
        annotations.update(
            {
                "prometheus.io/scrape": "true",
                "prometheus.io/port": str(names.METRICS_PORT),
                "prometheus.io/path": METRICS_PATH,
            }
        )
    labels = {**spec.ray_cluster.pod_labels, **names.labels(llmd.name, component)}
    meta: Manifest = {"labels": labels}
    if annotations:
        meta["annotations"] = annotations
    return meta


def _ports(plan: Plan, *, head: bool) -> list[Manifest]:
    ports = [{"name": n, "containerPort": p} for n, p in RAY_PORTS] if head else []
    if plan.serves:
        ports.append({"name": "serve", "containerPort": names.SERVE_PORT})
    if plan.llmd.spec.monitoring.prometheus:
        ports.append({"name": "metrics", "containerPort": names.METRICS_PORT})
    return ports


def _pod_spec(
    plan: Plan,
    settings: OperatorSettings,
    *,
    head: bool,
    resources: Manifest,
    placement: PodResourcesSpec,
    node_selector: dict[str, str],
    tolerations: list[Manifest],
) -> Manifest:
    """A Ray pod: its one container and its volumes (shared memory for the workers only),
    then the placement fields that are set."""
    llmd = plan.llmd
    volumes, mounts = _volumes_and_mounts(llmd, serving_source(llmd), shm=not head)
    container = _container(
        plan,
        settings,
        name=names.HEAD_CONTAINER if head else names.WORKER_CONTAINER,
        resources=resources,
        mounts=mounts,
        head=head,
    )
    cluster = llmd.spec.ray_cluster
    pod: Manifest = {"containers": [container]}
    if volumes:
        pod["volumes"] = volumes
    if cluster.service_account_name:
        pod["serviceAccountName"] = cluster.service_account_name
    if cluster.image_pull_secrets:
        pod["imagePullSecrets"] = [{"name": s.name} for s in cluster.image_pull_secrets]
    if node_selector:
        pod["nodeSelector"] = node_selector
    if tolerations:
        pod["tolerations"] = tolerations
    if placement.affinity is not None:
        pod["affinity"] = placement.affinity.model_dump(by_alias=True, exclude_defaults=True)
    if placement.priority_class_name:
        pod["priorityClassName"] = placement.priority_class_name
    return pod


def _tolerations(tolerations: list[Toleration]) -> list[Manifest]:
    return [t.model_dump(by_alias=True, exclude_none=True) for t in tolerations]


def _container(
    plan: Plan,
    settings: OperatorSettings,
    *,
    name: str,
    resources: Manifest,
    mounts: list[Manifest],
    head: bool,
) -> Manifest:
    container: Manifest = {
        "name": name,
        "image": plan.llmd.spec.ray_cluster.image or settings.ray_image,
        "resources": resources,
        "ports": _ports(plan, head=head),
        "securityContext": container_security(),
    }
    env = container_env(plan)
    if env:
        container["env"] = env
    if mounts:
        container["volumeMounts"] = mounts
    return container


def ray_start_params(llmd: LLMDeployment, *, head: bool) -> dict[str, str]:
    params: dict[str, str] = {}
    if head:
        # No model replica may land on the head: it advertises no GPUs to Ray.
        params["num-gpus"] = "0"
        params["dashboard-host"] = "0.0.0.0"
    if llmd.spec.monitoring.prometheus:
        params["metrics-export-port"] = str(names.METRICS_PORT)
    return params


def head_group(plan: Plan, settings: OperatorSettings) -> Manifest:
    """The head: the user's resources and placement only (no GPU selector or toleration)."""
    llmd = plan.llmd
    head = llmd.spec.ray_cluster.head
    pod = _pod_spec(
        plan,
        settings,
        head=True,
        resources=head_resources(head.resources, settings),
        placement=head,
        node_selector=dict(head.node_selector),
        tolerations=_tolerations(head.tolerations),
    )
    return {
        "rayStartParams": ray_start_params(llmd, head=True),
        "template": {"metadata": _pod_metadata(llmd, "ray-head"), "spec": pod},
    }


def gpu_tolerations(llmd: LLMDeployment, resource_name: str | None = None) -> list[Manifest]:
    """The accelerator's tolerations, then the worker's own, then one for the GPU
    resource's usual NoSchedule taint (the group's own resource: the preferred type's by
    default); each once."""
    accelerator = llmd.spec.accelerator
    tolerations: list[Manifest] = []
    gpu_taint = {
        "key": resource_name or accelerator.resource_name,
        "operator": "Exists",
        "effect": "NoSchedule",
    }
    for toleration in [
        *_tolerations(accelerator.tolerations),
        *_tolerations(llmd.spec.ray_cluster.worker.tolerations),
        gpu_taint,
    ]:
        if toleration not in tolerations:
            tolerations.append(toleration)
    return tolerations


def gpu_node_selector(
    llmd: LLMDeployment, settings: OperatorSettings, target: GpuTarget | None = None
) -> dict[str, str]:
    """The worker's own node labels, then the accelerator's, which win on a shared key
    (the CRD refuses one with spec.accelerator.nodeSelector; the operator's default
    accelerator label may still meet one). `target`: a fallback type's group."""
    target = target or preferred_target(llmd)
    own = dict(target.node_selector) or {settings.accelerator_node_label: target.accelerator_type}
    return {**llmd.spec.ray_cluster.worker.node_selector, **own}


@dataclass(frozen=True)
class GpuTarget:
    """The nodes one GPU worker group runs on: an accelerator type, its GPU resource and
    node labels, and the group's name and bounds."""

    group_name: str
    accelerator_type: str
    resource_name: str
    node_selector: Mapping[str, str]
    min_replicas: int
    max_replicas: int


def preferred_target(llmd: LLMDeployment, role: GpuRole | None = None) -> GpuTarget:
    accelerator = llmd.spec.accelerator
    return GpuTarget(
        names.worker_group(None if role is None else role.name),
        accelerator.type,
        accelerator.resource_name,
        accelerator.node_selector,
        0 if role is None else role.min_replicas,
        0 if role is None else role.max_replicas,
    )


def fallback_target(fallback: FallbackGroup) -> GpuTarget:
    """A fallback type's group starts at no pods: the preferred group holds the minimum,
    the autoscaler adds pods here when it picks this type."""
    accelerator = fallback.accelerator
    return GpuTarget(
        names.fallback_worker_group(accelerator.type),
        accelerator.type,
        accelerator.resource_name,
        fallback.node_selector,
        0,
        fallback.max_replicas,
    )


def worker_group(
    plan: Plan, role: GpuRole, settings: OperatorSettings, target: GpuTarget | None = None
) -> Manifest:
    """One GPU worker group, for one role of the plan (on the preferred accelerator, or
    the `target` fallback type); a group replica is one model replica (or one engine of a
    prefill/decode side) of `numOfHosts` pods."""
    llmd, layout = plan.llmd, role.layout
    target = target or preferred_target(llmd, role)
    spec = llmd.spec
    pod = _pod_spec(
        plan,
        settings,
        head=False,
        resources=worker_resources(
            spec.ray_cluster.worker.resources,
            target.resource_name,
            layout.gpus_per_host,
            settings,
        ),
        placement=spec.ray_cluster.worker,
        node_selector=gpu_node_selector(llmd, settings, target),
        tolerations=gpu_tolerations(llmd, target.resource_name),
    )
    # Ray resources the autoscaler plans with, matching the Serve placement group.
    resources = {
        "GPU": str(layout.gpus_per_host),
        f"accelerator_type:{target.accelerator_type}": "1",
    }
    group_resource = names.role_resource(role.name)
    if group_resource is not None:
        resources[group_resource] = str(layout.gpus_per_host)
    return {
        "groupName": target.group_name,
        "replicas": layout.worker_group_replicas(target.min_replicas),
        "minReplicas": layout.worker_group_replicas(target.min_replicas),
        "maxReplicas": layout.worker_group_replicas(target.max_replicas),
        "numOfHosts": layout.hosts_per_replica,
        "rayStartParams": ray_start_params(llmd, head=False),
        "resources": resources,
        "template": {"metadata": _pod_metadata(llmd, "ray-worker"), "spec": pod},
    }


def worker_groups(plan: Plan, settings: OperatorSettings) -> list[Manifest]:
    """A GPU worker group per role of the plan, in the plan's order, then one per fallback
    accelerator type in preference order (after the preferred group: KubeRay keeps a
    serving cluster when groups are only appended)."""
    groups = [worker_group(plan, role, settings) for role in plan.roles]
    if plan.fallbacks:
        whole = plan.role(None)
        # Same pods per replica on every type (validation), so the role's layout holds.
        groups += [
            worker_group(plan, whole, settings, fallback_target(fallback))
            for fallback in plan.fallbacks
        ]
    return groups


# The submitter only runs `ray job submit` and follows the logs. KubeRay's own default
# (common/job.go, GetDefaultSubmitterContainer: requests 500m/200Mi, limits 1/1Gi) asks
# for more CPU than that waiting needs; this leaves room beside the head on small nodes.
SUBMITTER_RESOURCES: Manifest = {
    "requests": {"cpu": "100m", "memory": "256Mi"},
    "limits": {"cpu": "1", "memory": "1Gi"},
}


def submitter_template(plan: Plan, settings: OperatorSettings) -> Manifest:
    """KubeRay's submitter pod (mode Job), with the Ray image and the containers' security
    context. No command: KubeRay fills in `ray job submit` for the entrypoint."""
    llmd = plan.llmd
    job = llmd.spec.job
    resources = (
        _requirements(job.submitter_resources)
        if job is not None
        and job.submitter_resources is not None
        and (job.submitter_resources.requests or job.submitter_resources.limits)
        else SUBMITTER_RESOURCES
    )
    cluster = llmd.spec.ray_cluster
    container: Manifest = {
        "name": names.SUBMITTER_CONTAINER,
        "image": cluster.image or settings.ray_image,
        "resources": resources,
        "securityContext": container_security(),
    }
    pod: Manifest = {
        "restartPolicy": "Never",
        "containers": [container],
        **pull_and_account(llmd),
        **head_placement(llmd),
    }
    labels = {**cluster.pod_labels, **names.labels(llmd.name, "ray-job-submitter")}
    return {"metadata": {"labels": labels}, "spec": pod}


def pull_and_account(llmd: LLMDeployment) -> Manifest:
    """The Ray pods' service account and image pull secrets, for a pod of the operator's
    own (the job submitter, the prefetch Job)."""
    cluster = llmd.spec.ray_cluster
    pod: Manifest = {}
    if cluster.service_account_name:
        pod["serviceAccountName"] = cluster.service_account_name
    if cluster.image_pull_secrets:
        pod["imagePullSecrets"] = [{"name": s.name} for s in cluster.image_pull_secrets]
    return pod


def head_placement(llmd: LLMDeployment) -> Manifest:
    """Beside the head: its node selector and tolerations, never the GPU nodes'."""
    head = llmd.spec.ray_cluster.head
    pod: Manifest = {}
    if head.node_selector:
        pod["nodeSelector"] = dict(head.node_selector)
    if head.tolerations:
        pod["tolerations"] = _tolerations(head.tolerations)
    return pod
