"""LLMDeployment spec and status: the single source of the API and of its CRD schema.

Every field has a description (it becomes `kubectl explain` text), bounds and
defaults; cross-field rules and the formats of names, keys and quantities are CEL rules
or patterns from `rules.py`, re-checked offline by the validators below with the same
messages.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from llm_operator.api import rules
from llm_operator.api.constants import (
    API_VERSION,
    CONFINEMENT_ANNOTATION_PREFIXES,
    GCS_FT_ENV,
    KIND,
    MAX_NAME_LENGTH,
    RESERVED_ENV,
)
from llm_operator.api.vocabulary import ConditionStatus, GcsFaultToleranceState, Phase
from llm_operator.sizing.accelerators import RAY_GPU_ACCELERATOR_TYPES


def _check(condition: bool, rule: rules.CelRule | rules.SchemaPattern) -> None:
    if not condition:
        raise ValueError(rule.message)


def _string_rule(rule: rules.CelRule) -> tuple[AfterValidator, Any]:
    """Annotations for a string field: the CEL rule in the CRD, the same check here."""

    def check(value: str) -> str:
        _check(rule.holds(value), rule)
        return value

    return AfterValidator(check), Field(json_schema_extra=rules.cel_extra(rule))


def _pattern(rule: rules.SchemaPattern) -> tuple[AfterValidator, Any]:
    """Annotations for a string the CRD checks with an OpenAPI `pattern`."""

    def check(value: Any) -> Any:
        _check(isinstance(value, str) and rule.holds(value), rule)
        return value

    return AfterValidator(check), Field(json_schema_extra={"pattern": rule.pattern})


def _quantity(value: int | str) -> int | str:
    if isinstance(value, int):
        _check(value >= 0, rules.QUANTITY_FORMAT)
    else:
        _check(
            len(value) <= rules.QUANTITY_MAX_LENGTH and rules.QUANTITY_FORMAT.holds(value),
            rules.QUANTITY_FORMAT,
        )
    return value


def _every_key(mapping: dict[str, Any], rule: rules.CelRule) -> dict[str, Any]:
    """`mapping`, once `rule` (a CEL rule on the map, see `rules.every_key_rule`) holds
    for each of its keys."""
    _check(all(rule.holds(key) for key in mapping), rule)
    return mapping


# Int-or-string in the CRD, with the pattern and bounds in the same place as the API
# server's own quantities.
Quantity = Annotated[
    int | str,
    AfterValidator(_quantity),
    Field(
        description="A Kubernetes resource quantity, e.g. 4, 500m, 16Gi.",
        json_schema_extra={
            "pattern": rules.QUANTITY,
            "maxLength": rules.QUANTITY_MAX_LENGTH,
            "minimum": 0,
        },
    ),
]
LabelValue = Annotated[str, StringConstraints(max_length=63), *_pattern(rules.LABEL_VALUE)]
AnnotationValue = Annotated[str, StringConstraints(max_length=4096)]
# Keys of labels, node selectors, resources and annotations: their format is a CEL rule on
# the map (`rules.QUALIFIED_KEYS`, `rules.ANNOTATION_KEYS`).
MapKey = Annotated[str, StringConstraints(max_length=rules.QUALIFIED_NAME_MAX_LENGTH)]
# The name of an object (a Secret or ConfigMap of the namespace, a GatewayClass).
Name = Annotated[
    str, StringConstraints(min_length=1, max_length=253), *_string_rule(rules.OBJECT_NAME)
]
# The same, or empty for "not set" (a claim, a storage class, a ServiceAccount).
OptionalName = Annotated[
    str, StringConstraints(max_length=253), *_string_rule(rules.OPTIONAL_OBJECT_NAME)
]
ConfigKey = Annotated[
    str, StringConstraints(min_length=1, max_length=253), *_string_rule(rules.CONFIG_KEY_FORMAT)
]


class ApiModel(BaseModel):
    """Base: camelCase on the wire, unknown fields rejected, values validated on set.

    Strict like the API server's schema: "2" is not an integer, "yes" not a boolean, 2.0
    not an integer, so `llm-operator validate` refuses what `kubectl apply` refuses.
    """

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        validate_assignment=True,
        strict=True,
    )


# --- building blocks ------------------------------------------------------------------


class SecretKeySelector(ApiModel):
    """A key of a Secret in the LLMDeployment's namespace."""

    name: Name = Field(description="Name of the Secret.")
    key: ConfigKey = Field(description="Key within the Secret.")


class ConfigMapKeySelector(ApiModel):
    """A key of a ConfigMap in the LLMDeployment's namespace."""

    name: Name = Field(description="Name of the ConfigMap.")
    key: ConfigKey = Field(description="Key within the ConfigMap.")


class FieldSelector(ApiModel):
    """A field of the pod, as in the downward API."""

    field_path: Annotated[str, StringConstraints(min_length=1, max_length=253)] = Field(
        description="Path of the pod field, e.g. metadata.name or status.podIP."
    )


class EnvVarSource(ApiModel):
    """Where an environment variable's value comes from (exactly one source)."""

    model_config = ConfigDict(json_schema_extra=rules.cel_extra(rules.VALUE_FROM_EXACTLY_ONE))

    secret_key_ref: SecretKeySelector | None = Field(
        default=None, description="Value from a key of a Secret."
    )
    config_map_key_ref: ConfigMapKeySelector | None = Field(
        default=None, description="Value from a key of a ConfigMap."
    )
    field_ref: FieldSelector | None = Field(
        default=None, description="Value from a field of the pod."
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> EnvVarSource:
        chosen = [self.secret_key_ref, self.config_map_key_ref, self.field_ref]
        _check(sum(x is not None for x in chosen) == 1, rules.VALUE_FROM_EXACTLY_ONE)
        return self


class EnvVar(ApiModel):
    """An environment variable for the Ray containers."""

    model_config = ConfigDict(json_schema_extra=rules.cel_extra(rules.ENV_VALUE_XOR_VALUE_FROM))

    name: Annotated[
        str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    ] = Field(description="Variable name (a C identifier).")
    value: Annotated[str, StringConstraints(max_length=32768)] | None = Field(
        default=None, description="Literal value."
    )
    value_from: EnvVarSource | None = Field(
        default=None, description="Value taken from a Secret, ConfigMap or pod field."
    )

    @model_validator(mode="after")
    def _value_or_value_from(self) -> EnvVar:
        _check(self.value is None or self.value_from is None, rules.ENV_VALUE_XOR_VALUE_FROM)
        return self


class LocalObjectReference(ApiModel):
    """A reference to an object by name in the same namespace."""

    name: Name = Field(description="Name of the referenced object.")


class Toleration(ApiModel):
    """A Kubernetes toleration, checked as the API server checks a pod's."""

    model_config = ConfigDict(json_schema_extra=rules.cel_extra(*rules.TOLERATION_RULES))

    key: (
        Annotated[
            str,
            StringConstraints(max_length=rules.QUALIFIED_NAME_MAX_LENGTH),
            *_string_rule(rules.TOLERATION_KEY),
        ]
        | None
    ) = Field(default=None, description="Taint key; empty with Exists matches all.")
    operator: Literal["Exists", "Equal"] = Field(default="Equal", description="Exists or Equal.")
    value: LabelValue | None = Field(default=None, description="Taint value for Equal.")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        default=None, description="Taint effect to tolerate; empty matches all effects."
    )
    toleration_seconds: int | None = Field(
        default=None, ge=0, description="How long a NoExecute taint is tolerated."
    )

    @model_validator(mode="after")
    def _pod_rules(self) -> Toleration:
        _check(self.operator == "Exists" or bool(self.key), rules.TOLERATION_KEY_OR_EXISTS)
        _check(self.operator != "Exists" or not self.value, rules.TOLERATION_EXISTS_NO_VALUE)
        _check(
            self.toleration_seconds is None or self.effect == "NoExecute",
            rules.TOLERATION_SECONDS_NO_EXECUTE,
        )
        return self


# A label key where one string holds it (affinity requirements, topology keys).
LabelKey = Annotated[
    str,
    StringConstraints(min_length=1, max_length=rules.QUALIFIED_NAME_MAX_LENGTH),
    *_string_rule(rules.LABEL_KEY),
]


class NodeSelectorRequirement(ApiModel):
    """A requirement on one node label."""

    model_config = ConfigDict(json_schema_extra=rules.cel_extra(rules.NODE_REQUIREMENT_VALUES))

    key: LabelKey = Field(description="The node label key.")
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"] = Field(
        description="In, NotIn, Exists, DoesNotExist, Gt or Lt."
    )
    values: list[LabelValue] = Field(
        default_factory=list,
        max_length=32,
        description=(
            "Label values: at least one for In and NotIn, none for Exists and DoesNotExist, "
            "one integer for Gt and Lt."
        ),
    )

    @model_validator(mode="after")
    def _values_for_operator(self) -> NodeSelectorRequirement:
        if self.operator in ("In", "NotIn"):
            fits = bool(self.values)
        elif self.operator in ("Exists", "DoesNotExist"):
            fits = not self.values
        else:
            fits = len(self.values) == 1 and rules.Matches(rules.INTEGER_VALUE).holds(
                self.values[0]
            )
        _check(fits, rules.NODE_REQUIREMENT_VALUES)
        return self


class NodeSelectorTerm(ApiModel):
    """Requirements a node must all meet."""

    match_expressions: list[NodeSelectorRequirement] = Field(
        min_length=1, max_length=16, description="Requirements on node labels, all of them met."
    )


class NodeSelector(ApiModel):
    """Node selector terms, any of which a node may meet."""

    node_selector_terms: list[NodeSelectorTerm] = Field(
        min_length=1, max_length=8, description="Terms; a node meeting any one of them fits."
    )


class PreferredSchedulingTerm(ApiModel):
    """A weighted preference for nodes."""

    weight: int = Field(ge=1, le=100, description="Weight, 1-100.")
    preference: NodeSelectorTerm = Field(description="The nodes preferred.")


class NodeAffinity(ApiModel):
    """Node affinity of the pod."""

    required_during_scheduling_ignored_during_execution: NodeSelector | None = Field(
        default=None, description="Nodes the pod may only run on."
    )
    preferred_during_scheduling_ignored_during_execution: list[PreferredSchedulingTerm] = Field(
        default_factory=list, max_length=8, description="Nodes the scheduler prefers."
    )


class LabelSelectorRequirement(ApiModel):
    """A requirement on one pod label."""

    model_config = ConfigDict(json_schema_extra=rules.cel_extra(rules.LABEL_REQUIREMENT_VALUES))

    key: LabelKey = Field(description="The label key.")
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"] = Field(
        description="In, NotIn, Exists or DoesNotExist."
    )
    values: list[LabelValue] = Field(
        default_factory=list,
        max_length=32,
        description="Label values: at least one for In and NotIn, none otherwise.",
    )

    @model_validator(mode="after")
    def _values_for_operator(self) -> LabelSelectorRequirement:
        fits = bool(self.values) if self.operator in ("In", "NotIn") else not self.values
        _check(fits, rules.LABEL_REQUIREMENT_VALUES)
        return self


class LabelSelector(ApiModel):
    """A label selector: matchLabels and matchExpressions, all met."""

    match_labels: dict[MapKey, LabelValue] = Field(
        default_factory=dict,
        max_length=16,
        description="Labels and their values.",
        json_schema_extra=rules.cel_extra(rules.QUALIFIED_KEYS),
    )
    match_expressions: list[LabelSelectorRequirement] = Field(
        default_factory=list, max_length=16, description="Requirements on labels."
    )

    @field_validator("match_labels")
    @classmethod
    def _label_keys(cls, labels: dict[str, str]) -> dict[str, str]:
        return _every_key(labels, rules.QUALIFIED_KEYS)


class PodAffinityTerm(ApiModel):
    """Pods to be near (or away from) within a topology domain."""

    label_selector: LabelSelector | None = Field(default=None, description="The pods.")
    namespaces: list[
        Annotated[str, StringConstraints(max_length=63), *_pattern(rules.NAMESPACE_NAME)]
    ] = Field(
        default_factory=list,
        max_length=16,
        description="Namespaces of those pods; empty means the pod's own.",
    )
    topology_key: LabelKey = Field(
        description="Node label whose value defines the domain, e.g. kubernetes.io/hostname."
    )


class WeightedPodAffinityTerm(ApiModel):
    """A weighted pod affinity preference."""

    weight: int = Field(ge=1, le=100, description="Weight, 1-100.")
    pod_affinity_term: PodAffinityTerm = Field(description="The preferred term.")


class PodAffinity(ApiModel):
    """Pod affinity or anti-affinity."""

    required_during_scheduling_ignored_during_execution: list[PodAffinityTerm] = Field(
        default_factory=list, max_length=8, description="Terms the pod's node must meet."
    )
    preferred_during_scheduling_ignored_during_execution: list[WeightedPodAffinityTerm] = Field(
        default_factory=list, max_length=8, description="Terms the scheduler prefers."
    )


class Affinity(ApiModel):
    """Kubernetes affinity, typed so that admission and `llm-operator validate` check it
    as the API server checks a pod's: every field of the pod API but matchFields,
    namespaceSelector, matchLabelKeys and mismatchLabelKeys."""

    node_affinity: NodeAffinity | None = Field(default=None, description="Node affinity.")
    pod_affinity: PodAffinity | None = Field(default=None, description="Pod affinity.")
    pod_anti_affinity: PodAffinity | None = Field(default=None, description="Pod anti-affinity.")


class ResourceRequirements(ApiModel):
    """CPU and memory for a Ray container. GPUs are derived from the engine's parallelism."""

    requests: dict[MapKey, Quantity] = Field(
        default_factory=dict,
        max_length=16,
        description="Minimum resources, e.g. {cpu: 8, memory: 64Gi}.",
        json_schema_extra=rules.cel_extra(rules.QUALIFIED_KEYS),
    )
    limits: dict[MapKey, Quantity] = Field(
        default_factory=dict,
        max_length=16,
        description="Maximum resources, e.g. {cpu: 8, memory: 64Gi}.",
        json_schema_extra=rules.cel_extra(rules.QUALIFIED_KEYS),
    )

    @field_validator("requests", "limits")
    @classmethod
    def _resource_names(cls, resources: dict[str, Any]) -> dict[str, Any]:
        return _every_key(resources, rules.QUALIFIED_KEYS)


# --- spec sections --------------------------------------------------------------------


class ModelSpec(ApiModel):
    """Which model to serve and where its weights come from."""

    model_config = ConfigDict(json_schema_extra=rules.cel_extra(*rules.SOURCE_RULES))

    name: Annotated[str, StringConstraints(min_length=1, max_length=256)] | None = Field(
        default=None,
        description="Model id served on the OpenAI-compatible API; defaults to metadata.name.",
    )
    source: Annotated[str, StringConstraints(min_length=1, max_length=2048)] = Field(
        description=(
            "Where the weights come from: hf://<org>/<name> (a Hugging Face repository id, "
            "exactly two names; a branch, tag or commit goes in revision), s3://<bucket>/<path>, "
            "gs://<bucket>/<path>, or pvc://<claim>/<path> (a PersistentVolumeClaim in this "
            "namespace, mounted read-only). Bucket names follow S3's and Cloud Storage's "
            "rules, claims are DNS-1123 labels; the optional path is relative and "
            "normalised: segments of letters, digits, '.', '_' and '-' joined by single "
            "'/', never '.' or '..'."
        )
    )
    revision: Annotated[str, StringConstraints(min_length=1, max_length=256)] | None = Field(
        default=None,
        description="Model revision (branch, tag or commit) for hf:// sources.",
        json_schema_extra=rules.cel_extra(rules.REVISION_FORMAT),
    )
    token_secret_ref: SecretKeySelector | None = Field(
        default=None,
        description=(
            "Secret key holding the Hugging Face token; passed to pods as HF_TOKEN via "
            "secretKeyRef. The operator never reads it."
        ),
    )
    parameters_billions: float | None = Field(
        default=None,
        gt=0,
        le=100000,
        description=(
            "Model size in billions of parameters; enables the GPU memory fit check "
            "(ResourcesFit condition)."
        ),
    )

    @field_validator("revision")
    @classmethod
    def _revision_format(cls, revision: str | None) -> str | None:
        _check(revision is None or rules.REVISION_FORMAT.holds(revision), rules.REVISION_FORMAT)
        return revision

    @model_validator(mode="after")
    def _source_grammar(self) -> ModelSpec:
        for rule in rules.SOURCE_RULES:
            _check(rule.holds(self.source), rule)
        return self


class EngineSpec(ApiModel):
    """The inference engine and its parallelism."""

    model_config = ConfigDict(
        json_schema_extra=rules.cel_extra(
            rules.IMPORT_PATH_ONLY_CUSTOM,
            rules.IMPORT_PATH_REQUIRED_CUSTOM,
            rules.IMPORT_PATH_FORMAT,
        )
    )

    type: Literal["vllm", "custom"] = Field(
        default="vllm",
        description=(
            "vllm serves the model with Ray Serve LLM (ray.serve.llm:build_openai_app); "
            "custom runs your own Serve application from importPath."
        ),
    )
    tensor_parallel_size: int = Field(
        default=1, ge=1, le=64, description="GPUs per tensor-parallel group (within one node)."
    )
    pipeline_parallel_size: int = Field(
        default=1, ge=1, le=64, description="Pipeline stages; stages may span nodes."
    )
    data_parallel_size: int = Field(
        default=1,
        ge=1,
        le=64,
        description=(
            "Data-parallel ranks per replica (data-parallel attention, e.g. for MoE "
            "models): above 1 Ray Serve LLM's build_dp_openai_app runs each replica as this "
            "many engine instances of tensor x pipeline GPUs, scheduled together."
        ),
    )
    max_model_len: int | None = Field(
        default=None, ge=1, le=10_000_000, description="Maximum context length in tokens."
    )
    dtype: Literal["auto", "half", "float16", "bfloat16", "float", "float32"] = Field(
        default="auto", description="Weight and activation dtype."
    )
    gpu_memory_utilization: float = Field(
        default=0.9, gt=0, le=1, description="Fraction of each GPU's memory the engine may use."
    )
    args: dict[str, Any] = Field(
        default_factory=dict,
        description=(
            "Extra engine arguments: merged into engine_kwargs for vllm, passed as the "
            "application args for custom."
        ),
    )
    import_path: Annotated[str, StringConstraints(max_length=512)] = Field(
        default="",
        description="Serve application import path (module:attribute); custom engine only.",
    )

    @model_validator(mode="after")
    def _import_path_rules(self) -> EngineSpec:
        custom = self.type == "custom"
        _check(custom or not self.import_path, rules.IMPORT_PATH_ONLY_CUSTOM)
        _check(not custom or bool(self.import_path), rules.IMPORT_PATH_REQUIRED_CUSTOM)
        _check(
            not self.import_path or re.match(rules.IMPORT_PATH, self.import_path) is not None,
            rules.IMPORT_PATH_FORMAT,
        )
        return self

    @property
    def gpus_per_replica(self) -> int:
        return self.tensor_parallel_size * self.pipeline_parallel_size * self.data_parallel_size


# The GPU type field's format, for the preferred type and each fallback.
AcceleratorType = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][-A-Za-z0-9_.]*$")
]
GpuResourceName = Annotated[
    str,
    StringConstraints(
        min_length=1,
        max_length=253,
        pattern=r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[a-z0-9]([-a-z0-9_.]*[a-z0-9])?$",
    ),
]


class AcceleratorFallback(ApiModel):
    """Another GPU type the model may run on when the preferred one has no room: its own
    worker group, sized for the same parallelism."""

    type: AcceleratorType = Field(
        description=(
            "Ray accelerator type of this fallback; with engine vllm one of the types Ray "
            "Serve LLM accepts, and different from the preferred type and other fallbacks."
        ),
    )
    gpus_per_node: int = Field(
        default=8, ge=1, le=64, description="GPUs on each node of this type."
    )
    resource_name: GpuResourceName = Field(
        default="nvidia.com/gpu", description="Extended resource name of this type's GPU."
    )
    node_selector: dict[MapKey, LabelValue] = Field(
        default_factory=dict,
        max_length=32,
        description=(
            "Node labels that select nodes of this type; defaults to the operator's "
            "accelerator label with this type."
        ),
        json_schema_extra=rules.cel_extra(rules.QUALIFIED_KEYS),
    )

    @field_validator("node_selector")
    @classmethod
    def _node_label_keys(cls, node_selector: dict[str, str]) -> dict[str, str]:
        return _every_key(node_selector, rules.QUALIFIED_KEYS)


class AcceleratorSpec(ApiModel):
    """The GPU type and the nodes that carry it."""

    model_config = ConfigDict(json_schema_extra=rules.cel_extra(rules.FALLBACK_TYPES_DISTINCT))

    type: AcceleratorType = Field(
        description=(
            "Ray accelerator type, e.g. L4, A10G, A100-80G, H100, H200; with engine vllm one "
            "of the types Ray Serve LLM accepts."
        ),
    )
    gpus_per_node: int = Field(
        default=8, ge=1, le=64, description="GPUs on each node of this type."
    )
    resource_name: GpuResourceName = Field(
        default="nvidia.com/gpu", description="Extended resource name of the GPU."
    )
    gpu_fraction: float | None = Field(
        default=None,
        ge=0.01,
        lt=1,
        description=(
            "Share of one GPU each replica takes, so that small models share GPUs: "
            "floor(1 / gpuFraction) replicas per GPU worker pod, which still holds a whole "
            "GPU. Needs tensor and pipeline parallel size 1 and gpuMemoryUtilization at "
            "most gpuFraction."
        ),
    )
    node_selector: dict[MapKey, LabelValue] = Field(
        default_factory=dict,
        max_length=32,
        description=(
            "Node labels that select nodes of this accelerator type; defaults to the "
            "operator's accelerator catalogue."
        ),
        json_schema_extra=rules.cel_extra(rules.QUALIFIED_KEYS),
    )
    tolerations: list[Toleration] = Field(
        default_factory=list,
        max_length=32,
        description=(
            "Tolerations for GPU worker pods; a toleration for the GPU resource's "
            "NoSchedule taint is always added."
        ),
    )
    fallbacks: list[AcceleratorFallback] = Field(
        default_factory=list,
        max_length=rules.MAX_FALLBACKS,
        description=(
            "Other GPU types, in order of preference, for when the preferred type has no "
            "room: one more worker group each (gpu-workers-<type>), starting at no pods and "
            "sized for the same tensor x pipeline layout. Serve then does not pin replicas "
            "to one accelerator type."
        ),
    )

    @field_validator("node_selector")
    @classmethod
    def _node_label_keys(cls, node_selector: dict[str, str]) -> dict[str, str]:
        return _every_key(node_selector, rules.QUALIFIED_KEYS)

    @model_validator(mode="after")
    def _distinct_fallbacks(self) -> AcceleratorSpec:
        types = [self.type, *(f.type for f in self.fallbacks)]
        _check(len(set(types)) == len(types), rules.FALLBACK_TYPES_DISTINCT)
        return self


class AutoscalingSpec(ApiModel):
    """Serve autoscaling bounds; the Ray autoscaler follows them with whole worker pods."""

    model_config = ConfigDict(
        json_schema_extra=rules.cel_extra(rules.MIN_LE_MAX, rules.TARGET_LE_MAX_ONGOING)
    )

    min_replicas: int = Field(
        default=1, ge=0, le=1000, description="Fewest replicas; 0 scales to zero."
    )
    max_replicas: int = Field(ge=1, le=1000, description="Most replicas.")
    target_ongoing_requests: int = Field(
        default=16, ge=1, le=100000, description="Ongoing requests per replica Serve aims for."
    )
    max_ongoing_requests: int = Field(
        default=64, ge=1, le=100000, description="Ongoing requests a replica accepts at most."
    )

    @model_validator(mode="after")
    def _bounds(self) -> AutoscalingSpec:
        _check(self.min_replicas <= self.max_replicas, rules.MIN_LE_MAX)
        _check(
            self.target_ongoing_requests <= self.max_ongoing_requests, rules.TARGET_LE_MAX_ONGOING
        )
        return self


class _ReplicaRange:
    """The replica range of a model with the fields replicas and autoscaling (exclusive)."""

    # Declared for type checking only: a runtime annotation would make pydantic collect
    # them as fields here, ahead of the model's own.
    if TYPE_CHECKING:
        replicas: int | None
        autoscaling: AutoscalingSpec | None

    @property
    def min_replicas(self) -> int:
        if self.autoscaling is not None:
            return self.autoscaling.min_replicas
        return 1 if self.replicas is None else self.replicas

    @property
    def max_replicas(self) -> int:
        if self.autoscaling is not None:
            return self.autoscaling.max_replicas
        return self.min_replicas


AccessMode = Literal["ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany", "ReadWriteOncePod"]


class VolumeSpec(ApiModel):
    """A PersistentVolumeClaim, created by the operator or brought by you."""

    size: Quantity = Field(default="100Gi", description="Requested capacity of a created claim.")
    storage_class_name: OptionalName = Field(
        default="", description="StorageClass of a created claim; empty uses the cluster default."
    )
    access_modes: list[AccessMode] = Field(
        default=["ReadWriteMany"],
        min_length=1,
        max_length=4,
        description="Access modes of a created claim; ReadWriteMany lets every Ray pod share it.",
    )
    existing_claim: OptionalName = Field(
        default="",
        description=(
            "Use this existing claim (of the LLMDeployment's namespace) as is instead of "
            "creating one."
        ),
    )
    mount_path: Annotated[
        str, StringConstraints(min_length=2, max_length=1024, pattern=rules.MOUNT_PATH)
    ] = Field(default="/data", description="Where the claim is mounted in Ray containers.")
    retain_on_delete: bool = Field(
        default=True,
        description="Keep a created claim when the LLMDeployment is deleted.",
    )


# Mount paths: absolute and normalised (no `.`, `..` or empty segment), so the container
# path is what it reads and two spellings of one directory cannot pass as distinct.
MountPath = Annotated[str, StringConstraints(min_length=2, max_length=1024)]


class PrefetchJobSpec(ApiModel):
    """Bounds of the download Job of spec.storage.modelCache.prefetch."""

    backoff_limit: int = Field(
        default=3,
        ge=0,
        le=100,
        description=(
            "Retries of the download Job (a new pod each) before it counts as failed "
            "(condition ModelCached, reason DownloadFailed)."
        ),
    )
    active_deadline_seconds: int = Field(
        default=21600,
        ge=1,
        le=2_147_483_647,
        description=(
            "Seconds the download Job may run, retries included, before Kubernetes stops "
            "it and marks it failed (default 6 hours)."
        ),
    )


class ModelCacheSpec(VolumeSpec):
    """Model cache shared by all Ray pods; HF_HOME points into it."""

    model_config = ConfigDict(json_schema_extra=rules.cel_extra(rules.PREFETCH_JOB_NEEDS_PREFETCH))

    size: Quantity = Field(default="200Gi", description="Requested capacity of a created claim.")
    mount_path: MountPath = Field(
        default="/models",
        description="Where the cache is mounted in Ray containers (absolute, normalised).",
        json_schema_extra=rules.cel_extra(rules.CACHE_MOUNT_PATH),
    )
    prefetch: bool = Field(
        default=False,
        description=(
            "Download the model into this claim with a Job before the Ray resource is "
            "created (condition ModelCached); the Ray pods then load it from the claim, "
            "not from its source. A changed model.source or revision downloads again."
        ),
    )
    prefetch_job: PrefetchJobSpec | None = Field(
        default=None,
        description=(
            "Retries and time limit of the download Job (needs prefetch: true); omitted, "
            "backoffLimit 3 and activeDeadlineSeconds 21600."
        ),
    )

    @model_validator(mode="after")
    def _prefetch_job_needs_prefetch(self) -> ModelCacheSpec:
        _check(self.prefetch or self.prefetch_job is None, rules.PREFETCH_JOB_NEEDS_PREFETCH)
        return self

    @field_validator("mount_path")
    @classmethod
    def _mount_path_format(cls, mount_path: str) -> str:
        _check(rules.CACHE_MOUNT_PATH.holds(mount_path), rules.CACHE_MOUNT_PATH)
        return mount_path


class CheckpointSpec(VolumeSpec):
    """Checkpoint storage for fine-tuning and batch work."""

    mount_path: MountPath = Field(
        default="/checkpoints",
        description="Where checkpoints are mounted in Ray containers (absolute, normalised).",
        json_schema_extra=rules.cel_extra(rules.CHECKPOINTS_MOUNT_PATH),
    )

    @field_validator("mount_path")
    @classmethod
    def _mount_path_format(cls, mount_path: str) -> str:
        _check(rules.CHECKPOINTS_MOUNT_PATH.holds(mount_path), rules.CHECKPOINTS_MOUNT_PATH)
        return mount_path


class StorageSpec(ApiModel):
    """Persistent volumes for the model cache and checkpoints."""

    model_config = ConfigDict(json_schema_extra=rules.cel_extra(rules.DISTINCT_MOUNT_PATHS))

    model_cache: ModelCacheSpec | None = Field(
        default=None, description="Model cache claim; omit to download into each pod."
    )
    checkpoints: CheckpointSpec | None = Field(default=None, description="Checkpoint claim.")

    @model_validator(mode="after")
    def _distinct_mount_paths(self) -> StorageSpec:
        cache, checkpoints = self.model_cache, self.checkpoints
        _check(
            cache is None or checkpoints is None or cache.mount_path != checkpoints.mount_path,
            rules.DISTINCT_MOUNT_PATHS,
        )
        return self


class PodResourcesSpec(ApiModel):
    """Resources and placement of one kind of Ray pod."""

    resources: ResourceRequirements = Field(
        default_factory=ResourceRequirements, description="CPU and memory requests and limits."
    )
    node_selector: dict[MapKey, LabelValue] = Field(
        default_factory=dict,
        max_length=32,
        description=(
            "Node labels the pods need. On the head alone; on GPU workers merged with the "
            "accelerator's selector (which keeps its own keys)."
        ),
        json_schema_extra=rules.cel_extra(rules.QUALIFIED_KEYS),
    )
    tolerations: list[Toleration] = Field(
        default_factory=list,
        max_length=32,
        description=(
            "Tolerations of the pods. The head gets only these (no GPU toleration); GPU "
            "workers get the accelerator's too."
        ),
    )
    affinity: Affinity | None = Field(default=None, description="Affinity of the pods.")
    priority_class_name: OptionalName = Field(
        default="", description="PriorityClass of the pods; empty uses the cluster's default."
    )

    @field_validator("node_selector")
    @classmethod
    def _node_label_keys(cls, node_selector: dict[str, str]) -> dict[str, str]:
        return _every_key(node_selector, rules.QUALIFIED_KEYS)


class RayAutoscalerSpec(ApiModel):
    """Ray autoscaler settings (KubeRay in-tree autoscaling)."""

    idle_timeout_seconds: int = Field(
        default=60, ge=0, le=86400, description="Seconds an idle worker pod lives before removal."
    )
    upscaling_mode: Literal["Default", "Aggressive", "Conservative"] = Field(
        default="Default", description="How fast the Ray autoscaler adds pods."
    )
    resources: ResourceRequirements = Field(
        default_factory=ResourceRequirements,
        description=(
            "CPU and memory of KubeRay's autoscaler sidecar in the head pod; empty uses the "
            "operator's default (LLMOP_AUTOSCALER_RESOURCES)."
        ),
    )


class GcsFaultToleranceSpec(ApiModel):
    """GCS fault tolerance: the head keeps Ray's cluster state in an external Redis, so a
    new head takes over the running workers (KubeRay gcsFaultToleranceOptions)."""

    redis_address: Annotated[
        str,
        StringConstraints(min_length=1, max_length=rules.REDIS_ADDRESS_MAX_LENGTH),
        *_string_rule(rules.REDIS_ADDRESS_FORMAT),
    ] = Field(
        description=(
            "Redis address, host:port, optionally after redis:// or rediss:// (TLS), e.g. "
            "redis.ray-system.svc.cluster.local:6379. No credentials in it."
        )
    )
    redis_password_secret_ref: SecretKeySelector | None = Field(
        default=None,
        description=(
            "Secret key holding the Redis password; passed to the head as REDIS_PASSWORD via "
            "secretKeyRef. The operator never reads it."
        ),
    )
    external_storage_namespace: (
        Annotated[
            str, StringConstraints(min_length=1, max_length=63), *_pattern(rules.STORAGE_NAMESPACE)
        ]
        | None
    ) = Field(
        default=None,
        description=(
            "Key prefix of this cluster's state in Redis; mode Cluster only. Default: the "
            "RayCluster's UID, unique per cluster."
        ),
    )


class RayClusterSpec(ApiModel):
    """The Ray cluster the model runs on."""

    image: Annotated[str, StringConstraints(max_length=512)] = Field(
        default="", description="Ray image; empty uses the operator's default."
    )
    ray_version: Annotated[str, StringConstraints(max_length=32)] = Field(
        default="", description="Ray version in the image; empty uses the operator's default."
    )
    head: PodResourcesSpec = Field(
        default_factory=PodResourcesSpec,
        description="Head pod: resources and placement (never gets GPUs).",
    )
    worker: PodResourcesSpec = Field(
        default_factory=PodResourcesSpec,
        description="GPU worker pods: resources and placement (GPUs are derived).",
    )
    autoscaler: RayAutoscalerSpec = Field(
        default_factory=RayAutoscalerSpec, description="Ray autoscaler settings."
    )
    gcs_fault_tolerance: GcsFaultToleranceSpec | None = Field(
        default=None,
        description=(
            "GCS fault tolerance with an external Redis: a lost head is replaced without "
            "restarting the workers. Omit to keep Ray's state in the head only."
        ),
    )
    service_account_name: OptionalName = Field(
        default="", description="ServiceAccount for Ray pods; empty uses the namespace default."
    )
    image_pull_secrets: list[LocalObjectReference] = Field(
        default_factory=list, max_length=16, description="Pull secrets for the Ray image."
    )
    env: list[EnvVar] = Field(
        default_factory=list,
        max_length=128,
        description=(
            "Extra environment for Ray containers (not HF_TOKEN, HF_HOME, "
            "LLMOP_CHECKPOINT_DIR or LLMOP_MODEL_SOURCE, nor the Redis variables of "
            "gcsFaultTolerance)."
        ),
        json_schema_extra=rules.cel_extra(rules.NO_RESERVED_ENV, rules.NO_GCS_FT_ENV),
    )
    pod_labels: dict[MapKey, LabelValue] = Field(
        default_factory=dict,
        max_length=64,
        description="Extra labels on Ray pods (not ray.io/*).",
        json_schema_extra=rules.cel_extra(rules.NO_RAY_POD_LABELS, rules.QUALIFIED_KEYS),
    )
    pod_annotations: dict[MapKey, AnnotationValue] = Field(
        default_factory=dict,
        max_length=64,
        description="Extra annotations on Ray pods (no AppArmor or seccomp profiles).",
        json_schema_extra=rules.cel_extra(rules.NO_CONFINEMENT_ANNOTATIONS, rules.ANNOTATION_KEYS),
    )

    @field_validator("pod_labels")
    @classmethod
    def _label_keys(cls, labels: dict[str, str]) -> dict[str, str]:
        return _every_key(labels, rules.QUALIFIED_KEYS)

    @field_validator("pod_annotations")
    @classmethod
    def _annotation_keys(cls, annotations: dict[str, str]) -> dict[str, str]:
        return _every_key(annotations, rules.ANNOTATION_KEYS)

    @field_validator("env")
    @classmethod
    def _distinct_env_names(cls, env: list[EnvVar]) -> list[EnvVar]:
        # The CRD makes env a list map keyed by name: the API server refuses duplicates.
        seen: set[str] = set()
        for index, entry in enumerate(env):
            if entry.name in seen:
                raise ValueError(
                    f"spec.rayCluster.env[{index}]: duplicate name {entry.name}; "
                    "set each variable once"
                )
            seen.add(entry.name)
        return env

    @model_validator(mode="after")
    def _no_reserved_labels(self) -> RayClusterSpec:
        _check(not any(k.startswith("ray.io/") for k in self.pod_labels), rules.NO_RAY_POD_LABELS)
        _check(all(e.name not in RESERVED_ENV for e in self.env), rules.NO_RESERVED_ENV)
        _check(all(e.name not in GCS_FT_ENV for e in self.env), rules.NO_GCS_FT_ENV)
        _check(
            not any(k.startswith(CONFINEMENT_ANNOTATION_PREFIXES) for k in self.pod_annotations),
            rules.NO_CONFINEMENT_ANNOTATIONS,
        )
        return self


class MonitoringSpec(ApiModel):
    """Prometheus scraping of Ray and engine metrics."""

    prometheus: bool = Field(
        default=True,
        description=(
            "Add prometheus.io/scrape|port|path annotations and the metrics port to Ray pods."
        ),
    )


class GatewayParentRef(ApiModel):
    """A Gateway (Gateway API) the route attaches to."""

    name: Name = Field(description="Name of the Gateway.")
    namespace: (
        Annotated[str, StringConstraints(max_length=63), *_pattern(rules.NAMESPACE_NAME)] | None
    ) = Field(default=None, description="Namespace of the Gateway; default the route's own.")
    section_name: (
        Annotated[str, StringConstraints(max_length=253), *_pattern(rules.SECTION_NAME)] | None
    ) = Field(default=None, description="The Gateway's listener to attach to; default all.")
    port: int | None = Field(
        default=None, ge=1, le=65535, description="The Gateway's listener port to attach to."
    )


GatewayHostname = Annotated[
    str, StringConstraints(min_length=1, max_length=253), *_pattern(rules.GATEWAY_HOSTNAME)
]


class GatewayExposureSpec(ApiModel):
    """An HTTPRoute (gateway.networking.k8s.io/v1) from Gateways to the Serve service."""

    parent_refs: list[GatewayParentRef] = Field(
        min_length=1,
        max_length=8,
        description="Gateways the route attaches to (their listeners must allow it).",
    )
    hostnames: list[GatewayHostname] = Field(
        default_factory=list,
        max_length=16,
        description="Host names the route answers; empty: those of the Gateway's listeners.",
    )
    path: Annotated[str, StringConstraints(min_length=1, max_length=1024)] = Field(
        default="/",
        description=(
            "Path prefix of the route; the Serve service sees requests with it replaced by "
            "'/', so the API is at <path>/v1."
        ),
        json_schema_extra=rules.cel_extra(rules.ROUTE_PATH_FORMAT),
    )

    @field_validator("path")
    @classmethod
    def _path_format(cls, path: str) -> str:
        _check(rules.ROUTE_PATH_FORMAT.holds(path), rules.ROUTE_PATH_FORMAT)
        return path


class ExposureSpec(ApiModel):
    """How clients outside the cluster reach the model."""

    gateway: GatewayExposureSpec | None = Field(
        default=None,
        description="Route from Gateway API Gateways to the Serve service (mode Service).",
    )


UpgradeStrategy = Literal["NewCluster", "NewClusterWithIncrementalUpgrade", "None"]


class IncrementalUpgradeSpec(ApiModel):
    """Traffic-shifting upgrade through Gateway API (KubeRay clusterUpgradeOptions)."""

    gateway_class_name: Name = Field(
        description="GatewayClass KubeRay uses to shift traffic between clusters."
    )
    step_size_percent: int = Field(
        default=25, ge=1, le=100, description="Share of traffic moved per step."
    )
    interval_seconds: int = Field(default=60, ge=1, le=86400, description="Seconds between steps.")
    max_surge_percent: int = Field(
        default=100, ge=0, le=100, description="Extra capacity the new cluster may add, in percent."
    )


RoutingPolicy = Literal["PowerOfTwoChoices", "PrefixCacheAffinity"]


class PrefixCacheAffinitySpec(ApiModel):
    """Options of Ray Serve LLM's PrefixCacheAffinityRouter; unset keeps Ray's default."""

    imbalanced_threshold: float | None = Field(
        default=None,
        ge=0,
        le=1_000_000,
        description=(
            "Queue-length difference between replicas above which the load counts as "
            "imbalanced and the router falls back to power of two choices (Ray's default: "
            "never)."
        ),
    )
    match_rate_threshold: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description=(
            "Smallest prefix match rate (0-1) for which the router prefers the replica "
            "holding the prefix (Ray's default: 0.1)."
        ),
    )


class RoutingSpec(ApiModel):
    """How Serve picks the replica for each request."""

    model_config = ConfigDict(json_schema_extra=rules.cel_extra(rules.PREFIX_OPTIONS_NEED_POLICY))

    policy: RoutingPolicy = Field(
        default="PowerOfTwoChoices",
        description=(
            "PowerOfTwoChoices (Serve's default router: the shorter queue of two random "
            "replicas) or PrefixCacheAffinity (requests sharing a prompt prefix go to the "
            "replica that likely holds its KV cache)."
        ),
    )
    prefix_cache_affinity: PrefixCacheAffinitySpec | None = Field(
        default=None, description="Options for policy PrefixCacheAffinity."
    )

    @model_validator(mode="after")
    def _options_match_policy(self) -> RoutingSpec:
        _check(
            self.prefix_cache_affinity is None or self.policy == "PrefixCacheAffinity",
            rules.PREFIX_OPTIONS_NEED_POLICY,
        )
        return self


class LoraSpec(ApiModel):
    """LoRA adapters of the base model, loaded on demand from object storage."""

    model_config = ConfigDict(json_schema_extra=rules.cel_extra(*rules.LORA_SOURCE_RULES))

    source: Annotated[str, StringConstraints(min_length=1, max_length=2048)] = Field(
        description=(
            "Object storage prefix holding one directory per adapter: s3://<bucket>/<path> "
            "or gs://<bucket>/<path>. Adapter x (<source>/x) is requested as model "
            "<model.name>:x."
        )
    )
    max_adapters_per_replica: int = Field(
        default=16,
        ge=1,
        le=1024,
        description="Adapters each replica keeps loaded; the least recently used is evicted.",
    )
    max_rank: int = Field(
        default=64,
        ge=1,
        le=512,
        description="Largest LoRA rank served (the engine's max_lora_rank).",
    )

    @model_validator(mode="after")
    def _source_grammar(self) -> LoraSpec:
        for rule in rules.LORA_SOURCE_RULES:
            _check(rule.holds(self.source), rule)
        return self


class JobSpec(ApiModel):
    """The run of mode Job: KubeRay submits the entrypoint to the job's own Ray cluster
    (a RayJob) and reports its outcome."""

    model_config = ConfigDict(
        json_schema_extra=rules.cel_extra(
            rules.JOB_SUSPEND_NEEDS_SHUTDOWN, rules.JOB_TTL_NEEDS_SHUTDOWN
        )
    )

    entrypoint: Annotated[str, StringConstraints(min_length=1, max_length=8192)] = Field(
        description=(
            "The command the job runs on the Ray head, e.g. python /opt/train.py; it reads "
            "its checkpoint directory from LLMOP_CHECKPOINT_DIR."
        )
    )
    runtime_env: dict[str, Any] | None = Field(
        default=None,
        description=(
            "Ray runtime environment of the job (working_dir, pip, env_vars, ...), passed "
            "to KubeRay as runtimeEnvYAML."
        ),
    )
    submitter_resources: ResourceRequirements | None = Field(
        default=None,
        description=(
            "CPU and memory of KubeRay's submitter pod (which runs `ray job submit`); empty "
            "uses the operator's default."
        ),
    )
    active_deadline_seconds: int | None = Field(
        default=None,
        ge=1,
        le=2_147_483_647,
        description="Seconds the job may run before KubeRay stops it and marks it Failed.",
    )
    backoff_limit: int | None = Field(
        default=None,
        ge=0,
        le=100,
        description=(
            "Retries before the job counts as Failed (KubeRay's default 0); each retry runs "
            "on a new Ray cluster and resumes from the checkpoints claim."
        ),
    )
    shutdown_after_job_finishes: bool = Field(
        default=True,
        description="Delete the job's Ray cluster (and free its GPUs) once the job finishes.",
    )
    ttl_seconds_after_finished: int | None = Field(
        default=None,
        ge=0,
        le=2_147_483_647,
        description=(
            "Seconds the finished job's Ray cluster is kept (logs, dashboard) before it is "
            "deleted; needs shutdownAfterJobFinishes."
        ),
    )
    suspend: bool = Field(
        default=False,
        description=(
            "Hold the job: KubeRay creates no Ray cluster (or deletes a running one) until "
            "it is false again."
        ),
    )

    @model_validator(mode="after")
    def _kuberay_rules(self) -> JobSpec:
        _check(
            not self.suspend or self.shutdown_after_job_finishes, rules.JOB_SUSPEND_NEEDS_SHUTDOWN
        )
        _check(
            self.shutdown_after_job_finishes or not self.ttl_seconds_after_finished,
            rules.JOB_TTL_NEEDS_SHUTDOWN,
        )
        return self


KvConnector = Literal["NixlConnector", "LMCacheConnectorV1"]


class DisaggregationRoleSpec(_ReplicaRange, ApiModel):
    """One side of prefill/decode disaggregation: its engines' parallelism and count."""

    tensor_parallel_size: int | None = Field(
        default=None,
        ge=1,
        le=64,
        description=(
            "GPUs per tensor-parallel group of this role's engines (within one node); "
            "default spec.engine.tensorParallelSize. Pipeline stages come from "
            "spec.engine.pipelineParallelSize."
        ),
    )
    replicas: int | None = Field(
        default=None,
        ge=1,
        le=1000,
        description="Fixed number of this role's engines (default 1); exclusive with autoscaling.",
    )
    autoscaling: AutoscalingSpec | None = Field(
        default=None,
        description="This role's replica range driven by load; exclusive with replicas.",
    )


class DisaggregationSpec(ApiModel):
    """Prefill/decode disaggregation: Ray Serve LLM's build_pd_openai_app runs prompt
    prefill and token decode on separate engines that hand the KV cache over."""

    prefill: DisaggregationRoleSpec = Field(
        default_factory=DisaggregationRoleSpec,
        description="Engines that process prompts (worker group prefill-workers).",
    )
    decode: DisaggregationRoleSpec = Field(
        default_factory=DisaggregationRoleSpec,
        description="Engines that generate tokens (worker group decode-workers).",
    )
    kv_connector: KvConnector = Field(
        default="NixlConnector",
        description=(
            "vLLM KV connector that moves the KV cache from prefill to decode: "
            "NixlConnector or LMCacheConnectorV1 (the image must carry lmcache)."
        ),
    )

    def role(self, name: str) -> DisaggregationRoleSpec:
        role: DisaggregationRoleSpec = getattr(self, name)
        return role


class LLMDeploymentSpec(_ReplicaRange, ApiModel):
    """Desired state of an LLMDeployment."""

    model_config = ConfigDict(
        json_schema_extra=rules.cel_extra(
            rules.REPLICAS_XOR_AUTOSCALING,
            rules.TP_WITHIN_NODE,
            rules.SERVICE_NEEDS_REPLICA,
            rules.INCREMENTAL_NEEDS_OPTIONS,
            rules.INCREMENTAL_OPTIONS_NEED_STRATEGY,
            rules.UPGRADE_ONLY_SERVICE,
            rules.EXPOSURE_NOT_INCREMENTAL,
            rules.RAY_ACCELERATOR_TYPE,
            rules.FALLBACK_RAY_ACCELERATOR_TYPE,
            rules.FALLBACK_NOT_DISAGGREGATED,
            rules.EXPOSURE_ONLY_SERVICE,
            rules.WORKER_SELECTOR_APART,
            rules.STORAGE_NAMESPACE_ONLY_CLUSTER,
            rules.ROUTING_ONLY_SERVE_LLM,
            rules.LORA_ONLY_SERVE_LLM,
            rules.LORA_MODEL_NAME_NO_COLON,
            rules.GPU_FRACTION_ONLY_SERVE_LLM,
            rules.GPU_FRACTION_ONE_WORKER,
            rules.GPU_FRACTION_MEMORY,
            rules.DATA_PARALLEL_ONLY_SERVE_LLM,
            rules.MODEL_REQUIRED_TO_SERVE,
            rules.JOB_NEEDS_JOB,
            rules.JOB_ONLY_FOR_JOB,
            *rules.JOB_REFUSED,
            rules.DISAGGREGATION_ONLY_SERVE_LLM,
            rules.DISAGGREGATION_REPLACES_REPLICAS,
            rules.DISAGGREGATION_WHOLE_GPUS,
            rules.DISAGGREGATION_NO_DATA_PARALLEL,
            *rules.DISAGGREGATION_ROLE_RULES,
        )
    )

    mode: Literal["Service", "Cluster", "Job"] = Field(
        default="Service",
        description=(
            "Service serves the model through a RayService; Cluster creates only a "
            "RayCluster (batch inference, fine-tuning, interactive work); Job runs "
            "spec.job.entrypoint to its end as a RayJob (fine-tuning, evaluation, batch "
            "inference) with checkpoints on the checkpoints claim."
        ),
    )
    model: ModelSpec | None = Field(
        default=None,
        description=(
            "The model to serve (required with mode Service and Cluster); with mode Job an "
            "optional base model, mounted or cached as for serving."
        ),
    )
    engine: EngineSpec = Field(default_factory=EngineSpec, description="Engine and parallelism.")
    accelerator: AcceleratorSpec = Field(description="GPU type and node layout.")
    replicas: int | None = Field(
        default=None,
        ge=0,
        le=1000,
        description="Fixed number of model replicas (default 1); exclusive with autoscaling.",
    )
    autoscaling: AutoscalingSpec | None = Field(
        default=None, description="Replica range driven by load; exclusive with replicas."
    )
    storage: StorageSpec = Field(default_factory=StorageSpec, description="Persistent volumes.")
    ray_cluster: RayClusterSpec = Field(
        default_factory=RayClusterSpec, description="Ray cluster pods and settings."
    )
    monitoring: MonitoringSpec = Field(
        default_factory=MonitoringSpec, description="Metrics scraping."
    )
    upgrade_strategy: UpgradeStrategy = Field(
        default="NewCluster",
        description=(
            "How the RayService rolls out cluster changes: NewCluster (zero downtime), "
            "NewClusterWithIncrementalUpgrade, or None."
        ),
    )
    incremental_upgrade: IncrementalUpgradeSpec | None = Field(
        default=None,
        description="Options for upgradeStrategy NewClusterWithIncrementalUpgrade.",
    )
    routing: RoutingSpec | None = Field(
        default=None,
        description="Request routing among replicas (mode Service, engine vllm).",
    )
    lora: LoraSpec | None = Field(
        default=None,
        description="LoRA adapters served on top of the model (mode Service, engine vllm).",
    )
    exposure: ExposureSpec | None = Field(
        default=None,
        description="Routes into the cluster to the model's endpoint (mode Service).",
    )
    job: JobSpec | None = Field(
        default=None, description="The job to run (mode Job; required there)."
    )
    disaggregation: DisaggregationSpec | None = Field(
        default=None,
        description=(
            "Prefill/decode disaggregation (mode Service, engine vllm): separate prefill and "
            "decode engines, each with its own worker group; replaces replicas and "
            "autoscaling."
        ),
    )

    @model_validator(mode="after")
    def _cross_field(self) -> LLMDeploymentSpec:
        _check(self.replicas is None or self.autoscaling is None, rules.REPLICAS_XOR_AUTOSCALING)
        _check(
            self.engine.tensor_parallel_size <= self.accelerator.gpus_per_node,
            rules.TP_WITHIN_NODE,
        )
        _check(
            self.mode != "Service" or self.replicas is None or self.replicas >= 1,
            rules.SERVICE_NEEDS_REPLICA,
        )
        _check(
            self.upgrade_strategy != "NewClusterWithIncrementalUpgrade"
            or self.incremental_upgrade is not None,
            rules.INCREMENTAL_NEEDS_OPTIONS,
        )
        _check(
            self.incremental_upgrade is None
            or self.upgrade_strategy == "NewClusterWithIncrementalUpgrade",
            rules.INCREMENTAL_OPTIONS_NEED_STRATEGY,
        )
        _check(
            self.mode != "Cluster" or self.upgrade_strategy == "NewCluster",
            rules.UPGRADE_ONLY_SERVICE,
        )
        _check(
            self.exposure is None
            or self.exposure.gateway is None
            or self.upgrade_strategy != "NewClusterWithIncrementalUpgrade",
            rules.EXPOSURE_NOT_INCREMENTAL,
        )
        _check(
            self.engine.type != "vllm" or self.accelerator.type in RAY_GPU_ACCELERATOR_TYPES,
            rules.RAY_ACCELERATOR_TYPE,
        )
        _check(
            self.engine.type != "vllm"
            or all(f.type in RAY_GPU_ACCELERATOR_TYPES for f in self.accelerator.fallbacks),
            rules.FALLBACK_RAY_ACCELERATOR_TYPE,
        )
        _check(
            self.disaggregation is None or not self.accelerator.fallbacks,
            rules.FALLBACK_NOT_DISAGGREGATED,
        )
        _check(
            self.exposure is None or self.exposure.gateway is None or self.mode == "Service",
            rules.EXPOSURE_ONLY_SERVICE,
        )
        _check(
            not self.ray_cluster.worker.node_selector.keys()
            & self.accelerator.node_selector.keys(),
            rules.WORKER_SELECTOR_APART,
        )
        gcs = self.ray_cluster.gcs_fault_tolerance
        _check(
            self.mode == "Cluster" or gcs is None or gcs.external_storage_namespace is None,
            rules.STORAGE_NAMESPACE_ONLY_CLUSTER,
        )
        _check(self.routing is None or self.serves_llm, rules.ROUTING_ONLY_SERVE_LLM)
        _check(self.lora is None or self.serves_llm, rules.LORA_ONLY_SERVE_LLM)
        _check(
            self.lora is None
            or self.model is None
            or self.model.name is None
            or ":" not in self.model.name,
            rules.LORA_MODEL_NAME_NO_COLON,
        )
        fraction = self.accelerator.gpu_fraction
        _check(fraction is None or self.serves_llm, rules.GPU_FRACTION_ONLY_SERVE_LLM)
        _check(fraction is None or self.engine.gpus_per_replica == 1, rules.GPU_FRACTION_ONE_WORKER)
        _check(
            fraction is None or self.engine.gpu_memory_utilization <= fraction,
            rules.GPU_FRACTION_MEMORY,
        )
        _check(
            self.engine.data_parallel_size == 1 or self.serves_llm,
            rules.DATA_PARALLEL_ONLY_SERVE_LLM,
        )
        self._check_mode_job()
        self._disaggregation_rules()
        return self

    def _check_mode_job(self) -> None:
        """The model is required but for mode Job; mode Job needs spec.job and none of the
        serving or scaling fields (the same rules as the CRD's, in its order)."""
        _check(self.mode == "Job" or self.model is not None, rules.MODEL_REQUIRED_TO_SERVE)
        _check(self.mode != "Job" or self.job is not None, rules.JOB_NEEDS_JOB)
        _check(self.job is None or self.mode == "Job", rules.JOB_ONLY_FOR_JOB)
        if self.mode != "Job":
            return
        engine = self.engine
        set_fields = (
            self.autoscaling is not None,
            self.routing is not None,
            self.lora is not None,
            self.incremental_upgrade is not None,
            self.upgrade_strategy != "NewCluster",
            bool(engine.import_path),
            engine.type != "vllm",
            "args" in engine.model_fields_set,  # set at all, as the CRD's has() sees it
            engine.max_model_len is not None,
            self.disaggregation is not None,
            self.exposure is not None and self.exposure.gateway is not None,
            bool(self.accelerator.fallbacks),
            self.storage.model_cache is not None and self.storage.model_cache.prefetch,
        )
        for is_set, rule in zip(set_fields, rules.JOB_REFUSED, strict=True):
            _check(not is_set, rule)

    def _disaggregation_rules(self) -> None:
        pd = self.disaggregation
        if pd is None:
            return
        _check(self.serves_llm, rules.DISAGGREGATION_ONLY_SERVE_LLM)
        _check(
            self.replicas is None and self.autoscaling is None,
            rules.DISAGGREGATION_REPLACES_REPLICAS,
        )
        _check(self.accelerator.gpu_fraction is None, rules.DISAGGREGATION_WHOLE_GPUS)
        _check(self.engine.data_parallel_size == 1, rules.DISAGGREGATION_NO_DATA_PARALLEL)
        for name in rules.PD_ROLES:
            role = pd.role(name)
            _check(
                role.replicas is None or role.autoscaling is None,
                rules.ROLE_REPLICAS_XOR_AUTOSCALING[name],
            )
            tp = role.tensor_parallel_size
            _check(
                tp is None or tp <= self.accelerator.gpus_per_node, rules.ROLE_TP_WITHIN_NODE[name]
            )

    @property
    def serves_llm(self) -> bool:
        """Whether Ray Serve LLM's own application serves the model (the only place the
        routing, LoRA and GPU-sharing sections can go)."""
        return self.mode == "Service" and self.engine.type == "vllm"


# --- status ---------------------------------------------------------------------------
# Written by the operator and read back from the API server, never typed by users: the
# status models keep pydantic's default (lax) type checks.


class Condition(ApiModel):
    """A condition in Kubernetes form."""

    model_config = ConfigDict(extra="ignore", strict=False)

    type: Annotated[str, StringConstraints(max_length=316)] = Field(description="Condition type.")
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: Annotated[str, StringConstraints(max_length=1024)] = Field(
        default="", description="CamelCase reason."
    )
    message: Annotated[str, StringConstraints(max_length=32768)] = Field(
        default="", description="Human-readable details."
    )
    last_transition_time: str | None = Field(
        default=None, description="When the status last changed (RFC 3339)."
    )
    observed_generation: int | None = Field(
        default=None, description="metadata.generation the condition was computed for."
    )


class ReplicaStatus(ApiModel):
    """Model replica counts."""

    model_config = ConfigDict(extra="ignore", strict=False)

    desired: int = Field(default=0, description="Replicas wanted now (minimum under autoscaling).")
    ready: int = Field(default=0, description="Replicas serving.")


class JobStatus(ApiModel):
    """The job's run as KubeRay reports it on the RayJob (mode Job)."""

    model_config = ConfigDict(extra="ignore", strict=False)

    job_status: str | None = Field(
        default=None,
        description="Ray's job status: PENDING, RUNNING, STOPPED, SUCCEEDED or FAILED.",
    )
    job_deployment_status: str | None = Field(
        default=None,
        description=(
            "KubeRay's jobDeploymentStatus: Initializing, Running, Complete, Failed, "
            "ValidationFailed, Suspending, Suspended, Retrying or Waiting."
        ),
    )
    job_id: str | None = Field(default=None, description="Ray's submission id of the job.")
    message: str | None = Field(default=None, description="KubeRay's message about the job.")
    start_time: str | None = Field(default=None, description="When the run started (RFC 3339).")
    end_time: str | None = Field(default=None, description="When the run ended (RFC 3339).")
    dashboard_url: str | None = Field(
        default=None,
        alias="dashboardURL",  # KubeRay's spelling
        description="The Ray dashboard of the job's cluster (host:port).",
    )
    ray_cluster: str | None = Field(
        default=None, description="The Ray cluster KubeRay made for the run."
    )
    failed: int | None = Field(default=None, description="Failed attempts so far.")
    succeeded: int | None = Field(default=None, description="Succeeded attempts.")
    finished_generation: int | None = Field(
        default=None,
        description=(
            "metadata.generation the run finished with: a later spec change is refused, "
            "the finished run is never re-run."
        ),
    )


class ClusterTrafficStatus(ApiModel):
    """One of the RayService's Ray clusters during an incremental upgrade, as KubeRay
    reports it (its activeServiceStatus or pendingServiceStatus)."""

    model_config = ConfigDict(extra="ignore", strict=False)

    ray_cluster: str | None = Field(default=None, description="The RayCluster's name.")
    traffic_routed_percent: int | None = Field(
        default=None,
        description="Share of requests KubeRay's HTTPRoute sends to this cluster, in percent.",
    )
    target_capacity: int | None = Field(
        default=None,
        description="Serve's target_capacity here: this cluster's share of the replicas, in %.",
    )
    last_traffic_migrated_time: str | None = Field(
        default=None, description="When its traffic share last moved (RFC 3339)."
    )


class UpgradeStatus(ApiModel):
    """Where an incremental upgrade (NewClusterWithIncrementalUpgrade) stands."""

    model_config = ConfigDict(extra="ignore", strict=False)

    active: ClusterTrafficStatus | None = Field(
        default=None, description="The cluster serving before the upgrade."
    )
    pending: ClusterTrafficStatus | None = Field(
        default=None, description="The cluster being upgraded to; absent between upgrades."
    )


class LLMDeploymentStatus(ApiModel):
    """Observed state, mirrored from the KubeRay children."""

    model_config = ConfigDict(extra="ignore", strict=False)

    phase: Phase | None = Field(
        default=None,
        description=(
            "Pending, Progressing, Ready, Degraded or Failed; mode Job: Pending, Running, "
            "Succeeded or Failed."
        ),
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        description=(
            "Ready, Progressing, SpecValid, ResourcesFit; ModelCached with prefetch; "
            "mode Service: Upgrading."
        ),
    )
    observed_generation: int | None = Field(
        default=None, description="metadata.generation last reconciled."
    )
    model: str | None = Field(default=None, description="Served model id.")
    endpoint: str | None = Field(default=None, description="OpenAI-compatible base URL.")
    ray_service: str | None = Field(default=None, description="Name of the RayService child.")
    ray_cluster: str | None = Field(default=None, description="Name of the serving RayCluster.")
    gpus_per_replica: int | None = Field(default=None, description="GPUs one replica uses.")
    replicas: ReplicaStatus | None = Field(default=None, description="Replica counts.")
    http_route: str | None = Field(
        default=None, description="Name of the HTTPRoute child (spec.exposure.gateway)."
    )
    ray_job: str | None = Field(default=None, description="Name of the RayJob child (mode Job).")
    cached_model: str | None = Field(
        default=None,
        description=(
            "Where the download Job of spec.storage.modelCache.prefetch put the model on the "
            "cache claim, once it finished; the Ray pods load it from there."
        ),
    )
    job: JobStatus | None = Field(default=None, description="The job's run (mode Job).")
    gcs_fault_tolerance: GcsFaultToleranceState | None = Field(
        default=None,
        description=(
            "GCS fault tolerance of the serving Ray cluster: Enabled (KubeRay builds its head "
            "with the Redis of spec.rayCluster.gcsFaultTolerance), Disabled, or Pending "
            "(asked for; the serving cluster does not have it yet)."
        ),
    )
    upgrade: UpgradeStatus | None = Field(
        default=None,
        description=(
            "Traffic split and target capacity of the active and pending Ray clusters, as "
            "KubeRay reports them (upgradeStrategy NewClusterWithIncrementalUpgrade)."
        ),
    )


# --- the object -----------------------------------------------------------------------


# Kubernetes refuses an object whose annotations (keys and values) exceed 256 KiB.
MAX_ANNOTATIONS_BYTES = 256 * 1024


class ObjectMeta(BaseModel):
    """The metadata fields the operator reads."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True, alias_generator=to_camel)

    name: str = Field(description="Resource name.")
    namespace: str = Field(default="default", description="Namespace.")
    uid: str | None = Field(default=None, description="Object UID.")
    generation: int | None = Field(default=None, description="Spec generation.")
    labels: dict[str, str] = Field(default_factory=dict, description="Labels.")
    annotations: dict[str, str] = Field(default_factory=dict, description="Annotations.")

    @field_validator("labels")
    @classmethod
    def _labels(cls, labels: dict[str, str]) -> dict[str, str]:
        # What the API server checks of every object's labels (the CRD has no say).
        _every_key(labels, rules.QUALIFIED_KEYS)
        for value in labels.values():
            _check(len(value) <= 63 and rules.LABEL_VALUE.holds(value), rules.LABEL_VALUE)
        return labels

    @field_validator("annotations")
    @classmethod
    def _annotations(cls, annotations: dict[str, str]) -> dict[str, str]:
        _every_key(annotations, rules.ANNOTATION_KEYS)
        size = sum(len(k.encode()) + len(v.encode()) for k, v in annotations.items())
        if size > MAX_ANNOTATIONS_BYTES:
            raise ValueError(
                f"metadata.annotations may take at most {MAX_ANNOTATIONS_BYTES} bytes "
                f"(Kubernetes' limit); these take {size}"
            )
        return annotations

    @model_validator(mode="after")
    def _name(self) -> ObjectMeta:
        _check(len(self.name) <= MAX_NAME_LENGTH, rules.NAME_LENGTH)
        _check(re.match(rules.DNS1035_LABEL, self.name) is not None, rules.NAME_DNS1035)
        return self


class LLMDeployment(BaseModel):
    """An LLMDeployment as read from a file or the API server."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True, alias_generator=to_camel)

    api_version: str = Field(default=API_VERSION, description="API version.")
    kind: str = Field(default=KIND, description="Kind.")
    metadata: ObjectMeta = Field(description="Standard object metadata.")
    spec: LLMDeploymentSpec = Field(description="Desired state.")
    status: LLMDeploymentStatus | None = Field(default=None, description="Observed state.")

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def namespace(self) -> str:
        return self.metadata.namespace

    @property
    def served_model_id(self) -> str:
        model = self.spec.model
        return (model.name if model is not None else None) or self.metadata.name
