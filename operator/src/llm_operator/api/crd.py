"""Generate the LLMDeployment CustomResourceDefinition from the pydantic models.

Pydantic emits JSON Schema (draft 2020-12); the API server wants a *structural*
OpenAPI v3 schema. This module converts one into the other: references inlined,
optional fields as plain properties, int-or-string quantities, free-form maps marked
to keep unknown fields, and nested objects defaulted to `{}` so the API server fills
their defaults (CEL rules read them).
"""

from __future__ import annotations

import copy
from typing import Any

from llm_operator.api import constants, rules
from llm_operator.api.models import LLMDeploymentSpec, LLMDeploymentStatus

Schema = dict[str, Any]

# Keys of JSON Schema that have an equal in Kubernetes' structural schema.
_KEPT_KEYS = (
    "type",
    "description",
    "default",
    "enum",
    "pattern",
    "minLength",
    "maxLength",
    "minimum",
    "maximum",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
    "format",
    "x-kubernetes-validations",
)

# List fields whose entries are keyed, so admission rejects duplicates.
_MAP_LISTS: dict[str, str] = {"env": "name", "conditions": "type"}


def _resolve(node: Schema, defs: dict[str, Schema]) -> Schema:
    """Inline `$ref` and single-entry `allOf` wrappers, keeping sibling keys."""
    node = dict(node)
    if "$ref" in node:
        target = defs[node.pop("$ref").rsplit("/", 1)[-1]]
        node = {**_resolve(target, defs), **node}
    if "allOf" in node and len(node["allOf"]) == 1:
        inner = _resolve(node.pop("allOf")[0], defs)
        node = {**inner, **node}
    return node


def _is_null(node: Schema) -> bool:
    return node.get("type") == "null"


def _is_int_or_string(options: list[Schema]) -> bool:
    return sorted(o.get("type", "") for o in options) == ["integer", "string"]


def _int_or_string(node: Schema) -> Schema:
    """An int-or-string (a quantity). Its value checks sit beside the marker, as on
    Kubernetes' own quantities: pattern and maxLength apply to a string, minimum to an
    integer."""
    out: Schema = {"x-kubernetes-int-or-string": True}
    for key in ("description", "pattern", "maxLength", "minimum"):
        if key in node:
            out[key] = node[key]
    if node.get("default") is not None:
        out["default"] = node["default"]
    return out


def _structural(node: Schema, defs: dict[str, Schema], *, in_status: bool = False) -> Schema:
    """Convert one JSON Schema node (already a property's schema) to a structural one."""
    node = _resolve(node, defs)
    if "anyOf" in node:
        options = [_resolve(o, defs) for o in node.pop("anyOf") if not _is_null(o)]
        if _is_int_or_string(options):
            return _int_or_string(node)
        if len(options) != 1:
            raise ValueError(f"cannot express union {options} in a structural schema")
        node = {**options[0], **{k: v for k, v in node.items() if k != "default" or v is not None}}
        node = _resolve(node, defs)
    if "const" in node:
        node["enum"] = [node.pop("const")]
    if node.get("default") is None:
        node.pop("default", None)

    out = {k: copy.deepcopy(node[k]) for k in _KEPT_KEYS if k in node}
    for bound in ("Minimum", "Maximum"):
        exclusive = node.get(f"exclusive{bound}")
        if exclusive is not None:
            out[bound.lower()] = exclusive
            out[f"exclusive{bound}"] = True
    if in_status:
        out.pop("default", None)

    kind = node.get("type")
    if kind == "object":
        _object_body(node, out, defs, in_status=in_status)
    elif kind == "array":
        out["items"] = _structural(node["items"], defs, in_status=in_status)
    return out


def _object_body(node: Schema, out: Schema, defs: dict[str, Schema], *, in_status: bool) -> None:
    properties: dict[str, Schema] = node.get("properties", {})
    if properties:
        required = set(node.get("required", []))
        out["properties"] = {}
        for name, prop in properties.items():
            converted = _structural(prop, defs, in_status=in_status)
            if _defaults_to_object(prop, converted, defs, name in required, in_status):
                # Spelled out, not `{}`: the API server checks CEL rules against the default
                # itself, before nested defaults would fill it in.
                converted["default"] = {
                    key: sub["default"]
                    for key, sub in converted["properties"].items()
                    if "default" in sub
                }
            if name in _MAP_LISTS and converted.get("type") == "array":
                converted["x-kubernetes-list-type"] = "map"
                converted["x-kubernetes-list-map-keys"] = [_MAP_LISTS[name]]
            out["properties"][name] = converted
        if required:
            out["required"] = sorted(required)
        return
    extra = node.get("additionalProperties")
    if isinstance(extra, dict) and extra:
        out["additionalProperties"] = _structural(extra, defs, in_status=in_status)
    else:
        # Free-form map (engine args): keep what the user wrote.
        out["x-kubernetes-preserve-unknown-fields"] = True


def _defaults_to_object(
    original: Schema, converted: Schema, defs: dict[str, Schema], required: bool, in_status: bool
) -> bool:
    """Nested sections built by default_factory get a default on the server too."""
    if required or in_status or "default" in converted:
        return False
    if converted.get("type") != "object" or "properties" not in converted:
        return False
    resolved = _resolve(original, defs)
    return "anyOf" not in resolved  # `X | None` fields stay absent until set


def _section(model: type[Any], *, in_status: bool = False) -> Schema:
    schema = model.model_json_schema(by_alias=True, mode="validation")
    defs = schema.pop("$defs", {})
    return _structural(schema, defs, in_status=in_status)


def openapi_schema() -> Schema:
    """The CRD's `openAPIV3Schema`."""
    spec = _section(LLMDeploymentSpec)
    status = _section(LLMDeploymentStatus, in_status=True)
    return {
        "type": "object",
        "description": (
            "LLMDeployment serves (or runs) a large language model on Ray through KubeRay: "
            "one resource in, a RayService or RayCluster with GPU worker groups out."
        ),
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string", "description": "API version: llmops.dev/v1alpha1."},
            "kind": {"type": "string", "description": "Kind: LLMDeployment."},
            "metadata": {"type": "object"},
            "spec": spec,
            "status": status,
        },
        "x-kubernetes-validations": [rules.NAME_LENGTH.as_schema(), rules.NAME_DNS1035.as_schema()],
    }


PRINTER_COLUMNS: list[Schema] = [
    {"name": "Model", "type": "string", "jsonPath": ".status.model"},
    {"name": "Accelerator", "type": "string", "jsonPath": ".spec.accelerator.type"},
    {"name": "GPUs/Replica", "type": "integer", "jsonPath": ".status.gpusPerReplica"},
    {"name": "Replicas", "type": "integer", "jsonPath": ".status.replicas.desired"},
    {"name": "Ready", "type": "integer", "jsonPath": ".status.replicas.ready"},
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {"name": "Endpoint", "type": "string", "jsonPath": ".status.endpoint", "priority": 0},
    # Mode Job: Ray's job status; its times and dashboard with -o wide.
    {"name": "Job", "type": "string", "jsonPath": ".status.job.jobStatus", "priority": 0},
    {"name": "Started", "type": "date", "jsonPath": ".status.job.startTime", "priority": 1},
    {"name": "Ended", "type": "date", "jsonPath": ".status.job.endTime", "priority": 1},
    {"name": "Dashboard", "type": "string", "jsonPath": ".status.job.dashboardURL", "priority": 1},
    {
        "name": "GCS-FT",
        "type": "string",
        "jsonPath": ".status.gcsFaultTolerance",
        "priority": 1,
    },
    # Incremental upgrades: KubeRay's upgrade state and the pending cluster's share of
    # traffic and of Serve's capacity, with -o wide.
    {
        "name": "Upgrading",
        "type": "string",
        "jsonPath": '.status.conditions[?(@.type=="Upgrading")].status',
        "priority": 1,
    },
    {
        "name": "Traffic-New",
        "type": "integer",
        "jsonPath": ".status.upgrade.pending.trafficRoutedPercent",
        "priority": 1,
    },
    {
        "name": "Capacity-New",
        "type": "integer",
        "jsonPath": ".status.upgrade.pending.targetCapacity",
        "priority": 1,
    },
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


def build_crd() -> Schema:
    """The whole CustomResourceDefinition as a dict."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": constants.CRD_NAME,
            "labels": {
                "app.kubernetes.io/name": "llm-operator",
                "app.kubernetes.io/part-of": "llm-operator",
            },
        },
        "spec": {
            "group": constants.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": constants.KIND,
                "listKind": f"{constants.KIND}List",
                "plural": constants.PLURAL,
                "singular": constants.SINGULAR,
                "shortNames": list(constants.SHORT_NAMES),
                "categories": list(constants.CATEGORIES),
            },
            "versions": [
                {
                    "name": constants.VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": openapi_schema()},
                    "subresources": {
                        "status": {},
                        "scale": {
                            "specReplicasPath": ".spec.replicas",
                            "statusReplicasPath": ".status.replicas.ready",
                        },
                    },
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                }
            ],
        },
    }
