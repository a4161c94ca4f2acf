"""GPU math: how a model replica maps onto worker pods, and whether its weights fit.

Pure functions over numbers. Validation calls them once per spec and keeps the answers
in the resolved plan (`api.plan.Plan`), which render, status, metrics and
`llm-operator plan` read.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from llm_operator.sizing.accelerators import (
    DEFAULT_GPU_MEMORY_GIB,
    Accelerator,
    resolve_accelerator,
)

__all__ = [
    "DEFAULT_GPU_MEMORY_GIB",
    "Accelerator",
    "GpuLayout",
    "LayoutError",
    "MemoryFit",
    "gpu_layout",
    "memory_fit",
    "resolve_accelerator",
]

# Bytes per parameter by engine dtype; "auto" loads checkpoints in 16-bit.
BYTES_PER_PARAMETER: Mapping[str, float] = {
    "auto": 2,
    "half": 2,
    "float16": 2,
    "bfloat16": 2,
    "float": 4,
    "float32": 4,
}

# Bytes per parameter for vLLM quantization methods given in engine args.
QUANTIZED_BYTES_PER_PARAMETER: Mapping[str, float] = {
    "awq": 0.5,
    "awq_marlin": 0.5,
    "gptq": 0.5,
    "gptq_marlin": 0.5,
    "bitsandbytes": 0.5,
    "fp8": 1,
    "int8": 1,
    "compressed-tensors": 1,
}

# Share of the engine's GPU memory kept free of weights for KV cache and activations.
KV_CACHE_HEADROOM = 0.2

GIB = 1024**3


class LayoutError(ValueError):
    """A parallelism that cannot be split into identical worker pods."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class GpuLayout:
    """How one model replica occupies worker pods."""

    tensor_parallel_size: int
    pipeline_parallel_size: int
    gpus_per_node: int
    hosts_per_replica: int
    # Share of one GPU each replica's single engine worker takes (replicas sharing a GPU);
    # None: whole GPUs.
    gpu_fraction: float | None = None
    # Data-parallel ranks of one replica: Ray's DP builder runs each rank as a Serve
    # replica of TP x PP bundles and gang-schedules the ranks of a replica together.
    data_parallel_size: int = 1

    @property
    def gpus_per_rank(self) -> int:
        """GPU bundles of one engine instance (one Serve replica): TP x PP."""
        return self.tensor_parallel_size * self.pipeline_parallel_size

    @property
    def gpus_per_replica(self) -> int:
        """Whole GPUs a replica's pods hold (all its data-parallel ranks); a sharing
        replica's pod still holds one."""
        return self.gpus_per_rank * self.data_parallel_size

    @property
    def rank_multi_host(self) -> bool:
        """Whether one engine instance's bundles span worker pods."""
        return self.gpus_per_rank > self.gpus_per_host

    @property
    def gpus_per_bundle(self) -> float:
        """GPUs in each of the replica's placement-group bundles, one per engine worker."""
        return 1 if self.gpu_fraction is None else self.gpu_fraction

    @property
    def replicas_per_pod(self) -> int:
        """Replicas one worker pod holds: how many fractional bundles its GPU fits."""
        if self.gpu_fraction is None:
            return 1
        return replicas_per_gpu(self.gpu_fraction)

    def worker_group_replicas(self, replicas: int) -> int:
        """Worker group replicas (each `hosts_per_replica` pods) that hold `replicas`."""
        return math.ceil(replicas / self.replicas_per_pod)

    def worker_pods(self, replicas: int) -> int:
        return self.worker_group_replicas(replicas) * self.hosts_per_replica

    def gpus(self, replicas: int) -> int:
        """Whole GPUs the worker pods of `replicas` replicas hold."""
        return self.worker_pods(replicas) * self.gpus_per_host

    @property
    def gpus_per_host(self) -> int:
        return self.gpus_per_replica // self.hosts_per_replica

    @property
    def stages_per_host(self) -> int:
        return self.gpus_per_host // self.tensor_parallel_size

    @property
    def multi_host(self) -> bool:
        return self.hosts_per_replica > 1


# Ray keeps resource amounts in fixed point, 1/10000 of a unit (kResourceUnitScaling in
# ray/common/constants.h): bundles of `f` GPUs fit one GPU floor(1 / f) times, counted in
# those units so that 0.1 fits ten times, not nine as floats would have it.
RAY_RESOURCE_UNITS = 10_000


def replicas_per_gpu(gpu_fraction: float) -> int:
    return RAY_RESOURCE_UNITS // round(gpu_fraction * RAY_RESOURCE_UNITS)


def gpu_layout(
    tensor_parallel_size: int,
    pipeline_parallel_size: int,
    gpus_per_node: int,
    gpu_fraction: float | None = None,
    data_parallel_size: int = 1,
) -> GpuLayout:
    """Split TP x PP (x DP) GPUs into identical pods of whole tensor-parallel groups.

    Hosts per replica = ceil(GPUs per replica / gpusPerNode); each pod then holds
    GPUs per replica / hosts GPUs, which must be whole tensor-parallel groups.
    """
    if tensor_parallel_size > gpus_per_node:
        raise LayoutError(
            "spec.engine.tensorParallelSize",
            f"{tensor_parallel_size} exceeds spec.accelerator.gpusPerNode {gpus_per_node}: a "
            "tensor-parallel group never spans nodes; lower tensorParallelSize and raise "
            "pipelineParallelSize instead",
        )
    gpus = tensor_parallel_size * pipeline_parallel_size * data_parallel_size
    hosts = math.ceil(gpus / gpus_per_node)
    uneven = bool(gpus % hosts or (gpus // hosts) % tensor_parallel_size)
    if uneven and data_parallel_size > 1:
        raise LayoutError(
            "spec.engine.dataParallelSize",
            f"{gpus} GPUs per replica (tensorParallelSize {tensor_parallel_size} x "
            f"pipelineParallelSize {pipeline_parallel_size} x dataParallelSize "
            f"{data_parallel_size}) cannot be split into {hosts} identical worker pods of "
            f"whole tensor-parallel groups on {gpus_per_node}-GPU nodes; choose a "
            "dataParallelSize whose GPUs fill whole nodes",
        )
    if uneven:
        suggestion = _suggest_pipeline(tensor_parallel_size, pipeline_parallel_size, gpus_per_node)
        raise LayoutError(
            "spec.engine.pipelineParallelSize",
            f"{gpus} GPUs per replica (tensorParallelSize {tensor_parallel_size} x "
            f"pipelineParallelSize {pipeline_parallel_size}) cannot be split into {hosts} "
            f"identical worker pods of whole tensor-parallel groups on {gpus_per_node}-GPU "
            f"nodes; use pipelineParallelSize {suggestion}",
        )
    return GpuLayout(
        tensor_parallel_size,
        pipeline_parallel_size,
        gpus_per_node,
        hosts,
        gpu_fraction,
        data_parallel_size,
    )


def _suggest_pipeline(tp: int, pp: int, gpus_per_node: int) -> str:
    """Nearest pipeline sizes that split evenly, lower first."""
    stages_per_node = gpus_per_node // tp
    lower = (pp // stages_per_node) * stages_per_node
    upper = lower + stages_per_node
    return f"{lower} or {upper}" if lower >= 1 else str(upper)


@dataclass(frozen=True)
class MemoryFit:
    """Whether a model's weights fit its GPUs with room left for the KV cache."""

    fits: bool | None  # None: not checked (size or accelerator memory unknown)
    reason: str
    message: str
    weights_gib_per_gpu: float | None = None
    usable_gib_per_gpu: float | None = None
    min_gpus: int | None = None


def bytes_per_parameter(dtype: str, engine_args: Mapping[str, Any]) -> float | None:
    """Bytes one parameter takes; None for a quantization this module does not know."""
    quantization = engine_args.get("quantization")
    if quantization is None:
        return BYTES_PER_PARAMETER[dtype]
    return QUANTIZED_BYTES_PER_PARAMETER.get(str(quantization))


def memory_fit(
    *,
    parameters_billions: float | None,
    accelerator: Accelerator,
    gpus_per_replica: int,
    dtype: str,
    gpu_memory_utilization: float,
    engine_args: Mapping[str, Any],
    gpu_fraction: float | None = None,
) -> MemoryFit:
    """Weights per GPU against the engine's share of GPU memory, minus KV-cache headroom."""
    if parameters_billions is None:
        return MemoryFit(
            None, "SizeUnknown", "spec.model.parametersBillions is not set; fit not checked"
        )
    accelerator_type = accelerator.type
    memory = accelerator.memory_gib
    if memory is None:
        return MemoryFit(
            None,
            "AcceleratorMemoryUnknown",
            f"GPU memory of accelerator {accelerator_type} is not in the catalogue; "
            "fit not checked",
        )
    per_param = bytes_per_parameter(dtype, engine_args)
    if per_param is None:
        return MemoryFit(
            None,
            "QuantizationUnknown",
            f"quantization {engine_args.get('quantization')!r} is not known; fit not checked",
        )
    weights_gib = parameters_billions * 1e9 * per_param / GIB
    per_gpu = weights_gib / gpus_per_replica
    # A replica sharing a GPU gets at most its fraction of the memory (validation already
    # keeps gpuMemoryUtilization within it).
    share = (
        gpu_memory_utilization
        if gpu_fraction is None
        else min(gpu_memory_utilization, gpu_fraction)
    )
    usable = memory * share
    budget = usable * (1 - KV_CACHE_HEADROOM)
    min_gpus = max(1, math.ceil(weights_gib / budget))
    detail = (
        f"{parameters_billions:g}B parameters at {per_param:g} bytes = {weights_gib:.1f} GiB of "
        f"weights, {per_gpu:.1f} GiB per GPU over {gpus_per_replica} GPU(s); {accelerator_type} "
        f"gives {usable:.1f} GiB per GPU at gpuMemoryUtilization {gpu_memory_utilization:g}"
        + ("" if gpu_fraction is None else f" (a {gpu_fraction:g} share of the GPU)")
        + ", "
        f"{budget:.1f} GiB after {KV_CACHE_HEADROOM:.0%} KV-cache headroom"
    )
    if per_gpu <= budget:
        return MemoryFit(True, "Fits", detail, per_gpu, usable, min_gpus)
    return MemoryFit(
        False,
        "InsufficientGPUMemory",
        f"{detail}; needs at least {min_gpus} GPUs per replica: raise "
        "spec.engine.tensorParallelSize (or pipelineParallelSize), or choose an accelerator "
        "with more memory",
        per_gpu,
        usable,
        min_gpus,
    )
