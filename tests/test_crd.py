"""The CRD is generated from the API models, committed, structural and documented."""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from typing import Any

import pytest

from llm_operator.api import rules
from llm_operator.api.crd import build_crd
from llm_operator.api.vocabulary import ConditionStatus, GcsFaultToleranceState, Phase

CRD = build_crd()
VERSION = CRD["spec"]["versions"][0]
SCHEMA = VERSION["schema"]["openAPIV3Schema"]


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


def _rules_at(path: str) -> list[str]:
    return [
        v["rule"] for p, n in _nodes(SCHEMA, "") if p == path
        for v in n.get("x-kubernetes-validations", [])
    ]  # fmt: skip


# The cross-field rules as the API server reads them, written out by hand, at the schema
# node that carries each (`self` is that node).
CROSS_FIELD_RULES = [
    ("", "size(self.metadata.name) <= 47"),
    ("", "self.metadata.name.matches(r'^[a-z]([-a-z0-9]*[a-z0-9])?$')"),
    (".spec", "!(has(self.replicas) && has(self.autoscaling))"),
    (".spec", "self.engine.tensorParallelSize <= self.accelerator.gpusPerNode"),
    (".spec", "self.mode != 'Service' || !has(self.replicas) || self.replicas >= 1"),
    (
        ".spec",
        "self.upgradeStrategy != 'NewClusterWithIncrementalUpgrade' || "
        "has(self.incrementalUpgrade)",
    ),
    (
        ".spec",
        "!has(self.incrementalUpgrade) || "
        "self.upgradeStrategy == 'NewClusterWithIncrementalUpgrade'",
    ),
    (".spec", "self.mode != 'Cluster' || self.upgradeStrategy == 'NewCluster'"),
    (
        ".spec",
        "!has(self.exposure) || !has(self.exposure.gateway) || "
        "self.upgradeStrategy != 'NewClusterWithIncrementalUpgrade'",
    ),
    (".spec.autoscaling", "self.minReplicas <= self.maxReplicas"),
    (".spec.autoscaling", "self.targetOngoingRequests <= self.maxOngoingRequests"),
    (
        ".spec.storage",
        "!has(self.modelCache) || !has(self.checkpoints) || "
        "self.modelCache.mountPath != self.checkpoints.mountPath",
    ),
    (".spec.engine", "self.type == 'custom' || size(self.importPath) == 0"),
    (".spec.engine", "self.type != 'custom' || size(self.importPath) > 0"),
    (".spec.rayCluster.env[]", "!(has(self.value) && has(self.valueFrom))"),
    (
        ".spec.rayCluster.env[].valueFrom",
        "[has(self.secretKeyRef), has(self.configMapKeyRef), has(self.fieldRef)]"
        ".filter(x, x).size() == 1",
    ),
    (".spec.rayCluster.podLabels", "self.all(k, !k.startsWith('ray.io/'))"),
    (
        ".spec.rayCluster.env",
        "self.all(e, !(e.name in "
        "['HF_TOKEN', 'HF_HOME', 'LLMOP_CHECKPOINT_DIR', 'LLMOP_MODEL_SOURCE']))",
    ),
    (".spec", "self.mode == 'Job' || has(self.model)"),
    (".spec", "self.mode != 'Job' || has(self.job)"),
    (".spec", "!has(self.job) || self.mode == 'Job'"),
    (".spec", "self.mode != 'Job' || !(has(self.autoscaling))"),
    (".spec", "self.mode != 'Job' || !(has(self.engine.args))"),
    (".spec", "self.mode != 'Job' || !(has(self.disaggregation))"),
    (".spec.job", "!self.suspend || self.shutdownAfterJobFinishes"),
]


@pytest.mark.parametrize(("path", "rule"), CROSS_FIELD_RULES, ids=lambda x: x[:40])
def test_cross_field_rules_are_in_the_crd(path: str, rule: str) -> None:
    assert rule in _rules_at(path), _rules_at(path)


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
    assert spec["mode"]["enum"] == ["Service", "Cluster", "Job"]
    assert spec["job"]["properties"]["shutdownAfterJobFinishes"]["default"] is True
    assert spec["job"]["required"] == ["entrypoint"]
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


# --- rules on one string: where they sit, their regular expressions, their cost ---------

SPEC = SCHEMA["properties"]["spec"]["properties"]
MODEL = SPEC["model"]
STORAGE = SPEC["storage"]["properties"]
# (rule, the schema node that carries it, the string it reads)
STRING_RULES: list[tuple[rules.CelRule, dict[str, Any], dict[str, Any]]] = [
    *((rule, MODEL, MODEL["properties"]["source"]) for rule in rules.SOURCE_RULES),
    (rules.REVISION_FORMAT, MODEL["properties"]["revision"], MODEL["properties"]["revision"]),
    *(
        (rule, mount, mount)
        for rule, mount in (
            (rules.CACHE_MOUNT_PATH, STORAGE["modelCache"]["properties"]["mountPath"]),
            (rules.CHECKPOINTS_MOUNT_PATH, STORAGE["checkpoints"]["properties"]["mountPath"]),
        )
    ),
]

RULE_NAMES = {id(v): k for k, v in vars(rules).items() if isinstance(v, rules.CelRule)}
RULE_IDS = [RULE_NAMES[id(rule)] for rule, _, _ in STRING_RULES]
RAY_CLUSTER = SPEC["rayCluster"]["properties"]
ENV_SOURCE = RAY_CLUSTER["env"]["items"]["properties"]["valueFrom"]["properties"]
# Kubernetes formats of names and keys (tests/test_formats.py checks their verdicts):
# (rule, the string node that carries it, how many of it one object may hold).
FORMAT_RULES: list[tuple[rules.CelRule, dict[str, Any], int]] = [
    (rules.OBJECT_NAME, MODEL["properties"]["tokenSecretRef"]["properties"]["name"], 1),
    (rules.CONFIG_KEY_FORMAT, MODEL["properties"]["tokenSecretRef"]["properties"]["key"], 1),
    (rules.OBJECT_NAME, ENV_SOURCE["secretKeyRef"]["properties"]["name"], 128),
    (rules.CONFIG_KEY_FORMAT, ENV_SOURCE["configMapKeyRef"]["properties"]["key"], 128),
    (rules.OPTIONAL_OBJECT_NAME, RAY_CLUSTER["serviceAccountName"], 1),
    (
        rules.OPTIONAL_OBJECT_NAME,
        STORAGE["modelCache"]["properties"]["storageClassName"],
        1,
    ),
    (
        rules.TOLERATION_KEY,
        SPEC["accelerator"]["properties"]["tolerations"]["items"]["properties"]["key"],
        32,
    ),
]


@pytest.mark.parametrize(("rule", "node", "string"), STRING_RULES, ids=RULE_IDS)
def test_string_rules_sit_where_the_models_check_them(
    rule: rules.CelRule, node: dict[str, Any], string: dict[str, Any]
) -> None:
    assert rule.as_schema() in node["x-kubernetes-validations"]
    assert rule.check is not None and rule.message.startswith("spec.")
    assert "pattern" not in string  # one verdict, in the rule's words


def test_source_rules_come_in_the_order_the_models_report_them() -> None:
    assert [v["rule"] for v in MODEL["x-kubernetes-validations"]] == [
        r.rule for r in rules.SOURCE_RULES
    ]


# What RE2 (CEL's matches()) would refuse or read otherwise than Python: look-around,
# back-references, atomic groups, possessive quantifiers, and the Unicode-wide \d \w \s.
NOT_RE2 = re.compile(r"\(\?[=!<>]|\(\?<[=!]|\\[1-9dDwWsSbBZz]|[*+?}]\+")


def test_cel_regular_expressions_keep_to_re2_syntax() -> None:
    patterns = [p for rule in _all_rules() for p in re.findall(r"matches\(r'([^']*)'\)", rule)]
    assert len(patterns) >= 10
    for pattern in patterns:
        assert not NOT_RE2.search(pattern), pattern
        assert "\\$" not in pattern, pattern  # `$` is only ever the end anchor
        re.compile(pattern)


# The API server refuses a CRD whose rule's estimated cost exceeds 10,000,000 (and, at
# run time, stops a rule past 1,000,000). The estimate is cel-go's: a string is sized at
# 4 bytes per character of its maxLength; s.matches(re) costs ceil(0.1 * (size + 1)) *
# ceil(0.25 * len(re)); s.contains(t) ceil(0.1 * size) * ceil(0.1 * len(t));
# startsWith/endsWith ceil(0.1 * len(prefix)); each plus reading the string (`self` 1,
# `self.field` 2); `!` 1. For the rules below this gives the numbers the API server's own
# CRD validation computes.
PER_CALL_LIMIT = 1_000_000


def _estimated_cost(expr: rules.Expr, size: int, read: int) -> int:
    if isinstance(expr, rules.Matches):
        return math.ceil(0.1 * (size + 1)) * math.ceil(0.25 * len(expr.pattern)) + read
    if isinstance(expr, rules.Contains):
        return math.ceil(0.1 * size) * math.ceil(0.1 * len(expr.part)) + read
    if isinstance(expr, rules.StartsWith):
        return math.ceil(0.1 * len(expr.prefix)) + read
    if isinstance(expr, rules.EndsWith):
        return math.ceil(0.1 * len(expr.suffix)) + read
    if isinstance(expr, rules.MaxSize):
        return 1 + read  # size() of a string is constant, and one comparison
    if isinstance(expr, rules.Not):
        return _estimated_cost(expr.inner, size, read) + 1
    if isinstance(expr, rules.All):
        return sum(_estimated_cost(part, size, read) for part in expr.parts)
    if isinstance(expr, rules.Implies):
        return (
            _estimated_cost(expr.condition, size, read) + 1 + _estimated_cost(expr.then, size, read)
        )
    raise AssertionError(f"no estimate for {expr!r}")


@pytest.mark.parametrize(("rule", "node", "string"), STRING_RULES, ids=RULE_IDS)
def test_string_rules_are_cheap(
    rule: rules.CelRule, node: dict[str, Any], string: dict[str, Any]
) -> None:
    assert rule.check is not None
    size = 4 * string["maxLength"]
    read = 2 if rule.rule.startswith(("self.", "!self.")) else 1  # self.field or self
    assert _estimated_cost(rule.check, size, read) <= PER_CALL_LIMIT // 20


@pytest.mark.parametrize(
    ("rule", "string", "times"), FORMAT_RULES, ids=[RULE_NAMES[id(r)] for r, _, _ in FORMAT_RULES]
)
def test_format_rules_are_cheap(rule: rules.CelRule, string: dict[str, Any], times: int) -> None:
    assert rule.as_schema() in string["x-kubernetes-validations"]
    assert rule.check is not None and "pattern" not in string
    once = _estimated_cost(rule.check, 4 * string["maxLength"], 1)
    assert once <= PER_CALL_LIMIT // 20
    assert once * times <= PER_CALL_LIMIT


@pytest.mark.parametrize(
    "rule", [rules.QUALIFIED_KEYS, rules.ANNOTATION_KEYS], ids=["QUALIFIED_KEYS", "ANNOTATION_KEYS"]
)
def test_map_key_rules_are_cheap(rule: rules.CelRule) -> None:
    """A map key has no maxLength the API server could size it by: the rule bounds it
    first, and at run time `&&` stops at a key that is too long. One call of the rule
    reads every key of the map (at most 64)."""
    assert rule.check is not None
    assert rule.rule.startswith("self.all(k, (size(k) <= 317 && ")
    maps = [
        n for _, n in _nodes(SCHEMA, "")
        if rule.as_schema() in n.get("x-kubernetes-validations", [])
    ]  # fmt: skip
    assert maps and all(0 < m["maxProperties"] <= 64 for m in maps)
    per_key = _estimated_cost(rule.check, 4 * 317, 1)
    assert per_key * 64 <= PER_CALL_LIMIT


def test_the_cost_estimate_reproduces_the_api_servers() -> None:
    """Guard: values the API server's CRD validation (v1.36) computed for these rules."""
    source = 4 * MODEL["properties"]["source"]["maxLength"]
    computed = {
        rules.SOURCE_SCHEME: (source, 2, 4102),
        rules.SOURCE_GS_BUCKET: (source, 2, 39378),
        rules.SOURCE_PATH: (source, 2, 30345),
        rules.CACHE_MOUNT_PATH: (4 * 1024, 1, 5741),
    }
    for rule, (size, read, cost) in computed.items():
        assert rule.check is not None
        assert _estimated_cost(rule.check, size, read) == cost, rule.rule


def test_rule_terms_render_the_cel_they_evaluate() -> None:
    implies = rules.Implies(rules.StartsWith("hf://"), rules.Contains("@"))
    assert implies.cel("self") == "!self.startsWith('hf://') || self.contains('@')"
    assert rules.Not(implies).cel("self") == f"!({implies.cel('self')})"
    assert [rules.Not(implies).holds(v) for v in ("hf://a", "hf://a@b", "s3://x")] == [
        True,
        False,
        False,
    ]
    # `$` ends the text in CEL (RE2), also where Python's `$` would allow a final newline.
    assert not rules.Matches("^a$").holds("a\n")
    with pytest.raises(ValueError, match="plain CEL literal"):
        rules.StartsWith("it's").cel("self")


def test_the_status_enums_are_the_typed_vocabulary() -> None:
    """The CRD's status enums come from api.vocabulary, the names status writes."""
    status = SCHEMA["properties"]["status"]["properties"]
    assert status["phase"]["enum"] == list(Phase)
    assert status["gcsFaultTolerance"]["enum"] == list(GcsFaultToleranceState)
    assert status["conditions"]["items"]["properties"]["status"]["enum"] == list(ConditionStatus)
