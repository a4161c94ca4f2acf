"""The model-cache prefetch (spec.storage.modelCache.prefetch): a `batch/v1` Job that
downloads the model into the cache claim before the Ray resource exists, and the path
on that claim the Ray pods then load it from."""

from __future__ import annotations

from typing import Final

from llm_operator.api.models import LLMDeployment, PrefetchJobSpec
from llm_operator.render import names
from llm_operator.render.download_program import PROGRAM
from llm_operator.render.pods import (
    claim_name,
    container_security,
    head_placement,
    hub_token_env,
    pull_and_account,
    source_volume,
)
from llm_operator.render.sources import ModelSource, Prefetch, parse_source, prefetch_of
from llm_operator.settings import OperatorSettings
from llm_operator.yamlio import Manifest

COMPONENT: Final = "model-prefetch"
CONTAINER: Final = "model-prefetch"
# A download moves bytes; it needs little CPU and memory (huggingface_hub streams files).
RESOURCES: Final[Manifest] = {
    "requests": {"cpu": "500m", "memory": "1Gi"},
    "limits": {"cpu": "2", "memory": "4Gi"},
}


def job_name(deployment: str, prefetch: Prefetch) -> str:
    return names.prefetch_job_name(deployment, prefetch.key)


def _env(llmd: LLMDeployment, prefetch: Prefetch, local: ModelSource) -> list[Manifest]:
    env: list[Manifest] = [
        {"name": "LLMOP_SOURCE", "value": prefetch.source},
        {"name": "LLMOP_REVISION", "value": prefetch.revision},
        {"name": "LLMOP_TARGET", "value": prefetch.path},
    ]
    if local.claim is not None:
        env.append({"name": "LLMOP_LOCAL_SOURCE", "value": local.model_source})
    env.extend(hub_token_env(llmd))
    env.append({"name": "HF_HOME", "value": prefetch.cache.mount_path})
    # The Ray pods' own variables too: cloud credentials for s3:// and gs:// come this way.
    env.extend(e.model_dump(by_alias=True, exclude_none=True) for e in llmd.spec.ray_cluster.env)
    return env


def _job_spec(options: PrefetchJobSpec, pod: Manifest) -> Manifest:
    return {
        "backoffLimit": options.backoff_limit,
        "activeDeadlineSeconds": options.active_deadline_seconds,
        "template": pod,
    }


def prefetch_job(llmd: LLMDeployment, settings: OperatorSettings) -> Manifest | None:
    """The download Job, or None without prefetch. It runs the Ray image's Python with
    the cache claim at the Ray pods' mount path (and a pvc:// source claim read-only),
    the Ray containers' security context, beside the head (never on GPU nodes)."""
    prefetch = prefetch_of(llmd)
    if prefetch is None:
        return None
    local = parse_source(prefetch.source)
    cache = prefetch.cache
    volumes = [
        {
            "name": names.MODEL_CACHE_VOLUME,
            "persistentVolumeClaim": {
                "claimName": claim_name(cache, names.model_cache_claim(llmd.name))
            },
        }
    ]
    mounts = [{"name": names.MODEL_CACHE_VOLUME, "mountPath": cache.mount_path}]
    if local.claim is not None:
        volume, mount = source_volume(local.claim)
        volumes.append(volume)
        mounts.append(mount)
    cluster = llmd.spec.ray_cluster
    container: Manifest = {
        "name": CONTAINER,
        "image": cluster.image or settings.ray_image,
        "command": ["python", "-c", PROGRAM],
        "env": _env(llmd, prefetch, local),
        "resources": RESOURCES,
        "securityContext": container_security(),
        # The program's last words (its error) become the pod's termination message.
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": mounts,
    }
    pod: Manifest = {
        "restartPolicy": "Never",
        "containers": [container],
        "volumes": volumes,
        **pull_and_account(llmd),
        **head_placement(llmd),
    }
    labels = {**cluster.pod_labels, **names.labels(llmd.name, COMPONENT)}
    template = {"metadata": {"labels": labels}, "spec": pod}
    meta = {
        "name": job_name(llmd.name, prefetch),
        "namespace": llmd.namespace,
        "labels": names.labels(llmd.name, COMPONENT),
    }
    options = cache.prefetch_job or PrefetchJobSpec()
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": meta,
        "spec": _job_spec(options, template),
    }
