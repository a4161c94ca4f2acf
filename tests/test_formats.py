"""Kubernetes' own formats on the fields that reach pods and claims: names of objects,
Secret keys, label and annotation keys, label values, quantities.

A value outside them would be admitted and then make every pod (or the claim) fail, so
the CRD refuses it at admission (a CEL rule or an OpenAPI pattern) and the offline
validation refuses it naming the field. The verdicts below are Kubernetes' rules written
out by hand; each is checked against the generated CRD's schema node (its pattern,
maxLength and minimum, and the offline test of each CEL rule it carries) and against
`validate`.
"""

from __future__ import annotations

import copy
import itertools
import re
from collections.abc import Callable
from typing import Any

import pytest

from conftest import SAMPLES, load_one
from llm_operator.api import rules
from llm_operator.api.crd import build_crd
from llm_operator.api.validation import SpecError, names_field, validate

SCHEMA = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
Body = dict[str, Any]
Value = int | str

# --- Kubernetes' verdicts, by hand ---------------------------------------------------------
# (accepted, refused). A DNS-1123 subdomain: lower-case alphanumerics, '-' and '.', each
# dot-separated label starting and ending alphanumeric, 253 characters at most.
OBJECT_NAMES: tuple[list[Value], list[Value]] = (
    ["a", "hf-token", "team.a-b", "0abc", "a" * 253],
    ["A", "Hf", "a_b", "-a", "a-", ".a", "a.", "a..b", "kube-system/admin", "a b", "é", "a" * 254],
)
# The same, or empty for "not set".
OPTIONAL_NAMES = (["", *OBJECT_NAMES[0]], OBJECT_NAMES[1])
# A Secret or ConfigMap key: alphanumerics, '-', '_' and '.', never '.', '..' or '..x'.
CONFIG_KEYS: tuple[list[Value], list[Value]] = (
    ["token", "a.b", "A_b-c", ".hidden", "a" * 253],
    [".", "..", "..token", "../token", "a/b", "a b", "é", "a" * 254],
)
# A qualified name: [prefix/]name, the prefix a DNS-1123 subdomain of at most 253
# characters, the name 1-63 alphanumerics, '-', '_' and '.', alphanumeric at both ends.
QUALIFIED_NAMES: tuple[list[Value], list[Value]] = (
    ["a", "A", "team", "app.kubernetes.io/name", "example.com/Team_1", "x" * 63, "p" * 253 + "/n"],
    [
        "-a",
        "a-",
        "_a",
        "a/b/c",
        "Example.com/a",
        "/a",
        "a/",
        "x" * 64,
        "p" * 254 + "/n",
        "é",
        "a b",
        "a\nb",
    ],
)
# A taint key: a qualified name, or empty (with Exists: every taint).
TAINT_KEYS = (["", *QUALIFIED_NAMES[0]], QUALIFIED_NAMES[1])
# An annotation key: a qualified name whose prefix the API server reads in lower case.
ANNOTATION_KEYS = (
    [*QUALIFIED_NAMES[0], "Example.com/a"],
    [k for k in QUALIFIED_NAMES[1] if k != "Example.com/a"],
)
# A label value: empty, or 1-63 alphanumerics, '-', '_' and '.', alphanumeric at both ends.
LABEL_VALUES: tuple[list[Value], list[Value]] = (
    ["", "a", "a-b_c.D", "x" * 63],
    ["x" * 64, "-a", "a-", "a b", "a\nb", "é", "a/b"],
)
# A quantity that is never negative: an integer, or a decimal number with an optional SI
# or binary suffix or exponent, 64 characters at most.
QUANTITIES: tuple[list[Value], list[Value]] = (
    [0, 8, "8", "500m", "16Gi", "1.5", ".5", "5.", "1e3", "1E-3", "+1", "0.5Ti", "1" * 64],
    [-1, "-1", "-4Gi", "lots", "1GB", "1 Gi", "Gi", "", "1.2.3", "1e", "1" * 65],
)


# --- where each format applies -------------------------------------------------------------
def _set(path: list[str | int]) -> Callable[[Body, Any], None]:
    """Sets the value at `path` of a body, making the mappings and lists on the way."""

    def edit(body: Body, value: Any) -> None:
        node: Any = body
        for part, after in itertools.pairwise(path):
            if isinstance(part, int):
                while len(node) <= part:
                    node.append({})
                node = node[part]
            else:
                node = node.setdefault(part, [] if isinstance(after, int) else {})
        node[path[-1]] = value

    return edit


def _key(path: list[str | int]) -> Callable[[Body, Any], None]:
    """Uses the value as a key of the map at `path` (whose value is a valid one)."""
    setter = _set(path)

    def edit(body: Body, key: Any) -> None:
        setter(body, {key: "1" if "resources" in path else "v"})

    return edit


def _env_ref(kind: str, field: str) -> Callable[[Body, Any], None]:
    def edit(body: Body, value: Any) -> None:
        ref = {"name": "s", "key": "k", field: value}
        body["spec"].setdefault("rayCluster", {})["env"] = [{"name": "X", "valueFrom": {kind: ref}}]

    return edit


def _toleration(
    field: str, owner: tuple[str, ...] = ("accelerator",)
) -> Callable[[Body, Any], None]:
    """A toleration with the value in `field`: a key with Exists (which tolerates an empty
    key), a value with Equal."""

    def edit(body: Body, value: Any) -> None:
        toleration = {"key": "k", "operator": "Equal", field: value}
        if field == "key":
            toleration["operator"] = "Exists"
        node = body["spec"]
        for part in owner:
            node = node.setdefault(part, {})
        node["tolerations"] = [toleration]

    return edit


def _node_requirement(field: str) -> Callable[[Body, Any], None]:
    def edit(body: Body, value: Any) -> None:
        requirement = {"key": "k", "operator": "In", "values": ["v"]}
        requirement[field] = [value] if field == "values" else value
        term = {"matchExpressions": [requirement]}
        affinity = {"nodeAffinity": {_REQUIRED: {"nodeSelectorTerms": [term]}}}
        body["spec"].setdefault("rayCluster", {})["head"] = {"affinity": affinity}

    return edit


def _pod_affinity_term(edit_term: Callable[[Body, Any], None]) -> Callable[[Body, Any], None]:
    def edit(body: Body, value: Any) -> None:
        term: Body = {"topologyKey": "kubernetes.io/hostname"}
        edit_term(term, value)
        affinity = {"podAntiAffinity": {_REQUIRED: [term]}}
        body["spec"].setdefault("rayCluster", {})["worker"] = {"affinity": affinity}

    return edit


def _gcs(field: str, *, mode: str = "Service") -> Callable[[Body, Any], None]:
    def edit(body: Body, value: Any) -> None:
        gcs: Body = {"redisAddress": "redis:6379"}
        if field.startswith("redisPasswordSecretRef."):
            ref = {"name": "redis", "key": "password", field.split(".")[1]: value}
            gcs["redisPasswordSecretRef"] = ref
        else:
            gcs[field] = value
        body["spec"]["mode"] = mode
        body["spec"].setdefault("rayCluster", {})["gcsFaultTolerance"] = gcs

    return edit


_REQUIRED = "requiredDuringSchedulingIgnoredDuringExecution"
_NODE_TERM = f"spec.rayCluster.head.affinity.nodeAffinity.{_REQUIRED}.nodeSelectorTerms"
_POD_TERM = f"spec.rayCluster.worker.affinity.podAntiAffinity.{_REQUIRED}"
# What Ray reads from RAY_REDIS_ADDRESS, one address: host:port after an optional redis://
# or rediss://; the host a DNS name, an IPv4 address or a bracketed IPv6 address.
REDIS_ADDRESSES: tuple[list[Value], list[Value]] = (
    [
        "redis:6379",
        "redis.ray.svc.cluster.local:6379",
        "redis://redis:1",
        "rediss://cache.example.com:65535",
        "10.0.0.7:6380",
        "[::1]:6379",
        "[fd00::a:1]:6379",
        "a" * 63 + ":6379",
    ],
    [
        "",
        "redis",
        "redis:",
        ":6379",
        "redis:0",
        "redis:65536",
        "redis:6379/0",
        "Redis:6379",
        "redis_1:6379",
        "redis://:secret@redis:6379",
        "redis://user:secret@redis:6379",
        "http://redis:6379",
        "redis:6379,redis-2:6379",
        " redis:6379",
        "redis:6379\n",
        "999.0.0.1:6379",
        "10.0.0:6379",
        "::1:6379",
        "a" * 64 + ":6379",
        ("a" * 60 + ".") * 4 + "a" * 10 + ":6379",
    ],
)
# Ray's key prefix in Redis: 1-63 letters, digits, '-', '_' and '.', alphanumeric at the ends.
STORAGE_NAMESPACES: tuple[list[Value], list[Value]] = (
    ["a", "team-a.llama_70b", "0" * 63],
    ["", "-a", "a-", "a b", "a/b", "é", "x" * 64],
)


def _upgrade(body: Body, value: Any) -> None:
    body["spec"]["upgradeStrategy"] = "NewClusterWithIncrementalUpgrade"
    body["spec"]["incrementalUpgrade"] = {"gatewayClassName": value}


# (schema path, field the error names, how to set it, the verdicts). Schema paths follow
# the node: `{}` is a map's values, `[]` a list's items; a key rule sits on its map.
Case = tuple[str, str, Callable[[Body, Any], None], tuple[list[Value], list[Value]]]


def _label_map(path: list[str | int], key: str) -> tuple[Case, Case]:
    """A map of label keys to label values (a node selector, pod labels): its keys' rule
    on the map, its values' rule on the value at `key`."""
    dotted = ".".join(str(part) for part in path)
    return (
        (dotted, dotted, _key(path), QUALIFIED_NAMES),
        (f"{dotted}{{}}", f"{dotted}.{key}", _set([*path, key]), LABEL_VALUES),
    )


CASES: list[Case] = [
    (
        "spec.model.tokenSecretRef.name",
        "spec.model.tokenSecretRef.name",
        lambda b, v: b["spec"]["model"].update(tokenSecretRef={"name": v, "key": "token"}),
        OBJECT_NAMES,
    ),
    (
        "spec.model.tokenSecretRef.key",
        "spec.model.tokenSecretRef.key",
        lambda b, v: b["spec"]["model"].update(tokenSecretRef={"name": "hf", "key": v}),
        CONFIG_KEYS,
    ),
    (
        "spec.rayCluster.env[].valueFrom.secretKeyRef.name",
        "spec.rayCluster.env[0].valueFrom.secretKeyRef.name",
        _env_ref("secretKeyRef", "name"),
        OBJECT_NAMES,
    ),
    (
        "spec.rayCluster.env[].valueFrom.secretKeyRef.key",
        "spec.rayCluster.env[0].valueFrom.secretKeyRef.key",
        _env_ref("secretKeyRef", "key"),
        CONFIG_KEYS,
    ),
    (
        "spec.rayCluster.env[].valueFrom.configMapKeyRef.name",
        "spec.rayCluster.env[0].valueFrom.configMapKeyRef.name",
        _env_ref("configMapKeyRef", "name"),
        OBJECT_NAMES,
    ),
    (
        "spec.rayCluster.env[].valueFrom.configMapKeyRef.key",
        "spec.rayCluster.env[0].valueFrom.configMapKeyRef.key",
        _env_ref("configMapKeyRef", "key"),
        CONFIG_KEYS,
    ),
    (
        "spec.rayCluster.imagePullSecrets[].name",
        "spec.rayCluster.imagePullSecrets[0].name",
        _set(["spec", "rayCluster", "imagePullSecrets", 0, "name"]),
        OBJECT_NAMES,
    ),
    (
        "spec.incrementalUpgrade.gatewayClassName",
        "spec.incrementalUpgrade.gatewayClassName",
        _upgrade,
        OBJECT_NAMES,
    ),
    (
        "spec.rayCluster.serviceAccountName",
        "spec.rayCluster.serviceAccountName",
        _set(["spec", "rayCluster", "serviceAccountName"]),
        OPTIONAL_NAMES,
    ),
    *(
        (
            f"spec.storage.{volume}.{field}",
            f"spec.storage.{volume}.{field}",
            _set(["spec", "storage", volume, field]),
            OPTIONAL_NAMES,
        )
        for volume in ("modelCache", "checkpoints")
        for field in ("storageClassName", "existingClaim")
    ),
    (
        "spec.accelerator.tolerations[].key",
        "spec.accelerator.tolerations[0].key",
        _toleration("key"),
        TAINT_KEYS,
    ),
    (
        "spec.accelerator.tolerations[].value",
        "spec.accelerator.tolerations[0].value",
        _toleration("value"),
        LABEL_VALUES,
    ),
    *_label_map(["spec", "accelerator", "nodeSelector"], "gpu"),
    *_label_map(["spec", "rayCluster", "podLabels"], "team"),
    (
        "spec.rayCluster.podAnnotations",
        "spec.rayCluster.podAnnotations",
        _key(["spec", "rayCluster", "podAnnotations"]),
        ANNOTATION_KEYS,
    ),
    *(
        (
            f"spec.storage.{volume}.size",
            f"spec.storage.{volume}.size",
            _set(["spec", "storage", volume, "size"]),
            QUANTITIES,
        )
        for volume in ("modelCache", "checkpoints")
    ),
    *(
        (
            f"spec.rayCluster.{pod}.resources.{part}{{}}",
            f"spec.rayCluster.{pod}.resources.{part}.memory",
            _set(["spec", "rayCluster", pod, "resources", part, "memory"]),
            QUANTITIES,
        )
        for pod in ("head", "worker")
        for part in ("requests", "limits")
    ),
    *(
        (
            f"spec.rayCluster.{pod}.resources.{part}",
            f"spec.rayCluster.{pod}.resources.{part}",
            _key(["spec", "rayCluster", pod, "resources", part]),
            QUALIFIED_NAMES,
        )
        for pod in ("head", "worker", "autoscaler")
        for part in ("requests", "limits")
    ),
    (
        "spec.rayCluster.autoscaler.resources.limits{}",
        "spec.rayCluster.autoscaler.resources.limits.cpu",
        _set(["spec", "rayCluster", "autoscaler", "resources", "limits", "cpu"]),
        QUANTITIES,
    ),
    # Placement of the head and the workers.
    *(
        case
        for pod in ("head", "worker")
        for case in (
            *_label_map(["spec", "rayCluster", pod, "nodeSelector"], "pool"),
            (
                f"spec.rayCluster.{pod}.tolerations[].key",
                f"spec.rayCluster.{pod}.tolerations[0].key",
                _toleration("key", ("rayCluster", pod)),
                TAINT_KEYS,
            ),
            (
                f"spec.rayCluster.{pod}.tolerations[].value",
                f"spec.rayCluster.{pod}.tolerations[0].value",
                _toleration("value", ("rayCluster", pod)),
                LABEL_VALUES,
            ),
            (
                f"spec.rayCluster.{pod}.priorityClassName",
                f"spec.rayCluster.{pod}.priorityClassName",
                _set(["spec", "rayCluster", pod, "priorityClassName"]),
                OPTIONAL_NAMES,
            ),
        )
    ),
    (
        f"{_NODE_TERM}[].matchExpressions[].key",
        f"{_NODE_TERM}[0].matchExpressions[0].key",
        _node_requirement("key"),
        QUALIFIED_NAMES,
    ),
    (
        f"{_NODE_TERM}[].matchExpressions[].values[]",
        f"{_NODE_TERM}[0].matchExpressions[0].values[0]",
        _node_requirement("values"),
        LABEL_VALUES,
    ),
    (
        f"{_POD_TERM}[].topologyKey",
        f"{_POD_TERM}[0].topologyKey",
        _pod_affinity_term(lambda term, v: term.update(topologyKey=v)),
        QUALIFIED_NAMES,
    ),
    (
        f"{_POD_TERM}[].labelSelector.matchLabels",
        f"{_POD_TERM}[0].labelSelector.matchLabels",
        _pod_affinity_term(lambda term, v: term.update(labelSelector={"matchLabels": {v: "x"}})),
        QUALIFIED_NAMES,
    ),
    (
        f"{_POD_TERM}[].labelSelector.matchExpressions[].key",
        f"{_POD_TERM}[0].labelSelector.matchExpressions[0].key",
        _pod_affinity_term(
            lambda term, v: term.update(
                labelSelector={"matchExpressions": [{"key": v, "operator": "Exists"}]}
            )
        ),
        QUALIFIED_NAMES,
    ),
    (
        f"{_POD_TERM}[].namespaces[]",
        f"{_POD_TERM}[0].namespaces[0]",
        _pod_affinity_term(lambda term, v: term.update(namespaces=[v])),
        (["a", "ray-system", "x" * 63], ["", "A", "a.b", "-a", "a_b", "x" * 64]),
    ),
    # GCS fault tolerance.
    (
        "spec.rayCluster.gcsFaultTolerance.redisAddress",
        "spec.rayCluster.gcsFaultTolerance.redisAddress",
        _gcs("redisAddress"),
        REDIS_ADDRESSES,
    ),
    (
        "spec.rayCluster.gcsFaultTolerance.redisPasswordSecretRef.name",
        "spec.rayCluster.gcsFaultTolerance.redisPasswordSecretRef.name",
        _gcs("redisPasswordSecretRef.name"),
        OBJECT_NAMES,
    ),
    (
        "spec.rayCluster.gcsFaultTolerance.redisPasswordSecretRef.key",
        "spec.rayCluster.gcsFaultTolerance.redisPasswordSecretRef.key",
        _gcs("redisPasswordSecretRef.key"),
        CONFIG_KEYS,
    ),
    (
        "spec.rayCluster.gcsFaultTolerance.externalStorageNamespace",
        "spec.rayCluster.gcsFaultTolerance.externalStorageNamespace",
        _gcs("externalStorageNamespace", mode="Cluster"),
        STORAGE_NAMESPACES,
    ),
]
IDS = [f"{path}" for path, *_ in CASES]


def _node(path: str) -> dict[str, Any]:
    node = SCHEMA
    for part in re.findall(r"[^.\[\]{}]+|\[\]|\{\}", path):
        if part == "[]":
            node = node["items"]
        elif part == "{}":
            node = node["additionalProperties"]
        else:
            node = node["properties"][part]
    return node


RULES = {
    rule.rule: rule
    for rule in vars(rules).values()
    if isinstance(rule, rules.CelRule) and rule.check is not None
}


def _crd_admits(node: dict[str, Any], value: Value, *, as_key: bool) -> bool:
    """The verdict of the CRD's schema node: a key against the CEL rules on its map, a
    value against the node's pattern, maxLength, minimum and CEL rules."""
    checks = [RULES[entry["rule"]] for entry in node.get("x-kubernetes-validations", [])
              if entry["rule"] in RULES]  # fmt: skip
    if as_key:
        assert checks, "a key format is a CEL rule on the map"
        return all(rule.holds(str(value)) for rule in checks)
    if isinstance(value, int):
        assert node.get("x-kubernetes-int-or-string") is True
        return value >= node.get("minimum", value)
    if len(value) > node.get("maxLength", len(value)):
        return False
    # The API server matches `pattern` with RE2, where `$` ends the text only.
    pattern = node.get("pattern")
    if pattern is not None and not re.search(pattern.replace("$", r"\Z"), value):
        return False
    return all(rule.holds(value) for rule in checks)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_the_crd_gives_kubernetes_verdicts(case: Case) -> None:
    path, _, _, (accepted, refused) = case
    node = _node(path)
    as_key = not path.endswith(("{}", "]")) and node.get("type") == "object"
    assert node.get("pattern") or node.get("x-kubernetes-validations"), "no format at all"
    assert [v for v in accepted if not _crd_admits(node, v, as_key=as_key)] == []
    assert [v for v in refused if _crd_admits(node, v, as_key=as_key)] == []


def _quickstart() -> Body:
    return copy.deepcopy(load_one(SAMPLES / "quickstart.yaml"))


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_validation_gives_kubernetes_verdicts_naming_the_field(case: Case) -> None:
    _, field, place, (accepted, refused) = case
    for value in accepted:
        body = _quickstart()
        place(body, value)
        validate(body)
    for value in refused:
        body = _quickstart()
        place(body, value)
        with pytest.raises(SpecError) as caught:
            validate(body)
        messages = [str(error) for error in caught.value.errors]
        assert any(names_field(m, field) for m in messages), (value, messages)


def test_metadata_labels_and_annotations_are_checked_like_the_api_server_does() -> None:
    """The API server checks every object's metadata itself; offline, the CLI does."""
    for key in QUALIFIED_NAMES[0]:
        body = _quickstart()
        body["metadata"]["labels"] = {key: "v"}
        validate(body)
    for labels in ({"team": "natural language"}, {"équipe": "nlp"}, {"a": "x" * 64}):
        body = _quickstart()
        body["metadata"]["labels"] = labels
        with pytest.raises(SpecError) as caught:
            validate(body)
        assert [e.field for e in caught.value.errors] == ["metadata.labels"]
    body = _quickstart()
    body["metadata"]["annotations"] = {"not a key!": "x"}
    with pytest.raises(SpecError) as caught:
        validate(body)
    assert [e.field for e in caught.value.errors] == ["metadata.annotations"]
