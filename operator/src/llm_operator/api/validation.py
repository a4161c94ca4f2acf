"""Parse an LLMDeployment and check what the CRD schema cannot express.

Every problem is a `FieldError` that names the field and the fix. The schema and
CEL rules (also re-checked by the models) come first; the semantic checks here run
only on a spec that parsed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

from pydantic import ValidationError

from llm_operator.api.constants import API_VERSION, KIND
from llm_operator.api.models import LLMDeployment, ResourceRequirements
from llm_operator.api.plan import (
    STRATEGY_OF_MODE,
    FallbackGroup,
    GpuRole,
    KvTransfer,
    Plan,
    lora_adapters,
    request_router,
    serve_app,
)
from llm_operator.api.rules import PD_ROLES
from llm_operator.sizing import (
    DEFAULT_GPU_MEMORY_GIB,
    Accelerator,
    GpuLayout,
    LayoutError,
    MemoryFit,
    gpu_layout,
    memory_fit,
    resolve_accelerator,
)
from llm_operator.sizing.accelerators import name_part

# Engine kwargs with a typed field of their own.
TYPED_ENGINE_ARGS = {
    "tensor_parallel_size": "spec.engine.tensorParallelSize",
    "pipeline_parallel_size": "spec.engine.pipelineParallelSize",
    "max_model_len": "spec.engine.maxModelLen",
    "dtype": "spec.engine.dtype",
    "gpu_memory_utilization": "spec.engine.gpuMemoryUtilization",
    "revision": "spec.model.revision",
    "data_parallel_size": "spec.engine.dataParallelSize",
}
# Engine kwargs spec.lora sets; with it, an engine arg would silently fight the field.
LORA_ENGINE_ARGS = {
    "enable_lora": "spec.lora",
    "max_lora_rank": "spec.lora.maxRank",
}
# Engine kwargs spec.disaggregation sets on both roles.
DISAGGREGATION_ENGINE_ARGS = {
    "kv_transfer_config": "spec.disaggregation.kvConnector",
}


# The fields of a Kubernetes object and of its metadata. The models ignore the rest of what
# the API server sends; in a file anything else is a typo the API server refuses (strict
# field validation, as kubectl applies).
OBJECT_FIELDS = frozenset({"apiVersion", "kind", "metadata", "spec", "status"})
METADATA_FIELDS = frozenset(
    {
        "name",
        "generateName",
        "namespace",
        "selfLink",
        "uid",
        "resourceVersion",
        "generation",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "labels",
        "annotations",
        "ownerReferences",
        "finalizers",
        "managedFields",
    }
)
UNKNOWN_FIELD = "unknown field; check the spelling against `kubectl explain llmdeployment`"


@dataclass(frozen=True)
class FieldError:
    """One problem, with the field it concerns."""

    field: str
    message: str

    def __str__(self) -> str:
        if self.message.startswith(self.field):
            return self.message
        return f"{self.field}: {self.message}"


def names_field(text: str, field: str) -> bool:
    """Whether `text` (a message of the API server, the CLI or a condition) names the
    field path `field` as a whole: not as part of a longer name (`spec.replica` in
    `spec.replicas`), not as the start of a deeper path (`spec.model` in
    `spec.model.source`, `spec.rayCluster.env` in `spec.rayCluster.env[0]`, a map's path
    in `map.key`), and not as the end of one (`name` in `metadata.name`).

    A path may end a sentence: a `.` that no name follows ends it.
    """
    return re.search(_field_token(field), text) is not None


@cache
def _field_token(field: str) -> re.Pattern[str]:
    return re.compile(rf"(?<![\w.]){re.escape(field)}(?![\w\[/-]|\.[\w-])")


class SpecError(ValueError):
    """An LLMDeployment that cannot be rendered; carries every field error."""

    def __init__(self, errors: list[FieldError]) -> None:
        super().__init__("; ".join(str(e) for e in errors))
        self.errors = errors


def _path(loc: Iterable[int | str]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _from_pydantic(error: ValidationError) -> list[FieldError]:
    found: list[FieldError] = []
    for item in error.errors():
        # Unions report each branch; the type suffix (e.g. `.int`) is noise for users.
        loc = [
            p for p in item["loc"] if p not in ("int", "str", "constrained-str", "function-after")
        ]
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = (
                "unknown field; check the spelling against `kubectl explain llmdeployment.spec`"
            )
        elif item["type"] == "missing":
            message = "required field is missing"
        found.append(FieldError(_path(loc), message))
    return list(dict.fromkeys(found))


def parse(document: Mapping[str, Any]) -> LLMDeployment:
    """Schema-level parse; raises `SpecError` with one entry per bad field."""
    if not isinstance(document, Mapping):
        raise SpecError([FieldError("(document)", "an LLMDeployment must be a YAML mapping")])
    kind, api_version = document.get("kind"), document.get("apiVersion")
    if kind != KIND:
        raise SpecError([FieldError("kind", f"expected {KIND}, got {kind!r}")])
    if api_version != API_VERSION:
        raise SpecError([FieldError("apiVersion", f"expected {API_VERSION}, got {api_version!r}")])
    errors = _unknown_object_fields(document)
    try:
        llmd = LLMDeployment.model_validate(dict(document))
    except ValidationError as exc:
        raise SpecError(errors + _from_pydantic(exc)) from None
    if errors:
        raise SpecError(errors)
    return llmd


def _unknown_object_fields(document: Mapping[str, Any]) -> list[FieldError]:
    unknown = [str(key) for key in document if key not in OBJECT_FIELDS]
    metadata = document.get("metadata")
    if isinstance(metadata, Mapping):
        unknown += [f"metadata.{key}" for key in metadata if key not in METADATA_FIELDS]
    return [FieldError(field, UNKNOWN_FIELD) for field in unknown]


def _resources_with_gpu(
    resources: ResourceRequirements, gpu_resource: str, field: str
) -> Iterator[FieldError]:
    for part in ("requests", "limits"):
        if gpu_resource in getattr(resources, part):
            yield FieldError(
                f"{field}.{part}",
                f"must not set {gpu_resource}: GPUs are derived from "
                "spec.engine.tensorParallelSize x pipelineParallelSize; remove it",
            )


def _fit(llmd: LLMDeployment, layout: GpuLayout, accelerator: Accelerator) -> MemoryFit:
    """Whether the model's weights fit the layout's GPUs of its accelerator."""
    spec = llmd.spec
    return memory_fit(
        # A Job without a base model has nothing to fit: the fit is unknown.
        parameters_billions=None if spec.model is None else spec.model.parameters_billions,
        accelerator=accelerator,
        # Each data-parallel rank holds a whole copy of the weights over TP x PP GPUs.
        gpus_per_replica=layout.gpus_per_rank,
        dtype=spec.engine.dtype,
        gpu_memory_utilization=spec.engine.gpu_memory_utilization,
        engine_args=spec.engine.args,
        gpu_fraction=layout.gpu_fraction,
    )


def _whole_model_role(llmd: LLMDeployment, accelerator: Accelerator) -> GpuRole:
    """The one worker group of a model served (or run) without disaggregation."""
    spec = llmd.spec
    layout = gpu_layout(
        spec.engine.tensor_parallel_size,
        spec.engine.pipeline_parallel_size,
        spec.accelerator.gpus_per_node,
        spec.accelerator.gpu_fraction,
        spec.engine.data_parallel_size,
    )
    fit = _fit(llmd, layout, accelerator)
    if fit.fits is False:
        raise LayoutError("spec.engine.tensorParallelSize", fit.message)
    return GpuRole(None, layout, fit, spec.min_replicas, spec.max_replicas, spec.autoscaling)


def _disaggregated_roles(llmd: LLMDeployment, accelerator: Accelerator) -> list[GpuRole]:
    """Prefill then decode, each sized from its own tensor parallelism and replicas; both
    hold a whole copy of the weights, so each is fit-checked on its own GPUs."""
    spec = llmd.spec
    assert spec.disaggregation is not None
    roles: list[GpuRole] = []
    for name in PD_ROLES:
        role = spec.disaggregation.role(name)
        tp_field = f"spec.disaggregation.{name}.tensorParallelSize"
        try:
            layout = gpu_layout(
                role.tensor_parallel_size or spec.engine.tensor_parallel_size,
                spec.engine.pipeline_parallel_size,
                spec.accelerator.gpus_per_node,
            )
        except LayoutError as exc:
            field = tp_field if exc.field == "spec.engine.tensorParallelSize" else exc.field
            raise LayoutError(field, f"{name}: {exc.message}") from None
        fit = _fit(llmd, layout, accelerator)
        if fit.fits is False:
            # The fix is the side's own tensor parallelism, not the engine-wide one.
            advice = fit.message.replace("spec.engine.tensorParallelSize", tp_field)
            raise LayoutError(tp_field, f"{name}: {advice}")
        roles.append(
            GpuRole(name, layout, fit, role.min_replicas, role.max_replicas, role.autoscaling)
        )
    return roles


def _fallback_groups(
    llmd: LLMDeployment, preferred: GpuRole, gpu_memory_gib: Mapping[str, float]
) -> list[FallbackGroup]:
    """Each fallback type's worker group: the preferred layout's pods on that type, or a
    `LayoutError` naming the entry when the type cannot hold them.

    The pods must match the preferred group's (same GPUs per pod, same pods per replica):
    one Serve placement group then fits every group, and status counts replicas alike."""
    spec = llmd.spec
    groups: list[FallbackGroup] = []
    taken = {name_part(spec.accelerator.type)}
    for index, fallback in enumerate(spec.accelerator.fallbacks):
        at = f"spec.accelerator.fallbacks[{index}]"
        accelerator = resolve_accelerator(
            fallback.type, fallback.resource_name, fallback.gpus_per_node, gpu_memory_gib
        )
        try:
            layout = gpu_layout(
                spec.engine.tensor_parallel_size,
                spec.engine.pipeline_parallel_size,
                fallback.gpus_per_node,
                spec.accelerator.gpu_fraction,
                spec.engine.data_parallel_size,
            )
        except LayoutError as exc:
            raise LayoutError(f"{at}.gpusPerNode", f"{fallback.type}: {exc.message}") from None
        if layout.hosts_per_replica != preferred.layout.hosts_per_replica:
            raise LayoutError(
                f"{at}.gpusPerNode",
                f"{fallback.type}: a replica takes {layout.hosts_per_replica} pod(s) of "
                f"{layout.gpus_per_host} GPU(s) on {fallback.gpus_per_node}-GPU nodes, but "
                f"{preferred.layout.hosts_per_replica} pod(s) of "
                f"{preferred.layout.gpus_per_host} on the preferred "
                f"{spec.accelerator.type}; every group must hold a replica in the same pods "
                "(one Serve placement group fits them all): choose a type with at least "
                f"{preferred.layout.gpus_per_host} GPUs per node, or change the parallelism",
            )
        fit = _fit(llmd, layout, accelerator)
        if fit.fits is False:
            raise LayoutError(f"{at}.type", f"{fallback.type}: {fit.message}")
        part = name_part(fallback.type)
        if part in taken:
            raise LayoutError(
                f"{at}.type",
                f"{fallback.type} names the same worker group as another type (gpu-workers-"
                f"{part}: group names are lower case); name each accelerator type once",
            )
        taken.add(part)
        groups.append(
            FallbackGroup(
                index,
                accelerator,
                dict(fallback.node_selector),
                layout,
                fit,
                preferred.max_replicas,
            )
        )
    return groups


def _tightest_fit(roles: list[GpuRole]) -> MemoryFit:
    """The fit of the role with the most weights per GPU (the one a condition reports)."""
    return max(roles, key=lambda role: role.fit.weights_gib_per_gpu or 0).fit


def _resolved(
    llmd: LLMDeployment, gpu_memory_gib: Mapping[str, float]
) -> tuple[Plan | None, list[FieldError]]:
    """The plan of a parsed spec, or None with the problems found; the layout and the
    fit are computed here and nowhere else."""
    spec = llmd.spec
    accelerator = resolve_accelerator(
        spec.accelerator.type,
        spec.accelerator.resource_name,
        spec.accelerator.gpus_per_node,
        gpu_memory_gib,
    )
    errors: list[FieldError] = []
    plan: Plan | None = None
    try:
        roles = (
            [_whole_model_role(llmd, accelerator)]
            if spec.disaggregation is None
            else _disaggregated_roles(llmd, accelerator)
        )
        fallbacks = _fallback_groups(llmd, roles[0], gpu_memory_gib)
    except LayoutError as exc:
        errors.append(FieldError(exc.field, exc.message))
    else:
        plan = Plan(
            llmd,
            # The layout clients' requests meet last: the decode side when disaggregated.
            roles[-1].layout,
            _tightest_fit(roles),
            accelerator,
            STRATEGY_OF_MODE[spec.mode],
            router=request_router(spec.routing),
            lora=lora_adapters(spec.lora),
            serve_app=serve_app(spec),
            roles=tuple(roles),
            kv_transfer=(
                None
                if spec.disaggregation is None
                else KvTransfer(spec.disaggregation.kv_connector)
            ),
            fallbacks=tuple(fallbacks),
        )
    errors.extend(_other_errors(llmd))
    return (None if errors else plan), errors


def semantic_errors(
    llmd: LLMDeployment, gpu_memory_gib: Mapping[str, float] = DEFAULT_GPU_MEMORY_GIB
) -> list[FieldError]:
    """Checks beyond the schema: GPU layout, memory fit, reserved names, overlaps."""
    return _resolved(llmd, gpu_memory_gib)[1]


def _other_errors(llmd: LLMDeployment) -> list[FieldError]:
    """The checks that need no layout: engine args, GPUs in pod resources."""
    spec = llmd.spec
    errors: list[FieldError] = []
    if spec.engine.type == "vllm":
        typed = (
            TYPED_ENGINE_ARGS
            | (LORA_ENGINE_ARGS if spec.lora is not None else {})
            | (DISAGGREGATION_ENGINE_ARGS if spec.disaggregation is not None else {})
        )
        for key, field in typed.items():
            if key in spec.engine.args:
                errors.append(
                    FieldError(f"spec.engine.args.{key}", f"set {field} instead of engine args")
                )

    gpu = spec.accelerator.resource_name
    fallback_gpus = [f.resource_name for f in spec.accelerator.fallbacks]
    for gpu_resource in dict.fromkeys([gpu, *fallback_gpus]):
        errors.extend(
            _resources_with_gpu(
                spec.ray_cluster.worker.resources, gpu_resource, "spec.rayCluster.worker.resources"
            )
        )
    errors.extend(
        _resources_with_gpu(spec.ray_cluster.head.resources, gpu, "spec.rayCluster.head.resources")
    )
    errors.extend(
        _resources_with_gpu(
            spec.ray_cluster.autoscaler.resources, gpu, "spec.rayCluster.autoscaler.resources"
        )
    )
    if spec.job is not None and spec.job.submitter_resources is not None:
        errors.extend(
            _resources_with_gpu(spec.job.submitter_resources, gpu, "spec.job.submitterResources")
        )

    return errors


def resolve(
    document: Mapping[str, Any], gpu_memory_gib: Mapping[str, float] = DEFAULT_GPU_MEMORY_GIB
) -> Plan:
    """Parse, check and resolve; raises `SpecError` listing every problem."""
    plan, errors = _resolved(parse(document), gpu_memory_gib)
    if plan is None:
        raise SpecError(errors)
    return plan


def validate(
    document: Mapping[str, Any], gpu_memory_gib: Mapping[str, float] = DEFAULT_GPU_MEMORY_GIB
) -> LLMDeployment:
    """Parse and check; raises `SpecError` listing every problem."""
    return resolve(document, gpu_memory_gib).llmd
