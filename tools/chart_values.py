"""The Helm chart's values: one typed model that generates both `values.yaml` (with
`# --` docs) and `values.schema.json` (unknown keys and wrong types refused).

Pure data, like `settings`: the operator's own defaults (Ray image and version, the
accelerator node label, GPU memory per accelerator) come from there, so the chart
cannot drift from what the operator does without it.
"""

from __future__ import annotations

import json
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from llm_operator.settings import OperatorSettings

CHART_NAME = "llm-operator"
IMAGE_REPOSITORY = "ghcr.io/llmops-dev/llm-operator"
METRICS_PORT = 9090

_DEFAULTS = OperatorSettings()


class _Values(BaseModel):
    """camelCase keys, no unknown keys: what `helm install --set` users expect."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
    )


class Image(_Values):
    repository: str = Field(IMAGE_REPOSITORY, description="Operator image repository.")
    tag: str = Field("", description="Operator image tag; empty means the chart's appVersion.")
    pull_policy: Literal["Always", "IfNotPresent", "Never"] = Field(
        "IfNotPresent", description="Image pull policy."
    )


class RayAutoscaler(_Values):
    resources: dict[str, dict[str, str]] = Field(
        default_factory=lambda: {
            part: {key: str(value) for key, value in quantities.items()}
            for part, quantities in _DEFAULTS.autoscaler_resources.model_dump().items()
            if quantities
        },
        description=(
            "Requests and limits of KubeRay's Ray autoscaler sidecar in each head pod, for "
            "LLMDeployments that set no spec.rayCluster.autoscaler.resources (KubeRay's own "
            "default is 500m CPU and 512Mi)."
        ),
    )


class Operator(_Values):
    replicas: int = Field(
        1,
        ge=0,
        description=(
            "Operator replicas. More than one needs `peering.enabled` (kopf peering elects "
            "the active one); 0 installs everything but runs no operator pod."
        ),
    )
    log_level: Literal["info", "debug"] = Field("info", description="Log level.")
    watch_namespaces: list[str] = Field(
        default_factory=list,
        description=(
            "Namespaces to watch. Empty: every namespace, with a ClusterRole. Otherwise a "
            "Role in each listed namespace and nothing cluster-wide but CRD discovery."
        ),
    )
    ray_image: str = Field(
        _DEFAULTS.ray_image, description="Ray image for LLMDeployments that set none."
    )
    ray_version: str = Field(
        _DEFAULTS.ray_version, description="Ray version for LLMDeployments that set none."
    )
    accelerator_node_label: str = Field(
        _DEFAULTS.accelerator_node_label,
        description="Node label whose value is the accelerator type (worker node selector).",
    )
    gpu_memory_gi_b: dict[str, float] = Field(
        default_factory=lambda: dict(_DEFAULTS.gpu_memory_gib),
        alias="gpuMemoryGiB",
        description=(
            "Accelerator catalogue: GPU memory (GiB) per Ray accelerator type, for the "
            "fit check. Add your own types here."
        ),
    )
    ray_autoscaler: RayAutoscaler = Field(
        default_factory=RayAutoscaler, description="Ray autoscaler sidecar of LLMDeployments."
    )
    resources: dict[str, dict[str, str]] = Field(
        default_factory=lambda: {
            "requests": {"cpu": "100m", "memory": "256Mi"},
            "limits": {"cpu": "1", "memory": "512Mi"},
        },
        description="Operator container resources.",
    )
    node_selector: dict[str, str] = Field(default_factory=dict, description="Node selector.")
    tolerations: list[dict[str, Any]] = Field(default_factory=list, description="Tolerations.")
    affinity: dict[str, Any] = Field(default_factory=dict, description="Affinity.")
    priority_class_name: str = Field("", description="Priority class of the operator pod.")
    pod_annotations: dict[str, str] = Field(
        default_factory=dict, description="Extra annotations on the operator pod."
    )
    pod_labels: dict[str, str] = Field(
        default_factory=dict, description="Extra labels on the operator pod."
    )


class Peering(_Values):
    enabled: bool = Field(
        False,
        description=(
            "kopf peering, so several replicas elect one active operator; installs kopf's "
            "peering CRDs and a peering object."
        ),
    )
    name: str = Field(CHART_NAME, description="Name of the peering object.")


class ServiceAccount(_Values):
    create: bool = Field(True, description="Create the operator's service account.")
    name: str = Field("", description="Service account name; empty means the full name.")
    annotations: dict[str, str] = Field(
        default_factory=dict, description="Service account annotations."
    )


class Rbac(_Values):
    create: bool = Field(
        True, description="Create the (Cluster)Roles and bindings the operator needs."
    )


class ServiceMonitor(_Values):
    enabled: bool = Field(
        False, description="Create a ServiceMonitor for the operator (Prometheus Operator)."
    )
    interval: str = Field("30s", description="Scrape interval.")
    labels: dict[str, str] = Field(
        default_factory=dict, description="Extra labels, e.g. your Prometheus' selector."
    )


class PodMonitors(_Values):
    enabled: bool = Field(
        False,
        description="Create PodMonitors for the Ray head and worker pods of LLMDeployments.",
    )
    interval: str = Field("15s", description="Scrape interval.")
    labels: dict[str, str] = Field(default_factory=dict, description="Extra labels.")


class Metrics(_Values):
    port: int = Field(METRICS_PORT, ge=1, le=65535, description="Operator metrics port.")
    service_monitor: ServiceMonitor = Field(
        default_factory=ServiceMonitor, description="Operator ServiceMonitor."
    )
    pod_monitors: PodMonitors = Field(
        default_factory=PodMonitors, description="Ray pods' PodMonitors."
    )


class Dashboard(_Values):
    enabled: bool = Field(
        False, description="Ship the Grafana dashboard in a ConfigMap for Grafana's sidecar."
    )
    labels: dict[str, str] = Field(
        default_factory=lambda: {"grafana_dashboard": "1"},
        description="Labels the Grafana sidecar discovers dashboards by.",
    )
    annotations: dict[str, str] = Field(
        default_factory=dict, description="Annotations, e.g. the sidecar's folder."
    )


class PodDisruptionBudget(_Values):
    enabled: bool = Field(False, description="Create a PodDisruptionBudget for the operator.")
    max_unavailable: int = Field(1, ge=0, description="maxUnavailable of the budget.")


class Tests(_Values):
    kubectl_image: str = Field(
        "registry.k8s.io/kubectl:v1.36.3",
        description="Image of `helm test`'s check that the LLMDeployment API is served.",
    )
    curl_image: str = Field(
        "curlimages/curl:8.17.0",
        description="Image of `helm test`'s check that the operator is healthy.",
    )


class ChartValues(_Values):
    name_override: str = Field("", description="Replaces the chart name in resource names.")
    fullname_override: str = Field("", description="Replaces the full resource name prefix.")
    image: Image = Field(default_factory=Image, description="Operator image.")
    image_pull_secrets: list[dict[str, str]] = Field(
        default_factory=list, description="Pull secrets for the operator image."
    )
    operator: Operator = Field(default_factory=Operator, description="The operator.")
    peering: Peering = Field(default_factory=Peering, description="kopf peering.")
    service_account: ServiceAccount = Field(
        default_factory=ServiceAccount, description="Service account."
    )
    rbac: Rbac = Field(default_factory=Rbac, description="RBAC.")
    metrics: Metrics = Field(default_factory=Metrics, description="Prometheus metrics.")
    dashboard: Dashboard = Field(default_factory=Dashboard, description="Grafana dashboard.")
    pod_disruption_budget: PodDisruptionBudget = Field(
        default_factory=PodDisruptionBudget, description="PodDisruptionBudget."
    )
    tests: Tests = Field(default_factory=Tests, description="`helm test` images.")


def _strip_titles(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _strip_titles(v) for k, v in node.items() if k != "title"}
    if isinstance(node, list):
        return [_strip_titles(v) for v in node]
    return node


def values_schema() -> dict[str, Any]:
    """JSON schema of the values, as Helm checks them on install, upgrade and lint."""
    schema: dict[str, Any] = _strip_titles(ChartValues.model_json_schema(by_alias=True))
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


def values_schema_json() -> str:
    return json.dumps(values_schema(), indent=2) + "\n"


def _comment(description: str | None, indent: str) -> list[str]:
    return [f"{indent}# -- {description}"] if description else []


def _model_lines(model: BaseModel, indent: str) -> list[str]:
    lines: list[str] = []
    for name, field in type(model).model_fields.items():
        key = field.alias or name
        value = getattr(model, name)
        if lines and isinstance(value, BaseModel):
            lines.append("")
        lines += _comment(field.description, indent)
        if isinstance(value, BaseModel):
            lines.append(f"{indent}{key}:")
            lines += _model_lines(value, indent + "  ")
            continue
        dumped = yaml.safe_dump({key: value}, default_flow_style=False, sort_keys=False)
        lines += [f"{indent}{line}" for line in dumped.splitlines()]
    return lines


def values_yaml() -> str:
    """values.yaml with a `# --` comment over every key (helm-docs' convention)."""
    header = [
        "# Default values of the llm-operator chart.",
        "# Generated from tools/chart_values.py: edit that, then run `make generate`.",
        "",
    ]
    return "\n".join(header + _model_lines(ChartValues(), "")) + "\n"


def _rows(model: BaseModel, prefix: str) -> list[str]:
    rows: list[str] = []
    for name, field in type(model).model_fields.items():
        key = f"{prefix}{field.alias or name}"
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            rows += _rows(value, f"{key}.")
            continue
        # A long catalogue would drown the table; values.yaml lists it.
        long_map = isinstance(value, dict) and len(value) > 3
        default = f"{len(value)} entries in values.yaml" if long_map else f"`{json.dumps(value)}`"
        description = (field.description or "").replace("|", "\\|")
        rows.append(f"| `{key}` | {default} | {description} |")
    return rows


def values_table() -> str:
    """The README's values table (Markdown), one row per leaf value."""
    header = ["| value | default | description |", "| --- | --- | --- |"]
    return "\n".join(header + _rows(ChartValues(), "")) + "\n"
