"""The CRD is generated from the API models, committed, structural and documented."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from conftest import ROOT, compare_or_update
from llm_operator import yamlio
from llm_operator.api import rules
from llm_operator.api.crd import build_crd

COMMITTED = [
    ROOT / "manifests" / "crds" / "llmops.dev_llmdeployments.yaml",
    ROOT / "charts" / "llm-operator" / "crds" / "llmops.dev_llmdeployments.yaml",
]
CRD = build_crd()
VERSION = CRD["spec"]["versions"][0]
SCHEMA = VERSION["schema"]["openAPIV3Schema"]


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: str(p.relative_to(ROOT)))
def test_committed_crd_matches_the_models(path: Any) -> None:
    compare_or_update(path, yamlio.dump(CRD))


def _nodes(node: dict[str, Any], path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, node
    for name, child in node.get("properties", {}).items():
        yield from _nodes(child, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from _nodes(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _nodes(node["additionalProperties"], f"{path}{{}}")


def test_every_spec_and_status_field_has_a_description() -> None:
    missing = [
        path
        for root in ("spec", "status")
        for path, node in _nodes(SCHEMA["properties"][root], root)
        if not node.get("description") and not path.endswith(("[]", "{}"))
    ]
    assert missing == []


def test_schema_is_structural() -> None:
    """Every node has a type, or is explicitly int-or-string / preserve-unknown."""
    untyped = [
        path
        for path, node in _nodes(SCHEMA, "")
        if "type" not in node
        and not node.get("x-kubernetes-int-or-string")
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ]
    assert untyped == []
    forbidden = {"$ref", "anyOf", "oneOf", "allOf", "$defs", "title", "const", "discriminator"}
    bad = [(p, sorted(forbidden & n.keys())) for p, n in _nodes(SCHEMA, "") if forbidden & n.keys()]
    assert bad == []


def test_status_has_no_defaults() -> None:
    assert [p for p, n in _nodes(SCHEMA["properties"]["status"], "status") if "default" in n] == []


def test_names_subresources_and_columns() -> None:
    assert CRD["metadata"]["name"] == "llmdeployments.llmops.dev"
    assert CRD["spec"]["scope"] == "Namespaced"
    assert CRD["spec"]["names"]["shortNames"] == ["llmd"]
    assert VERSION["subresources"]["status"] == {}
    assert VERSION["subresources"]["scale"]["specReplicasPath"] == ".spec.replicas"
    assert VERSION["subresources"]["scale"]["statusReplicasPath"] == ".status.replicas.ready"
    columns = {c["name"]: c["jsonPath"] for c in VERSION["additionalPrinterColumns"]}
    for name in ("Model", "Accelerator", "GPUs/Replica", "Replicas", "Ready", "Endpoint", "Age"):
        assert name in columns
    assert columns["Endpoint"] == ".status.endpoint"


def _all_rules() -> list[str]:
    return [v["rule"] for _, n in _nodes(SCHEMA, "") for v in n.get("x-kubernetes-validations", [])]


@pytest.mark.parametrize(
    "rule",
    [
        rules.NAME_LENGTH,
        rules.NAME_DNS1035,
        rules.REPLICAS_XOR_AUTOSCALING,
        rules.TP_WITHIN_NODE,
        rules.SERVICE_NEEDS_REPLICA,
        rules.INCREMENTAL_NEEDS_OPTIONS,
    ],
    ids=lambda r: r.rule[:40],
)
def test_cross_field_rules_are_in_the_crd(rule: rules.CelRule) -> None:
    assert rule.rule in _all_rules()


def test_every_cel_rule_has_a_message_naming_a_field() -> None:
    """Rules on the root or spec name their fields; the API server prefixes nested ones."""
    entries = [
        (path, v) for path, n in _nodes(SCHEMA, "") for v in n.get("x-kubernetes-validations", [])
    ]
    assert len(entries) >= 8
    for path, entry in entries:
        assert entry["message"], entry
        if path in ("", ".spec"):
            assert entry["message"].startswith(("spec.", "metadata.")), entry


def test_spec_defaults_and_enums() -> None:
    spec = SCHEMA["properties"]["spec"]["properties"]
    assert spec["mode"]["enum"] == ["Service", "Cluster"]
    assert spec["mode"]["default"] == "Service"
    assert spec["engine"]["properties"]["tensorParallelSize"]["minimum"] == 1
    assert spec["engine"]["properties"]["args"]["x-kubernetes-preserve-unknown-fields"] is True
    assert spec["upgradeStrategy"]["default"] == "NewCluster"


def test_object_defaults_satisfy_their_own_rules() -> None:
    """The API server evaluates CEL rules against a default as written, before nested
    defaults fill it in, so every field a rule reads must be in the default itself."""
    checked = 0
    for path, node in _nodes(SCHEMA, ""):
        if not isinstance(node.get("default"), dict):
            continue
        for entry in node.get("x-kubernetes-validations", []):
            guarded = set(re.findall(r"has\(self\.(\w+)\)", entry["rule"]))
            read = set(re.findall(r"self\.(\w+)", entry["rule"])) - guarded
            assert read <= node["default"].keys(), (path, entry["rule"])
            checked += 1
    assert checked >= 3  # engine and autoscaling-style sections are covered
