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
