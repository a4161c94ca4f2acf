"""Assemble the children of an LLMDeployment, in apply order."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from llm_operator.api.models import GcsFaultToleranceSpec, LLMDeployment, VolumeSpec
from llm_operator.api.plan import Plan
from llm_operator.api.vocabulary import RayKind
from llm_operator.render import names
from llm_operator.render.pods import (
    autoscaler_resources,
    head_group,
    submitter_template,
    worker_groups,
)
from llm_operator.render.prefetch import prefetch_job
from llm_operator.render.route import http_route
from llm_operator.render.serve import serve_config_yaml
from llm_operator.settings import OperatorSettings
from llm_operator.yamlio import Manifest
from llm_operator.yamlio import dump as yaml_dump


def _metadata(llmd: LLMDeployment, name: str, component: str) -> Manifest:
    return {"name": name, "namespace": llmd.namespace, "labels": names.labels(llmd.name, component)}


def persistent_volume_claim(
    llmd: LLMDeployment, volume: VolumeSpec, name: str, component: str
) -> Manifest:
    meta = _metadata(llmd, name, component)
    if volume.retain_on_delete:
        # Not owned, so garbage collection keeps it; the annotation says why.
        meta["annotations"] = {names.RETAIN_ANNOTATION: "true"}
    spec: Manifest = {
        "accessModes": list(volume.access_modes),
        "resources": {"requests": {"storage": str(volume.size)}},
    }
    if volume.storage_class_name:
        spec["storageClassName"] = volume.storage_class_name
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": meta, "spec": spec}


def claims(llmd: LLMDeployment) -> list[Manifest]:
    """Claims the operator creates: those without an existingClaim."""
    storage = llmd.spec.storage
    out: list[Manifest] = []
    if storage.model_cache is not None and not storage.model_cache.existing_claim:
        out.append(
            persistent_volume_claim(
                llmd, storage.model_cache, names.model_cache_claim(llmd.name), "model-cache"
            )
        )
    if storage.checkpoints is not None and not storage.checkpoints.existing_claim:
        out.append(
            persistent_volume_claim(
                llmd, storage.checkpoints, names.checkpoints_claim(llmd.name), "checkpoints"
            )
        )
    return out


def ray_cluster_spec(plan: Plan, settings: OperatorSettings) -> Manifest:
    cluster = plan.llmd.spec.ray_cluster
    spec: Manifest = {
        "rayVersion": cluster.ray_version or settings.ray_version,
        "enableInTreeAutoscaling": True,
        "autoscalerOptions": {
            "idleTimeoutSeconds": cluster.autoscaler.idle_timeout_seconds,
            "upscalingMode": cluster.autoscaler.upscaling_mode,
            "resources": autoscaler_resources(cluster.autoscaler.resources, settings),
        },
    }
    if cluster.gcs_fault_tolerance is not None:
        spec["gcsFaultToleranceOptions"] = gcs_fault_tolerance_options(cluster.gcs_fault_tolerance)
    spec["headGroupSpec"] = head_group(plan, settings)
    spec["workerGroupSpecs"] = worker_groups(plan, settings)
    return spec


def gcs_fault_tolerance_options(gcs: GcsFaultToleranceSpec) -> Manifest:
    """KubeRay's gcsFaultToleranceOptions: it sets RAY_REDIS_ADDRESS, REDIS_PASSWORD (from
    the Secret) and the storage namespace on the head, and a longer GCS reconnect timeout
    on the workers."""
    options: Manifest = {"redisAddress": gcs.redis_address}
    secret = gcs.redis_password_secret_ref
    if secret is not None:
        options["redisPassword"] = {
            "valueFrom": {"secretKeyRef": {"name": secret.name, "key": secret.key}}
        }
    if gcs.external_storage_namespace is not None:
        options["externalStorageNamespace"] = gcs.external_storage_namespace
    return options


def _ray_object(
    kind: RayKind, llmd: LLMDeployment, name: str, component: str, spec: Manifest
) -> Manifest:
    return {
        "apiVersion": names.RAY_API_VERSION,
        "kind": kind.value,
        "metadata": _metadata(llmd, name, component),
        "spec": spec,
    }


def ray_service(plan: Plan, settings: OperatorSettings) -> Manifest:
    llmd = plan.llmd
    spec = {
        "serveConfigV2": serve_config_yaml(plan),
        "rayClusterConfig": ray_cluster_spec(plan, settings),
        "upgradeStrategy": upgrade_strategy(llmd),
    }
    name = names.ray_service_name(llmd.name)
    return _ray_object(RayKind.RAY_SERVICE, llmd, name, "ray-service", spec)


def upgrade_strategy(llmd: LLMDeployment) -> Manifest:
    strategy: Manifest = {"type": llmd.spec.upgrade_strategy}
    options = llmd.spec.incremental_upgrade
    if llmd.spec.upgrade_strategy == "NewClusterWithIncrementalUpgrade" and options is not None:
        strategy["clusterUpgradeOptions"] = {
            "gatewayClassName": options.gateway_class_name,
            "stepSizePercent": options.step_size_percent,
            "intervalSeconds": options.interval_seconds,
            "maxSurgePercent": options.max_surge_percent,
        }
    return strategy


def ray_cluster(plan: Plan, settings: OperatorSettings) -> Manifest:
    llmd = plan.llmd
    name = names.ray_cluster_name(llmd.name)
    spec = ray_cluster_spec(plan, settings)
    return _ray_object(RayKind.RAY_CLUSTER, llmd, name, "ray-cluster", spec)


def ray_job(plan: Plan, settings: OperatorSettings) -> Manifest:
    """A RayJob: KubeRay makes a Ray cluster of the same head and GPU worker groups as
    mode Cluster, submits the entrypoint from a submitter pod, reports the outcome and
    (by default) deletes the cluster. Each of KubeRay's retries is a new cluster, which
    finds the checkpoints of the earlier attempts on the checkpoints claim."""
    llmd = plan.llmd
    job = llmd.spec.job
    if job is None:
        raise ValueError("mode Job needs spec.job (validation requires it)")
    spec: Manifest = {"entrypoint": job.entrypoint}
    if job.runtime_env is not None:
        spec["runtimeEnvYAML"] = yaml_dump(job.runtime_env)
    if job.active_deadline_seconds is not None:
        spec["activeDeadlineSeconds"] = job.active_deadline_seconds
    if job.backoff_limit is not None:
        spec["backoffLimit"] = job.backoff_limit
    spec["shutdownAfterJobFinishes"] = job.shutdown_after_job_finishes
    if job.ttl_seconds_after_finished is not None:
        spec["ttlSecondsAfterFinished"] = job.ttl_seconds_after_finished
    # Always written: the apply only adds what it names, so `false` must be said to resume.
    spec["suspend"] = job.suspend
    spec["submitterPodTemplate"] = submitter_template(plan, settings)
    spec["rayClusterSpec"] = ray_cluster_spec(plan, settings)
    return _ray_object(RayKind.RAY_JOB, llmd, names.ray_job_name(llmd.name), "ray-job", spec)


# The mode's strategy, by the kind the plan chose: which Ray child to build.
RAY_CHILD: dict[RayKind, Callable[[Plan, OperatorSettings], Manifest]] = {
    RayKind.RAY_SERVICE: ray_service,
    RayKind.RAY_CLUSTER: ray_cluster,
    RayKind.RAY_JOB: ray_job,
}


@dataclass(frozen=True)
class Children:
    """The children of one LLMDeployment, by type: the claims the operator creates and
    the one Ray resource (a RayService, RayCluster or RayJob, as `kind` says)."""

    claims: tuple[Manifest, ...]
    ray: Manifest
    kind: RayKind
    # The HTTPRoute of spec.exposure.gateway; None when the spec asks for none.
    route: Manifest | None = None
    # The download Job of spec.storage.modelCache.prefetch; None without prefetch. The
    # operator applies the Ray resource only once this Job has cached the model.
    prefetch: Manifest | None = None

    def in_apply_order(self) -> list[Manifest]:
        """Claims first (pods mount them), then the prefetch Job (the Ray resource waits
        for it), then the Ray resource, then the route to the Service KubeRay makes for
        it."""
        return [
            *self.claims,
            *([] if self.prefetch is None else [self.prefetch]),
            self.ray,
            *([] if self.route is None else [self.route]),
        ]


def render_children(plan: Plan, settings: OperatorSettings | None = None) -> Children:
    """Every child of a resolved plan."""
    settings = settings or OperatorSettings()
    ray = RAY_CHILD[plan.ray_kind](plan, settings)
    llmd = plan.llmd
    return Children(
        tuple(claims(llmd)), ray, plan.ray_kind, http_route(llmd), prefetch_job(llmd, settings)
    )


def render(plan: Plan, settings: OperatorSettings | None = None) -> list[Manifest]:
    """All children in apply order: claims first (pods mount them), then the prefetch Job,
    the Ray resource and the route."""
    return render_children(plan, settings).in_apply_order()


def is_retained(child: Manifest) -> bool:
    annotations = child.get("metadata", {}).get("annotations", {})
    return bool(annotations.get(names.RETAIN_ANNOTATION) == "true")
