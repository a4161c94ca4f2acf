"""Cross-field rules, written once as CEL for the API server and checked again offline.

Each rule carries the CEL expression the CRD enforces at admission and the message
both the API server and the offline validator show, so `kubectl apply` and
`llm-operator validate` give the same verdict in the same words.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from llm_operator.api.constants import (
    CONFINEMENT_ANNOTATION_PREFIXES,
    MAX_NAME_LENGTH,
    RAY_GPU_ACCELERATOR_TYPES,
    RESERVED_ENV,
)


@dataclass(frozen=True)
class CelRule:
    """One `x-kubernetes-validations` entry."""

    rule: str
    message: str
    field_path: str | None = None

    def as_schema(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"rule": self.rule, "message": self.message}
        if self.field_path:
            entry["fieldPath"] = self.field_path
        return entry


def cel_extra(*rules: CelRule) -> dict[str, Any]:
    """`json_schema_extra` that attaches CEL rules to a model's schema."""
    return {"x-kubernetes-validations": [r.as_schema() for r in rules]}


DNS1035_LABEL = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
DNS1123_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
# Serve import path: `package.module:attribute`.
IMPORT_PATH = r"^[A-Za-z_][A-Za-z0-9_.]*:[A-Za-z_][A-Za-z0-9_.]*$"
# hf://org/model, s3://bucket/key, gs://bucket/key, pvc://claim[/path]
SOURCE_REMOTE = r"^(hf|s3|gs)://[^/\s]+(/[^\s]*)?$"
SOURCE_PVC = r"^pvc://[a-z0-9]([-a-z0-9]*[a-z0-9])?(/[^\s]*)?$"
ABSOLUTE_PATH = r"^/[^\s:]*$"

NAME_LENGTH = CelRule(
    rule=f"size(self.metadata.name) <= {MAX_NAME_LENGTH}",
    message=(
        f"metadata.name must be at most {MAX_NAME_LENGTH} characters: KubeRay derives "
        "Service names from it; choose a shorter name"
    ),
)
NAME_DNS1035 = CelRule(
    rule=f"self.metadata.name.matches(r'{DNS1035_LABEL}')",
    message=(
        "metadata.name must be a DNS-1035 label (lower-case letters, digits and '-', "
        "starting with a letter); rename the resource"
    ),
)
REPLICAS_XOR_AUTOSCALING = CelRule(
    rule="!(has(self.replicas) && has(self.autoscaling))",
    message=(
        "spec.replicas and spec.autoscaling are mutually exclusive: set replicas for a "
        "fixed count or autoscaling for a range, not both"
    ),
)
TP_WITHIN_NODE = CelRule(
    rule="self.engine.tensorParallelSize <= self.accelerator.gpusPerNode",
    message=(
        "spec.engine.tensorParallelSize must not exceed spec.accelerator.gpusPerNode: a "
        "tensor-parallel group never spans nodes; lower tensorParallelSize and raise "
        "pipelineParallelSize instead"
    ),
    field_path=".engine.tensorParallelSize",
)
MIN_LE_MAX = CelRule(
    rule="self.minReplicas <= self.maxReplicas",
    message="spec.autoscaling.minReplicas must be less than or equal to maxReplicas",
    field_path=".minReplicas",
)
TARGET_LE_MAX_ONGOING = CelRule(
    rule="self.targetOngoingRequests <= self.maxOngoingRequests",
    message=(
        "spec.autoscaling.targetOngoingRequests must be less than or equal to "
        "maxOngoingRequests, or replicas never reach their target load"
    ),
    field_path=".targetOngoingRequests",
)
IMPORT_PATH_ONLY_CUSTOM = CelRule(
    rule="self.type == 'custom' || size(self.importPath) == 0",
    message=(
        "spec.engine.importPath is only used with engine.type custom; remove it or set type: custom"
    ),
    field_path=".importPath",
)
IMPORT_PATH_REQUIRED_CUSTOM = CelRule(
    rule="self.type != 'custom' || size(self.importPath) > 0",
    message=(
        "spec.engine.importPath is required with engine.type custom, e.g. my_package.app:build_app"
    ),
    field_path=".importPath",
)
IMPORT_PATH_FORMAT = CelRule(
    rule=f"size(self.importPath) == 0 || self.importPath.matches(r'{IMPORT_PATH}')",
    message="spec.engine.importPath must look like package.module:attribute",
    field_path=".importPath",
)
SOURCE_SCHEME = CelRule(
    rule=f"self.source.matches(r'{SOURCE_REMOTE}') || self.source.matches(r'{SOURCE_PVC}')",
    message=(
        "spec.model.source must be hf://<org>/<model>, s3://<bucket>/<path>, "
        "gs://<bucket>/<path> or pvc://<claim>/<path>"
    ),
    field_path=".source",
)
NO_RAY_POD_LABELS = CelRule(
    rule="self.all(k, !k.startsWith('ray.io/'))",
    message=(
        "spec.rayCluster.podLabels must not use the ray.io/ prefix: KubeRay reserves "
        "those labels; choose another key"
    ),
)
INCREMENTAL_NEEDS_OPTIONS = CelRule(
    rule=(
        "self.upgradeStrategy != 'NewClusterWithIncrementalUpgrade' || has(self.incrementalUpgrade)"
    ),
    message=(
        "spec.incrementalUpgrade (at least gatewayClassName) is required with upgradeStrategy "
        "NewClusterWithIncrementalUpgrade"
    ),
    field_path=".incrementalUpgrade",
)
SERVICE_NEEDS_REPLICA = CelRule(
    rule="self.mode != 'Service' || !has(self.replicas) || self.replicas >= 1",
    message=(
        "spec.replicas must be at least 1 with mode Service (Ray Serve needs a replica); "
        "for scale to zero use autoscaling with minReplicas: 0"
    ),
    field_path=".replicas",
)
ENV_VALUE_XOR_VALUE_FROM = CelRule(
    rule="!(has(self.value) && has(self.valueFrom))",
    message="an env entry takes value or valueFrom, not both; remove one",
)
VALUE_FROM_EXACTLY_ONE = CelRule(
    rule="[has(self.secretKeyRef), has(self.configMapKeyRef), has(self.fieldRef)]"
    ".filter(x, x).size() == 1",
    message="valueFrom needs exactly one of secretKeyRef, configMapKeyRef or fieldRef",
)


def _cel_list(values: tuple[str, ...]) -> str:
    return "[" + ", ".join(f"'{v}'" for v in values) + "]"


RAY_ACCELERATOR_TYPE = CelRule(
    rule=(
        "self.engine.type != 'vllm' || "
        f"self.accelerator.type in {_cel_list(RAY_GPU_ACCELERATOR_TYPES)}"
    ),
    message=(
        "spec.accelerator.type must be an accelerator type Ray Serve LLM accepts: "
        + ", ".join(RAY_GPU_ACCELERATOR_TYPES)
    ),
    field_path=".accelerator.type",
)
NO_RESERVED_ENV = CelRule(
    rule=f"self.all(e, !(e.name in {_cel_list(RESERVED_ENV)}))",
    message=(
        "spec.rayCluster.env must not set HF_TOKEN or HF_HOME: the operator sets them from "
        "spec.model.tokenSecretRef and spec.storage.modelCache; remove the entry"
    ),
)
NO_CONFINEMENT_ANNOTATIONS = CelRule(
    rule="self.all(k, "
    + " && ".join(f"!k.startsWith('{p}')" for p in CONFINEMENT_ANNOTATION_PREFIXES)
    + ")",
    message=(
        "spec.rayCluster.podAnnotations must not set AppArmor or seccomp profiles "
        "(container.apparmor.security.beta.kubernetes.io/*, "
        "container.seccomp.security.alpha.kubernetes.io/*, "
        "seccomp.security.alpha.kubernetes.io/pod): the operator sets the Ray containers' "
        "security context; remove the entry"
    ),
)
DISTINCT_MOUNT_PATHS = CelRule(
    rule=(
        "!has(self.modelCache) || !has(self.checkpoints) || "
        "self.modelCache.mountPath != self.checkpoints.mountPath"
    ),
    message=(
        "spec.storage.checkpoints.mountPath must differ from spec.storage.modelCache.mountPath; "
        "choose another path"
    ),
    field_path=".checkpoints.mountPath",
)
