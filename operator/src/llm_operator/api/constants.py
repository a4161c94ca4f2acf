"""API identity of LLMDeployment: group, version, names. Defined once."""

from typing import Final

GROUP: Final = "llmops.dev"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"
KIND: Final = "LLMDeployment"
PLURAL: Final = "llmdeployments"
SINGULAR: Final = "llmdeployment"
SHORT_NAMES: Final = ("llmd",)
CATEGORIES: Final = ("llm", "ray")
CRD_NAME: Final = f"{PLURAL}.{GROUP}"

# KubeRay names Services `<rayservice>-serve-svc`; 47 keeps every derived name valid.
MAX_NAME_LENGTH: Final = 47

SOURCE_SCHEMES: Final = ("hf", "s3", "gs", "pvc")

# Mode Job: where the entrypoint finds its checkpoints (spec.storage.checkpoints.mountPath)
# and its base model (a Hugging Face id, an s3:// or gs:// URL, or a local path for pvc://).
CHECKPOINT_DIR_ENV: Final = "LLMOP_CHECKPOINT_DIR"
MODEL_SOURCE_ENV: Final = "LLMOP_MODEL_SOURCE"

# Environment variables the operator sets itself; a user entry would silently fight it.
RESERVED_ENV: Final = ("HF_TOKEN", "HF_HOME", CHECKPOINT_DIR_ENV, MODEL_SOURCE_ENV)

# Pod annotations the API server and the kubelet read as a container's AppArmor or
# seccomp profile: from spec.rayCluster.podAnnotations they could lift the Ray
# containers' confinement (`unconfined`), so the API refuses them.
CONFINEMENT_ANNOTATION_PREFIXES: Final = (
    "container.apparmor.security.beta.kubernetes.io/",
    "container.seccomp.security.alpha.kubernetes.io/",
    "seccomp.security.alpha.kubernetes.io/pod",
)

# Environment variables KubeRay derives from a RayCluster's gcsFaultToleranceOptions. KubeRay
# refuses a cluster that sets the first three by hand (v1.6.1, utils/validation.go), and a
# hand-set storage namespace would silently replace the one it chooses.
GCS_FT_ENV: Final = (
    "RAY_REDIS_ADDRESS",
    "REDIS_PASSWORD",
    "REDIS_USERNAME",
    "RAY_external_storage_namespace",
)
