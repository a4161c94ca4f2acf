"""Names and labels of every child. The one place that decides them."""

from __future__ import annotations

from typing import Final

from llm_operator.api.constants import GROUP
from llm_operator.sizing.accelerators import name_part

# KubeRay's API, which every Ray child belongs to.
RAY_GROUP: Final = "ray.io"
RAY_VERSION: Final = "v1"
RAY_API_VERSION: Final = f"{RAY_GROUP}/{RAY_VERSION}"

# Gateway API (gateway.networking.k8s.io/v1): the HTTPRoute of spec.exposure.gateway and
# the Gateways it attaches to.
GATEWAY_GROUP: Final = "gateway.networking.k8s.io"
GATEWAY_VERSION: Final = "v1"
GATEWAY_API_VERSION: Final = f"{GATEWAY_GROUP}/{GATEWAY_VERSION}"
HTTP_ROUTES: Final = "httproutes"
GATEWAYS: Final = "gateways"

MANAGED_BY_LABEL: Final = "app.kubernetes.io/managed-by"
MANAGED_BY: Final = "llm-operator"
APP_NAME: Final = "llmdeployment"
DEPLOYMENT_LABEL: Final = f"{GROUP}/deployment"
COMPONENT_LABEL: Final = "app.kubernetes.io/component"
# On claims kept after deletion: they carry no ownerReference.
RETAIN_ANNOTATION: Final = f"{GROUP}/retain-on-delete"

HEAD_CONTAINER: Final = "ray-head"
# KubeRay's name for the container that runs `ray job submit` (utils.SubmitterContainerName).
SUBMITTER_CONTAINER: Final = "ray-job-submitter"
WORKER_CONTAINER: Final = "ray-worker"
WORKER_GROUP: Final = "gpu-workers"
SERVE_APP: Final = "llm"

MODEL_CACHE_VOLUME: Final = "model-cache"
CHECKPOINTS_VOLUME: Final = "checkpoints"
MODEL_SOURCE_VOLUME: Final = "model-source"
MODEL_SOURCE_MOUNT: Final = "/model-source"
SHM_VOLUME: Final = "dshm"

SERVE_PORT: Final = 8000
METRICS_PORT: Final = 8080


def worker_group(role: str | None) -> str:
    """The GPU worker group of a plan's role: `gpu-workers` for the whole model,
    `prefill-workers` and `decode-workers` for the sides of a disaggregated one."""
    return WORKER_GROUP if role is None else f"{role}-workers"


def fallback_worker_group(accelerator_type: str) -> str:
    """The worker group of a fallback accelerator type: `gpu-workers-<type>`, lowercased,
    with any character a pod name cannot hold as '-' (KubeRay names pods after groups)."""
    return f"{WORKER_GROUP}-{name_part(accelerator_type)}"


def role_resource(role: str | None) -> str | None:
    """The custom Ray resource a role's worker pods advertise (one unit per GPU) and its
    bundles ask for, tying the role's engines to its own group; the group's name, as Ray
    resource names may be any string. None for the whole model's one group."""
    return None if role is None else worker_group(role)


def ray_service_name(deployment: str) -> str:
    return deployment


def ray_cluster_name(deployment: str) -> str:
    return deployment


def ray_job_name(deployment: str) -> str:
    return deployment


def model_cache_claim(deployment: str) -> str:
    return f"{deployment}-model-cache"


def checkpoints_claim(deployment: str) -> str:
    return f"{deployment}-checkpoints"


# Characters of the model key in a prefetch Job's name: 47 (the longest deployment name)
# + "-prefetch-" + 6 = 63, the most a Job name may have (the Job controller copies it
# into a label value of its pods).
PREFETCH_NAME_KEY: Final = 6


def prefetch_job_name(deployment: str, model_key: str) -> str:
    """The download Job of one model source and revision (spec.storage.modelCache
    .prefetch): a new source or revision is a new Job."""
    return f"{deployment}-prefetch-{model_key[:PREFETCH_NAME_KEY]}"


def http_route_name(deployment: str) -> str:
    return deployment


def serve_service_name(deployment: str) -> str:
    """KubeRay names the RayService's serving Service `<rayservice>-serve-svc`."""
    return f"{ray_service_name(deployment)}-serve-svc"


def upgrade_gateway_name(deployment: str) -> str:
    """KubeRay names the Gateway of an incremental upgrade `<rayservice>-gateway`, and its
    HTTPRoute `<rayservice>-httproute` (ray-operator v1.6.1, controllers/ray/common/
    association.go); the Gateway's listener is `http` on port 80 (utils/constant.go)."""
    return f"{ray_service_name(deployment)}-gateway"


def upgrade_route_name(deployment: str) -> str:
    return f"{ray_service_name(deployment)}-httproute"


UPGRADE_GATEWAY_LISTENER: Final = "http"


def endpoint(deployment: str, namespace: str) -> str:
    host = f"{serve_service_name(deployment)}.{namespace}.svc.cluster.local"
    return f"http://{host}:{SERVE_PORT}/v1"


def labels(deployment: str, component: str) -> dict[str, str]:
    """Labels on every child; never KubeRay's reserved ray.io/* keys."""
    return {
        "app.kubernetes.io/name": APP_NAME,
        "app.kubernetes.io/instance": deployment,
        MANAGED_BY_LABEL: MANAGED_BY,
        COMPONENT_LABEL: component,
        DEPLOYMENT_LABEL: deployment,
    }
