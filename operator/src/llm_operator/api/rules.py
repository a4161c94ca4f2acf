"""Cross-field and format rules, written once as CEL for the API server and checked
again offline.

Each rule carries the CEL expression the CRD enforces at admission and the message
both the API server and the offline validator show, so `kubectl apply` and
`llm-operator validate` give the same verdict in the same words. Rules on one string
(model sources, mount paths) are built from `Expr` terms that render the CEL and
evaluate the same expression in Python, so the two cannot drift apart.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from llm_operator.api.constants import (
    CONFINEMENT_ANNOTATION_PREFIXES,
    GCS_FT_ENV,
    MAX_NAME_LENGTH,
    RESERVED_ENV,
    SOURCE_SCHEMES,
)
from llm_operator.sizing.accelerators import RAY_GPU_ACCELERATOR_TYPES

# --- a small CEL subset over one string, rendered for the CRD and evaluated here --------


class Expr(ABC):
    """A boolean CEL expression over one string (the rule's target)."""

    @abstractmethod
    def cel(self, target: str) -> str:
        """The expression in CEL, reading the string as `target`."""

    @abstractmethod
    def holds(self, value: str) -> bool:
        """The expression evaluated in Python on `value`."""


def _literal(text: str) -> str:
    # The CEL here quotes literals with '...' and has no escapes in them.
    if "'" in text or "\n" in text:
        raise ValueError(f"not a plain CEL literal: {text!r}")
    return text


@cache
def _python_pattern(pattern: str) -> re.Pattern[str]:
    # CEL's matches() is RE2 and unanchored, and there `$` is the end of the text only;
    # Python's `$` also matches before a final newline. The patterns here use `$` only as
    # that anchor and keep to the syntax RE2 and Python share (no look-around, no
    # back-references, no \d, \w or \s, whose Python meaning is wider).
    return re.compile(pattern.replace("$", r"\Z"))


@dataclass(frozen=True)
class Matches(Expr):
    pattern: str

    def cel(self, target: str) -> str:
        return f"{target}.matches(r'{_literal(self.pattern)}')"

    def holds(self, value: str) -> bool:
        return _python_pattern(self.pattern).search(value) is not None


@dataclass(frozen=True)
class StartsWith(Expr):
    prefix: str

    def cel(self, target: str) -> str:
        return f"{target}.startsWith('{_literal(self.prefix)}')"

    def holds(self, value: str) -> bool:
        return value.startswith(self.prefix)


@dataclass(frozen=True)
class EndsWith(Expr):
    suffix: str

    def cel(self, target: str) -> str:
        return f"{target}.endsWith('{_literal(self.suffix)}')"

    def holds(self, value: str) -> bool:
        return value.endswith(self.suffix)


@dataclass(frozen=True)
class Contains(Expr):
    part: str

    def cel(self, target: str) -> str:
        return f"{target}.contains('{_literal(self.part)}')"

    def holds(self, value: str) -> bool:
        return self.part in value


@dataclass(frozen=True)
class MaxSize(Expr):
    """At most `limit` characters (CEL's size() of a string counts code points, as len()
    does); guards a map key, which has no maxLength of its own."""

    limit: int

    def cel(self, target: str) -> str:
        return f"size({target}) <= {self.limit}"

    def holds(self, value: str) -> bool:
        return len(value) <= self.limit


@dataclass(frozen=True)
class Not(Expr):
    inner: Expr

    def cel(self, target: str) -> str:
        inner = self.inner.cel(target)
        return f"!({inner})" if isinstance(self.inner, Implies) else f"!{inner}"

    def holds(self, value: str) -> bool:
        return not self.inner.holds(value)


@dataclass(frozen=True)
class All(Expr):
    parts: tuple[Expr, ...]

    def cel(self, target: str) -> str:
        return "(" + " && ".join(p.cel(target) for p in self.parts) + ")"

    def holds(self, value: str) -> bool:
        return all(p.holds(value) for p in self.parts)


@dataclass(frozen=True)
class Implies(Expr):
    condition: Expr
    then: Expr

    def cel(self, target: str) -> str:
        # Top level in a rule, or parenthesised by Not; && binds tighter than ||.
        return f"{Not(self.condition).cel(target)} || {self.then.cel(target)}"

    def holds(self, value: str) -> bool:
        return not self.condition.holds(value) or self.then.holds(value)


@dataclass(frozen=True)
class CelRule:
    """One `x-kubernetes-validations` entry; `check`, when set, is the same rule as a
    Python test of the string the rule reads (see `string_rule`)."""

    rule: str
    message: str
    field_path: str | None = None
    check: Expr | None = field(default=None, compare=False, repr=False)

    def holds(self, value: str) -> bool:
        if self.check is None:
            raise TypeError(f"{self.rule!r} has no offline check")
        return self.check.holds(value)

    def as_schema(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"rule": self.rule, "message": self.message}
        if self.field_path:
            entry["fieldPath"] = self.field_path
        return entry


def cel_extra(*rules: CelRule) -> dict[str, Any]:
    """`json_schema_extra` that attaches CEL rules to a model's schema."""
    return {"x-kubernetes-validations": [r.as_schema() for r in rules]}


def string_rule(
    check: Expr, message: str, *, target: str = "self", field_path: str | None = None
) -> CelRule:
    """A rule on one string: `target` is that string in CEL (`self` on a string field,
    `self.<field>` on an object); `check` is both the CEL and its offline test."""
    return CelRule(check.cel(target), message, field_path, check)


def every_key_rule(check: Expr, message: str) -> CelRule:
    """A rule on a map that `check` holds for each of its keys; offline, `holds` tests one
    key. A rule on the map, since a structural schema cannot describe map keys."""
    return CelRule(f"self.all(k, {check.cel('k')})", message, None, check)


@dataclass(frozen=True)
class SchemaPattern:
    """A format the CRD states as an OpenAPI `pattern` rather than a CEL rule: for map
    values (the API server names those `map.key`, as the offline check does; CEL would say
    `map[key]`) and for int-or-string quantities. `holds` is the same test in Python."""

    pattern: str
    message: str

    def holds(self, value: str) -> bool:
        return _python_pattern(self.pattern).search(value) is not None


DNS1035_LABEL = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
# Serve import path: `package.module:attribute`.
IMPORT_PATH = r"^[A-Za-z_][A-Za-z0-9_.]*:[A-Za-z_][A-Za-z0-9_.]*$"

# --- grammar of model sources and of paths in pods --------------------------------------
# One path segment: POSIX portable filename characters (letters, digits, `.`, `_`, `-`),
# never `.` or `..` (a segment of dots only needs three or more).
PATH_SEGMENT = r"(?:\.{0,2}[A-Za-z0-9_-]|\.{3})[A-Za-z0-9._-]*"
# Relative and normalised: segments joined by single slashes; no leading, doubled or
# trailing slash, no `.` or `..` segment, no backslash.
RELATIVE_PATH = rf"{PATH_SEGMENT}(?:/{PATH_SEGMENT})*"
# Absolute and normalised: `/` then the same; `/` alone is not a mount point.
MOUNT_PATH = rf"^(?:/{PATH_SEGMENT})+$"
# A Hugging Face repository id (as huggingface_hub checks one): names of letters, digits,
# `-`, `_` and `.`, 1-96 characters, starting and ending with a letter, digit or `_`;
# `--` and `..` are refused apart (below), as is a trailing `.git`.
HF_NAME = r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,94}[A-Za-z0-9_])?"
HF_SOURCE = rf"^hf://{HF_NAME}/{HF_NAME}$"
# A PersistentVolumeClaim of the LLMDeployment's namespace: a DNS-1123 label.
PVC_CLAIM = r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?"
# S3 (general purpose buckets): 3-63 lower-case letters, digits, `.` and `-`, starting and
# ending with a letter or digit; no `..` and no IPv4 address (below).
S3_BUCKET = r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]"
# Cloud Storage: dot-separated parts of lower-case letters, digits, `-` and `_`, each 1-63
# characters starting and ending with a letter or digit; 3-222 characters in all (below).
GCS_PART = r"[a-z0-9](?:[a-z0-9_-]{0,61}[a-z0-9])?"
GCS_BUCKET = rf"{GCS_PART}(?:\.{GCS_PART})*"
IPV4_LIKE = r"[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+"
# Where a source's bucket or claim ends: at the path's slash, or at the end.
_END = "(?:/|$)"
# Git revision names: `/`-separated names of letters, digits, `_`, `-`, `+`, with single
# dots inside a name (no `..`, no name starting or ending with a dot, no empty name).
REVISION_NAME = r"[A-Za-z0-9_+-]+(?:\.[A-Za-z0-9_+-]+)*"
REVISION = rf"^{REVISION_NAME}(?:/{REVISION_NAME})*$"

_PATH_RULES = (
    "segments of letters, digits, '.', '_' and '-' joined by single '/': no '.' or '..' "
    "segment, no empty segment ('//' or a trailing '/'), no backslash"
)

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
SOURCE_SCHEME = string_rule(
    Matches(rf"^(?:{'|'.join(SOURCE_SCHEMES)})://"),
    "spec.model.source must be hf://<org>/<name>, s3://<bucket>/<path>, "
    "gs://<bucket>/<path> or pvc://<claim>/<path>",
    target="self.source",
    field_path=".source",
)
SOURCE_HF = string_rule(
    Implies(
        StartsWith("hf://"),
        All(
            (
                Matches(HF_SOURCE),
                Not(Contains("--")),
                Not(Contains("..")),
                Not(EndsWith(".git")),
            )
        ),
    ),
    "spec.model.source: hf://<org>/<name> takes a Hugging Face repository id, exactly two "
    "names of letters, digits, '-', '_' and '.', each 1-96 characters starting and ending "
    "with a letter, digit or '_', without '--' or '..', not ending in .git; set a branch, "
    "tag or commit in spec.model.revision",
    target="self.source",
    field_path=".source",
)
SOURCE_PVC_CLAIM = string_rule(
    Implies(StartsWith("pvc://"), Matches(rf"^pvc://{PVC_CLAIM}{_END}")),
    "spec.model.source: the claim of pvc://<claim>/<path> must be a DNS-1123 label "
    "(lower-case letters, digits and '-', at most 63 characters), the name of a "
    "PersistentVolumeClaim in this namespace",
    target="self.source",
    field_path=".source",
)
SOURCE_S3_BUCKET = string_rule(
    Implies(
        StartsWith("s3://"),
        All(
            (
                Matches(rf"^s3://{S3_BUCKET}{_END}"),
                Not(Matches(r"^s3://[^/]*\.\.")),
                Not(Matches(rf"^s3://{IPV4_LIKE}{_END}")),
            )
        ),
    ),
    "spec.model.source: the bucket of s3://<bucket>/<path> must be an S3 bucket name: "
    "3-63 lower-case letters, digits, '.' and '-', starting and ending with a letter or "
    "digit, without '..', not an IP address",
    target="self.source",
    field_path=".source",
)
SOURCE_GS_BUCKET = string_rule(
    Implies(
        StartsWith("gs://"),
        All(
            (
                Matches(rf"^gs://{GCS_BUCKET}{_END}"),
                Matches(rf"^gs://[a-z0-9._-]{{3,222}}{_END}"),
                Not(Matches(rf"^gs://{IPV4_LIKE}{_END}")),
                Not(StartsWith("gs://goog")),
                Not(Matches(r"^gs://[^/]*google")),
            )
        ),
    ),
    "spec.model.source: the bucket of gs://<bucket>/<path> must be a Cloud Storage bucket "
    "name: dot-separated parts of lower-case letters, digits, '-' and '_', each 1-63 "
    "characters starting and ending with a letter or digit, 3-222 characters in all, not "
    "an IP address, not starting with 'goog' nor containing 'google'",
    target="self.source",
    field_path=".source",
)
SOURCE_PATH = string_rule(
    Implies(
        Matches(r"^(?:s3|gs|pvc)://"),
        Matches(rf"^(?:s3|gs|pvc)://[^/]*(?:/{RELATIVE_PATH})?$"),
    ),
    "spec.model.source: the <path> of an s3://, gs:// or pvc:// source is optional and, "
    f"when set, relative and normalised: {_PATH_RULES}",
    target="self.source",
    field_path=".source",
)
# In the order the offline check reports the first that fails.
SOURCE_RULES = (
    SOURCE_SCHEME,
    SOURCE_HF,
    SOURCE_PVC_CLAIM,
    SOURCE_S3_BUCKET,
    SOURCE_GS_BUCKET,
    SOURCE_PATH,
)
REVISION_FORMAT = string_rule(
    Matches(REVISION),
    "spec.model.revision must be a branch, tag or commit: '/'-separated names of letters, "
    "digits, '_', '-' and '+', with single dots inside a name (no '..', no name starting or "
    "ending with '.', no empty name)",
)


def _mount_path_rule(field_name: str) -> CelRule:
    return string_rule(
        Matches(MOUNT_PATH),
        f"{field_name} must be an absolute, normalised path: '/' and {_PATH_RULES}",
    )


CACHE_MOUNT_PATH = _mount_path_rule("spec.storage.modelCache.mountPath")
CHECKPOINTS_MOUNT_PATH = _mount_path_rule("spec.storage.checkpoints.mountPath")
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
INCREMENTAL_OPTIONS_NEED_STRATEGY = CelRule(
    rule=(
        "!has(self.incrementalUpgrade) || "
        "self.upgradeStrategy == 'NewClusterWithIncrementalUpgrade'"
    ),
    message=(
        "spec.incrementalUpgrade is only used with upgradeStrategy "
        "NewClusterWithIncrementalUpgrade; set that strategy or remove it"
    ),
    field_path=".incrementalUpgrade",
)
# With an incremental upgrade KubeRay serves through a Gateway of its own and per-cluster
# Serve services (ray-operator v1.6.1 common/service.go BuildServeService): the
# `<rayservice>-serve-svc` a route of ours would lead to is never made.
EXPOSURE_NOT_INCREMENTAL = CelRule(
    rule=(
        "!has(self.exposure) || !has(self.exposure.gateway) || "
        "self.upgradeStrategy != 'NewClusterWithIncrementalUpgrade'"
    ),
    message=(
        "spec.exposure.gateway does not work with upgradeStrategy "
        "NewClusterWithIncrementalUpgrade: KubeRay then serves through its own Gateway "
        "<name>-gateway (status.endpoint) and no <name>-serve-svc exists for the route; "
        "remove it or use upgradeStrategy NewCluster"
    ),
    field_path=".exposure.gateway",
)
# A RayCluster has no upgrade strategy: only a RayService rolls out new clusters.
UPGRADE_ONLY_SERVICE = CelRule(
    rule="self.mode != 'Cluster' || self.upgradeStrategy == 'NewCluster'",
    message=(
        "spec.upgradeStrategy does not apply to mode Cluster: only a RayService (mode "
        "Service) rolls out new Ray clusters; remove it or use mode Service"
    ),
    field_path=".upgradeStrategy",
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
# --- GPU-type fallbacks --------------------------------------------------------------
# Few: each is a worker group, and the CEL cost of the rules below grows with the list.
MAX_FALLBACKS = 4
FALLBACK_RAY_ACCELERATOR_TYPE = CelRule(
    rule=(
        "self.engine.type != 'vllm' || !has(self.accelerator.fallbacks) || "
        f"self.accelerator.fallbacks.all(f, f.type in {_cel_list(RAY_GPU_ACCELERATOR_TYPES)})"
    ),
    message=(
        "spec.accelerator.fallbacks: each type must be an accelerator type Ray Serve LLM "
        "accepts: " + ", ".join(RAY_GPU_ACCELERATOR_TYPES)
    ),
    field_path=".accelerator.fallbacks",
)
FALLBACK_TYPES_DISTINCT = CelRule(
    rule=(
        "!has(self.fallbacks) || (self.fallbacks.all(f, f.type != self.type) && "
        "self.fallbacks.all(f, self.fallbacks.exists_one(g, g.type == f.type)))"
    ),
    message=(
        "spec.accelerator.fallbacks must name each accelerator type once, and not the "
        "preferred spec.accelerator.type: each type is one worker group; remove the repeat"
    ),
    field_path=".fallbacks",
)
FALLBACK_NOT_DISAGGREGATED = CelRule(
    rule="!has(self.disaggregation) || !has(self.accelerator.fallbacks) || "
    "size(self.accelerator.fallbacks) == 0",
    message=(
        "spec.accelerator.fallbacks does not apply with spec.disaggregation: prefill and "
        "decode each have their own worker group on the preferred type; remove fallbacks"
    ),
    field_path=".accelerator.fallbacks",
)
NO_RESERVED_ENV = CelRule(
    rule=f"self.all(e, !(e.name in {_cel_list(RESERVED_ENV)}))",
    message=(
        "spec.rayCluster.env must not set HF_TOKEN, HF_HOME, LLMOP_CHECKPOINT_DIR or "
        "LLMOP_MODEL_SOURCE: the operator sets them from spec.model.tokenSecretRef, "
        "spec.storage.modelCache, spec.storage.checkpoints and spec.model.source; remove the "
        "entry"
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
NO_GCS_FT_ENV = CelRule(
    rule=f"self.all(e, !(e.name in {_cel_list(GCS_FT_ENV)}))",
    message=(
        "spec.rayCluster.env must not set "
        + ", ".join(GCS_FT_ENV)
        + ": KubeRay sets them from spec.rayCluster.gcsFaultTolerance (and refuses a cluster "
        "that sets them by hand); use that field, with the password in a Secret"
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

# --- Kubernetes names, label syntax and quantities ----------------------------------------
# The formats the API server checks on the pods, claims and other objects these fields
# reach. Outside them a spec would be admitted and then make every pod (or the claim)
# fail; with them it is refused at admission and offline alike.

# Names of Secrets, ConfigMaps, ServiceAccounts, claims, storage and gateway classes: a
# DNS-1123 subdomain (dot-separated labels; 253 characters at most, the field's maxLength).
DNS1123_SUBDOMAIN = r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*"
# The name part of a qualified name, which is also what a non-empty label value is.
QUALIFIED_NAME_PART = r"[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
# A qualified name (label and node selector keys, taint keys, resource names): an optional
# DNS-1123 subdomain prefix and `/`, then the name part; the prefix at most 253 characters
# (below), so the whole at most 253 + 1 + 63.
QUALIFIED_NAME = rf"(?:{DNS1123_SUBDOMAIN}/)?{QUALIFIED_NAME_PART}"
# Annotation keys: the API server checks them in lower case, so the prefix may use capitals.
ANNOTATION_KEY = (
    r"(?:[A-Za-z0-9](?:[-A-Za-z0-9]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[-A-Za-z0-9]*[A-Za-z0-9])?)*/)?"
    + QUALIFIED_NAME_PART
)
QUALIFIED_NAME_MAX_LENGTH = 317
_LONG_PREFIX = Matches(r"^[^/]{254,}/")
# A key of a Secret or ConfigMap.
CONFIG_KEY = r"^[-._A-Za-z0-9]+$"
# A resource quantity without a sign (requests, limits and sizes are never negative): a
# decimal number, then a binary (Ki .. Ei) or decimal (n, u, m, k, M .. E) suffix or an
# exponent.
_DECIMAL = r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
QUANTITY = rf"^\+?{_DECIMAL}(?:[KMGTPE]i|[numkMGTPE]|[eE][+-]?{_DECIMAL})?$"
QUANTITY_MAX_LENGTH = 64

_SUBDOMAIN_RULES = (
    "a DNS-1123 subdomain (lower-case letters, digits, '-' and '.', starting and ending "
    "with a letter or digit)"
)
_QUALIFIED_NAME_RULES = (
    "an optional prefix (a DNS-1123 subdomain of at most 253 characters) and '/', then at "
    "most 63 letters, digits, '-', '_' and '.', starting and ending with a letter or digit"
)

OBJECT_NAME = string_rule(
    Matches(rf"^{DNS1123_SUBDOMAIN}$"),
    f"must be an object's name, never namespace/name or a path: {_SUBDOMAIN_RULES}",
)
OPTIONAL_OBJECT_NAME = string_rule(
    Matches(rf"^(?:{DNS1123_SUBDOMAIN})?$"),
    f"must be empty or an object's name: {_SUBDOMAIN_RULES}",
)
CONFIG_KEY_FORMAT = string_rule(
    All((Matches(CONFIG_KEY), Not(StartsWith("..")), Not(Matches(r"^\.$")))),
    "must be a Secret or ConfigMap key: letters, digits, '-', '_' and '.', neither '.' "
    "nor starting with '..'",
)
TOLERATION_KEY = string_rule(
    All((Matches(rf"^(?:{QUALIFIED_NAME})?$"), Not(_LONG_PREFIX))),
    f"must be empty or a taint key: {_QUALIFIED_NAME_RULES}",
)
QUALIFIED_KEYS = every_key_rule(
    All(
        (
            MaxSize(QUALIFIED_NAME_MAX_LENGTH),
            Matches(rf"^{QUALIFIED_NAME}$"),
            Not(_LONG_PREFIX),
        )
    ),
    f"every key must be a qualified name: {_QUALIFIED_NAME_RULES}",
)
ANNOTATION_KEYS = every_key_rule(
    All(
        (
            MaxSize(QUALIFIED_NAME_MAX_LENGTH),
            Matches(rf"^{ANNOTATION_KEY}$"),
            Not(_LONG_PREFIX),
        )
    ),
    f"every key must be an annotation key: {_QUALIFIED_NAME_RULES} (the prefix may use capitals)",
)
LABEL_VALUE = SchemaPattern(
    rf"^(?:{QUALIFIED_NAME_PART})?$",
    "must be a label value: empty, or at most 63 letters, digits, '-', '_' and '.', "
    "starting and ending with a letter or digit",
)
QUANTITY_FORMAT = SchemaPattern(
    QUANTITY,
    "must be a quantity of at least 0: an integer, or a decimal number with an optional "
    "suffix (m, k, M, G, T, P, E, Ki, Mi, Gi, Ti, Pi, Ei or an exponent), e.g. 8, 500m, "
    "16Gi",
)

# --- pod placement: label keys, tolerations, affinity ---------------------------------------
# The checks the API server makes of a pod's tolerations and affinity, so a placement the
# pod would be refused for is refused at admission instead.

LABEL_KEY = string_rule(
    All((Matches(rf"^{QUALIFIED_NAME}$"), Not(_LONG_PREFIX))),
    f"must be a label key: {_QUALIFIED_NAME_RULES}",
)
TOLERATION_KEY_OR_EXISTS = CelRule(
    rule="self.operator == 'Exists' || (has(self.key) && size(self.key) > 0)",
    message=(
        "a toleration without a key must use operator Exists (it then tolerates every taint); "
        "set key or operator: Exists"
    ),
)
TOLERATION_EXISTS_NO_VALUE = CelRule(
    rule="self.operator != 'Exists' || !has(self.value) || size(self.value) == 0",
    message="operator Exists takes no value; remove value or use operator Equal",
)
TOLERATION_SECONDS_NO_EXECUTE = CelRule(
    rule="!has(self.tolerationSeconds) || (has(self.effect) && self.effect == 'NoExecute')",
    message=(
        "tolerationSeconds applies to effect NoExecute only; set effect: NoExecute or remove "
        "tolerationSeconds"
    ),
)
TOLERATION_RULES = (
    TOLERATION_KEY_OR_EXISTS,
    TOLERATION_EXISTS_NO_VALUE,
    TOLERATION_SECONDS_NO_EXECUTE,
)
# The value of a Gt or Lt node requirement: an integer (int64 in the API server).
INTEGER_VALUE = r"^[0-9]{1,18}$"
# Requirements of node affinity (In, NotIn, Exists, DoesNotExist, Gt, Lt) and of label
# selectors (the first four): how many values each operator takes. `values` has no
# default in the CRD (an empty list would be written back), so the rules ask has() first.
NODE_REQUIREMENT_VALUES = CelRule(
    rule=(
        "self.operator in ['In', 'NotIn'] ? (has(self.values) && size(self.values) > 0) : "
        "self.operator in ['Exists', 'DoesNotExist'] ? "
        "(!has(self.values) || size(self.values) == 0) : "
        "(has(self.values) && size(self.values) == 1 && "
        f"self.values[0].matches(r'{INTEGER_VALUE}'))"
    ),
    message=(
        "operators In and NotIn need at least one value, Exists and DoesNotExist take none, "
        "Gt and Lt exactly one non-negative integer"
    ),
)
LABEL_REQUIREMENT_VALUES = CelRule(
    rule=(
        "self.operator in ['In', 'NotIn'] ? (has(self.values) && size(self.values) > 0) : "
        "(!has(self.values) || size(self.values) == 0)"
    ),
    message="operators In and NotIn need at least one value, Exists and DoesNotExist take none",
)
NAMESPACE_NAME = SchemaPattern(
    rf"^{PVC_CLAIM}$",
    "must be a namespace name: at most 63 lower-case letters, digits and '-', starting and "
    "ending with a letter or digit",
)
WORKER_SELECTOR_APART = CelRule(
    rule=(
        "!has(self.rayCluster.worker.nodeSelector) || !has(self.accelerator.nodeSelector) || "
        "self.rayCluster.worker.nodeSelector.all(k, !(k in self.accelerator.nodeSelector))"
    ),
    message=(
        "spec.rayCluster.worker.nodeSelector must not repeat a key of "
        "spec.accelerator.nodeSelector: the accelerator's labels select its nodes; set each "
        "key in one place"
    ),
    field_path=".rayCluster.worker.nodeSelector",
)

# --- GCS fault tolerance (KubeRay's gcsFaultToleranceOptions) ----------------------------------
# What Ray reads from RAY_REDIS_ADDRESS (ray._private.services.get_address): host:port,
# optionally after redis:// or rediss:// (TLS). One address: KubeRay's Redis cleanup Job
# only ever reads the first of a comma-separated list.
_REDIS_SCHEME = r"(?:rediss?://)?"
_DNS_LABEL_63 = r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?"
_IPV4_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = rf"{_IPV4_OCTET}(?:\.{_IPV4_OCTET}){{3}}"
_IPV6 = r"\[[0-9A-Fa-f.]*:[0-9A-Fa-f:.]*\]"
_PORT = r"(?:[1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
REDIS_ADDRESS = rf"^{_REDIS_SCHEME}(?:{_DNS_LABEL_63}(?:\.{_DNS_LABEL_63})*|{_IPV6}):{_PORT}$"
REDIS_ADDRESS_MAX_LENGTH = 270
REDIS_ADDRESS_FORMAT = string_rule(
    All(
        (
            Matches(REDIS_ADDRESS),
            # At most 253 characters of host name, as DNS allows.
            Not(Matches(r"^(?:rediss?://)?[^:\[]{254,}:")),
            # A host of digits and dots is an IPv4 address, and a valid one.
            Not(
                All(
                    (
                        Matches(r"^(?:rediss?://)?[0-9.]+:"),
                        Not(Matches(rf"^{_REDIS_SCHEME}{_IPV4}:")),
                    )
                )
            ),
        )
    ),
    "spec.rayCluster.gcsFaultTolerance.redisAddress must be host:port, optionally after "
    "redis:// or rediss:// (TLS): the host a lower-case DNS name, an IPv4 address or an "
    "IPv6 address in brackets, the port 1-65535; no user, password or path (put the "
    "password in a Secret and name it in redisPasswordSecretRef)",
)
STORAGE_NAMESPACE = SchemaPattern(
    rf"^{QUALIFIED_NAME_PART}$",
    "must be 1-63 letters, digits, '-', '_' and '.', starting and ending with a letter or digit",
)
STORAGE_NAMESPACE_ONLY_CLUSTER = CelRule(
    rule=(
        "self.mode == 'Cluster' || !has(self.rayCluster.gcsFaultTolerance) || "
        "!has(self.rayCluster.gcsFaultTolerance.externalStorageNamespace)"
    ),
    message=(
        "spec.rayCluster.gcsFaultTolerance.externalStorageNamespace is only for mode Cluster: "
        "a RayService upgrade runs two Ray clusters at once, which must not share one storage "
        "namespace (KubeRay's default, each RayCluster's UID, keeps them apart); remove it"
    ),
    field_path=".rayCluster.gcsFaultTolerance.externalStorageNamespace",
)

# --- serving patterns: request routing, LoRA adapters, shared GPUs ----------------------
# Each section configures Ray Serve LLM's own application, so it needs one: mode Service
# with engine vllm (a custom application or a bare RayCluster has nowhere to put it).
_SERVE_LLM_ONLY = "self.mode == 'Service' && self.engine.type == 'vllm'"


def _serve_llm_only(field: str, what: str) -> CelRule:
    return CelRule(
        rule=f"!has(self.{field}) || ({_SERVE_LLM_ONLY})",
        message=(
            f"spec.{field} is only for mode Service with engine.type vllm: it configures "
            f"{what} of Ray Serve LLM; remove it or serve the model with engine vllm"
        ),
        field_path=f".{field}",
    )


ROUTING_ONLY_SERVE_LLM = _serve_llm_only("routing", "the request router")
PREFIX_OPTIONS_NEED_POLICY = CelRule(
    rule="!has(self.prefixCacheAffinity) || self.policy == 'PrefixCacheAffinity'",
    message=(
        "spec.routing.prefixCacheAffinity is only used with policy PrefixCacheAffinity; set "
        "policy: PrefixCacheAffinity or remove it"
    ),
    field_path=".prefixCacheAffinity",
)
LORA_ONLY_SERVE_LLM = _serve_llm_only("lora", "the LoRA adapters")
# Ray Serve LLM 2.60 downloads adapters from object storage only: LoraConfig refuses a
# dynamic_lora_loading_path that is not remote (common/utils/cloud_utils.is_remote_path);
# of its schemes the API offers the two model sources already use.
LORA_SOURCE_SCHEME = string_rule(
    Matches(r"^(?:s3|gs)://"),
    "spec.lora.source must be s3://<bucket>/<path> or gs://<bucket>/<path>: Ray Serve LLM "
    "loads adapters from object storage only, not from hf:// or a local (pvc://) path",
    target="self.source",
    field_path=".source",
)


def _as_lora_source(rule: CelRule) -> CelRule:
    """A bucket or path rule of spec.model.source, for spec.lora.source."""
    if rule.check is None:
        raise TypeError(f"{rule.rule!r} has no offline check")
    return string_rule(
        rule.check,
        rule.message.replace("spec.model.source", "spec.lora.source"),
        target="self.source",
        field_path=".source",
    )


# In the order the offline check reports the first that fails.
LORA_SOURCE_RULES = (
    LORA_SOURCE_SCHEME,
    *(_as_lora_source(r) for r in (SOURCE_S3_BUCKET, SOURCE_GS_BUCKET, SOURCE_PATH)),
)
# Ray Serve LLM reads a requested model `<base>:<adapter>` by splitting at the first ':'
# (common/utils/lora_utils.get_base_model_id): a base model id with ':' never matches.
LORA_MODEL_NAME_NO_COLON = CelRule(
    rule="!has(self.lora) || !has(self.model.name) || !self.model.name.contains(':')",
    message=(
        "spec.model.name must not contain ':' with spec.lora: adapters are requested as "
        "'<model.name>:<adapter>', split at the first ':'; rename the model"
    ),
    field_path=".model.name",
)
_HAS_GPU_FRACTION = "has(self.accelerator.gpuFraction)"
GPU_FRACTION_ONLY_SERVE_LLM = CelRule(
    rule=f"!{_HAS_GPU_FRACTION} || ({_SERVE_LLM_ONLY})",
    message=(
        "spec.accelerator.gpuFraction is only for mode Service with engine.type vllm: it "
        "sizes the GPU bundle of a Ray Serve LLM replica; remove it"
    ),
    field_path=".accelerator.gpuFraction",
)
GPU_FRACTION_ONE_WORKER = CelRule(
    rule=(
        f"!{_HAS_GPU_FRACTION} || "
        "(self.engine.tensorParallelSize == 1 && self.engine.pipelineParallelSize == 1 "
        "&& self.engine.dataParallelSize == 1)"
    ),
    message=(
        "spec.accelerator.gpuFraction needs tensorParallelSize, pipelineParallelSize and "
        "dataParallelSize 1: only a replica with a single engine worker can share a GPU; "
        "remove gpuFraction or the parallelism"
    ),
    field_path=".accelerator.gpuFraction",
)
GPU_FRACTION_MEMORY = CelRule(
    rule=f"!{_HAS_GPU_FRACTION} || "
    "self.engine.gpuMemoryUtilization <= self.accelerator.gpuFraction",
    message=(
        "spec.engine.gpuMemoryUtilization must not exceed spec.accelerator.gpuFraction: "
        "replicas sharing a GPU each get at most their fraction of its memory (vLLM's "
        "gpu_memory_utilization is a fraction of the whole GPU); set gpuMemoryUtilization "
        "to gpuFraction or less"
    ),
    field_path=".engine.gpuMemoryUtilization",
)
DATA_PARALLEL_ONLY_SERVE_LLM = CelRule(
    rule=f"self.engine.dataParallelSize == 1 || ({_SERVE_LLM_ONLY})",
    message=(
        "spec.engine.dataParallelSize above 1 is only for mode Service with engine.type "
        "vllm: Ray Serve LLM's data-parallel builder runs the ranks; remove it"
    ),
    field_path=".engine.dataParallelSize",
)


# --- mode Job: one KubeRay RayJob -------------------------------------------------------
# A Job runs an entrypoint to its end on a fixed set of workers: the serving sections and
# load-driven scaling have nothing to act on, and each is refused by name.
_NOT_JOB = "self.mode != 'Job'"


def _not_for_job(field: str, test: str, why: str) -> CelRule:
    return CelRule(
        rule=f"{_NOT_JOB} || !({test})",
        message=f"spec.{field} does not apply to mode Job: {why}; remove it",
        field_path=f".{field}",
    )


# (field, the CEL test that it is set, why it does not apply)
JOB_REFUSED_FIELDS: tuple[tuple[str, str, str], ...] = (
    (
        "autoscaling",
        "has(self.autoscaling)",
        "a job runs on a fixed number of replicas (set spec.replicas)",
    ),
    ("routing", "has(self.routing)", "it routes Serve requests and a job serves none"),
    ("lora", "has(self.lora)", "it loads adapters into a Serve replica"),
    ("incrementalUpgrade", "has(self.incrementalUpgrade)", "it shifts Serve traffic"),
    (
        "upgradeStrategy",
        "self.upgradeStrategy != 'NewCluster'",
        "it rolls out a RayService's clusters",
    ),
    (
        "engine.importPath",
        "size(self.engine.importPath) > 0",
        "the job runs spec.job.entrypoint, not a Serve application",
    ),
    (
        "engine.type",
        "self.engine.type != 'vllm'",
        "the job runs spec.job.entrypoint, not a Serve application (leave the default)",
    ),
    # `has`, not `size`: the API server types a preserve-unknown-fields object without
    # properties as an object, and CEL's size() has no overload for it.
    ("engine.args", "has(self.engine.args)", "they are Serve engine arguments"),
    ("engine.maxModelLen", "has(self.engine.maxModelLen)", "it is a serving engine setting"),
    (
        "disaggregation",
        "has(self.disaggregation)",
        "it splits Serve engines into prefill and decode, and a job runs one worker group",
    ),
    (
        "exposure.gateway",
        "has(self.exposure) && has(self.exposure.gateway)",
        "the route leads to a RayService's Serve service, and a job serves nothing",
    ),
    (
        "accelerator.fallbacks",
        "has(self.accelerator.fallbacks) && size(self.accelerator.fallbacks) > 0",
        "a job runs on a fixed set of workers of one type, and KubeRay submits it once "
        "that cluster is ready, so a fallback group (0 pods, grown only by the autoscaler) "
        "never stands in for pods that stay Pending",
    ),
    (
        "storage.modelCache.prefetch",
        "has(self.storage) && has(self.storage.modelCache) && "
        "has(self.storage.modelCache.prefetch) && self.storage.modelCache.prefetch",
        "the job's entrypoint reads its base model from LLMOP_MODEL_SOURCE and a RayJob "
        "runs once, so a download held before it is a second run to bound and retry "
        "(set it false)",
    ),
)
JOB_REFUSED = tuple(_not_for_job(field, test, why) for field, test, why in JOB_REFUSED_FIELDS)
JOB_NEEDS_JOB = CelRule(
    rule=f"{_NOT_JOB} || has(self.job)",
    message=(
        "spec.job.entrypoint is required with mode Job: the command the job runs, e.g. "
        "python /opt/train.py"
    ),
    field_path=".job",
)
JOB_ONLY_FOR_JOB = CelRule(
    rule="!has(self.job) || self.mode == 'Job'",
    message="spec.job is only for mode Job; remove it or set mode: Job",
    field_path=".job",
)
MODEL_REQUIRED_TO_SERVE = CelRule(
    rule="self.mode == 'Job' || has(self.model)",
    message=(
        "spec.model is required with mode Service and Cluster (optional only for mode Job); "
        "add spec.model.source"
    ),
    field_path=".model",
)
# KubeRay's ValidateRayJobSpec (ray-operator v1.6.1, controllers/ray/utils/validation.go)
# refuses these RayJobs at reconcile time; here they are refused at admission.
JOB_SUSPEND_NEEDS_SHUTDOWN = CelRule(
    rule="!self.suspend || self.shutdownAfterJobFinishes",
    message=(
        "spec.job.suspend needs shutdownAfterJobFinishes true (KubeRay cannot suspend a job "
        "that keeps its cluster); remove suspend or set shutdownAfterJobFinishes: true"
    ),
    field_path=".suspend",
)
JOB_TTL_NEEDS_SHUTDOWN = CelRule(
    rule=(
        "self.shutdownAfterJobFinishes || !has(self.ttlSecondsAfterFinished) || "
        "self.ttlSecondsAfterFinished == 0"
    ),
    message=(
        "spec.job.ttlSecondsAfterFinished needs shutdownAfterJobFinishes true (it delays the "
        "cluster's deletion); remove it or set shutdownAfterJobFinishes: true"
    ),
    field_path=".ttlSecondsAfterFinished",
)


# --- prefill/decode disaggregation --------------------------------------------------------
# Ray Serve LLM's build_pd_openai_app runs two LLM deployments, each sized by its own role;
# the spec-wide replica fields would size neither.
_HAS_DISAGGREGATION = "has(self.disaggregation)"
PD_ROLES = ("prefill", "decode")
DISAGGREGATION_ONLY_SERVE_LLM = _serve_llm_only(
    "disaggregation", "prefill/decode disaggregation (build_pd_openai_app)"
)
DISAGGREGATION_REPLACES_REPLICAS = CelRule(
    rule=f"!{_HAS_DISAGGREGATION} || !(has(self.replicas) || has(self.autoscaling))",
    message=(
        "spec.replicas and spec.autoscaling do not apply with spec.disaggregation: prefill "
        "and decode are sized apart; set replicas or autoscaling in "
        "spec.disaggregation.prefill and spec.disaggregation.decode instead"
    ),
    field_path=".disaggregation",
)
DISAGGREGATION_WHOLE_GPUS = CelRule(
    rule=f"!{_HAS_DISAGGREGATION} || !{_HAS_GPU_FRACTION}",
    message=(
        "spec.accelerator.gpuFraction does not apply with spec.disaggregation: prefill and "
        "decode engines each hold whole GPUs; remove gpuFraction"
    ),
    field_path=".accelerator.gpuFraction",
)
DISAGGREGATION_NO_DATA_PARALLEL = CelRule(
    rule=f"!{_HAS_DISAGGREGATION} || self.engine.dataParallelSize == 1",
    message=(
        "spec.engine.dataParallelSize above 1 does not apply with spec.disaggregation: each "
        "role is sized by its own tensorParallelSize and replicas; remove dataParallelSize"
    ),
    field_path=".engine.dataParallelSize",
)


def _role_replicas_xor_autoscaling(role: str) -> CelRule:
    at = f"self.disaggregation.{role}"
    return CelRule(
        rule=f"!{_HAS_DISAGGREGATION} || !(has({at}.replicas) && has({at}.autoscaling))",
        message=(
            f"spec.disaggregation.{role}.replicas and spec.disaggregation.{role}.autoscaling "
            "are mutually exclusive: set replicas for a fixed count or autoscaling for a "
            "range, not both"
        ),
        field_path=f".disaggregation.{role}",
    )


def _role_tp_within_node(role: str) -> CelRule:
    at = f"self.disaggregation.{role}.tensorParallelSize"
    return CelRule(
        rule=(f"!{_HAS_DISAGGREGATION} || !has({at}) || {at} <= self.accelerator.gpusPerNode"),
        message=(
            f"spec.disaggregation.{role}.tensorParallelSize must not exceed "
            "spec.accelerator.gpusPerNode: a tensor-parallel group never spans nodes; lower "
            "it and raise spec.engine.pipelineParallelSize instead"
        ),
        field_path=f".disaggregation.{role}.tensorParallelSize",
    )


ROLE_REPLICAS_XOR_AUTOSCALING = {role: _role_replicas_xor_autoscaling(role) for role in PD_ROLES}
ROLE_TP_WITHIN_NODE = {role: _role_tp_within_node(role) for role in PD_ROLES}
DISAGGREGATION_ROLE_RULES = tuple(
    rule
    for role in PD_ROLES
    for rule in (ROLE_REPLICAS_XOR_AUTOSCALING[role], ROLE_TP_WITHIN_NODE[role])
)


# --- exposure: a Gateway API HTTPRoute to the Serve service -------------------------------
# The route's path prefix: '/' or a normalised absolute path, which also keeps to what the
# HTTPRoute CRD's own path rules accept (no '//', '/./', '/../', '%2f', '#').
ROUTE_PATH = rf"^(?:/|(?:/{PATH_SEGMENT})+)$"
ROUTE_PATH_FORMAT = string_rule(
    Matches(ROUTE_PATH),
    f"spec.exposure.gateway.path must be '/' or an absolute, normalised path: {_PATH_RULES}",
)
# Gateway API's Hostname: a DNS name, optionally with a leading '*.' label; no IPs.
GATEWAY_HOSTNAME = SchemaPattern(
    r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
    "must be a host name of lower-case DNS labels, optionally starting with '*.'; not an IP",
)
# Gateway API's SectionName (a listener's name).
SECTION_NAME = SchemaPattern(
    rf"^{DNS1123_SUBDOMAIN}$",
    "must be a listener name: lower-case DNS labels joined by '.'",
)
EXPOSURE_ONLY_SERVICE = CelRule(
    rule="!has(self.exposure) || !has(self.exposure.gateway) || self.mode == 'Service'",
    message=(
        "spec.exposure.gateway is only for mode Service: the route leads to the RayService's "
        "Serve service, which modes Cluster and Job have not; remove it or use mode Service"
    ),
    field_path=".exposure.gateway",
)


# --- model cache prefetch ---------------------------------------------------------------
PREFETCH_JOB_NEEDS_PREFETCH = CelRule(
    rule="!has(self.prefetchJob) || (has(self.prefetch) && self.prefetch)",
    message=(
        "spec.storage.modelCache.prefetchJob bounds the download Job of prefetch: true; "
        "set prefetch: true or remove prefetchJob"
    ),
    field_path=".prefetchJob",
)
