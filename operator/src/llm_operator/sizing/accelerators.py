"""The accelerator catalogue: the GPU types Ray Serve LLM accepts and, for those whose
memory is known, how much each has. The one place either fact lives.

Two orders are kept on purpose: Ray's own order of its types (the CRD's rule and message
list them that way) and the order operators read the memory defaults in (the chart's
values.yaml); every memory entry names a type of Ray's.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

# GPU types Ray knows (ray.llm AcceleratorType, Ray 2.60); Serve LLM rejects others.
RAY_GPU_ACCELERATOR_TYPES: Final = (
    "V100", "P100", "T4", "P4", "K80", "A10G", "L4", "L40S", "A100", "A100-40G",
    "A100-80G", "H100", "H200", "H20", "B200", "B300", "GB200", "GB300", "RTX-PRO-6000",
    "AMD-Instinct-MI100", "AMD-Instinct-MI250X", "AMD-Instinct-MI250X-MI250",
    "AMD-Instinct-MI210", "AMD-Instinct-MI300A", "AMD-Instinct-MI300X-OAM",
    "AMD-Instinct-MI300X-HF", "AMD-Instinct-MI308X", "AMD-Instinct-MI325X-OAM",
    "AMD-Instinct-MI350X-OAM", "AMD-Instinct-MI355X-OAM", "Intel-GPU-Max-1550",
    "Intel-GPU-Max-1100", "Intel-GAUDI",
)  # fmt: skip

# GPU memory in GiB per Ray accelerator type. Operators can extend it in settings.
DEFAULT_GPU_MEMORY_GIB: Mapping[str, float] = {
    "T4": 16,
    "V100": 16,
    "A10G": 24,
    "L4": 24,
    "L40S": 48,
    "A100": 40,
    "A100-40G": 40,
    "A100-80G": 80,
    "H100": 80,
    "H200": 141,
    "H20": 96,
    "B200": 180,
    "B300": 288,
    "GB200": 186,
    "GB300": 288,
    "RTX-PRO-6000": 96,
    "AMD-Instinct-MI300X-OAM": 192,
    "AMD-Instinct-MI325X-OAM": 256,
}

# A memory entry for a type Ray rejects could never be used: catch it at import.
assert set(DEFAULT_GPU_MEMORY_GIB) <= set(RAY_GPU_ACCELERATOR_TYPES)


@dataclass(frozen=True)
class Accelerator:
    """One deployment's accelerator, resolved against the catalogue."""

    type: str
    resource_name: str
    gpus_per_node: int
    # GiB per GPU; None when neither the catalogue nor the operator's settings know it.
    memory_gib: float | None


def resolve_accelerator(
    type_: str,
    resource_name: str,
    gpus_per_node: int,
    gpu_memory_gib: Mapping[str, float] = DEFAULT_GPU_MEMORY_GIB,
) -> Accelerator:
    return Accelerator(
        type=type_,
        resource_name=resource_name,
        gpus_per_node=gpus_per_node,
        memory_gib=gpu_memory_gib.get(type_),
    )


def name_part(accelerator_type: str) -> str:
    """An accelerator type as part of an object name (a worker group's, which KubeRay puts
    in pod names): lower case, any character a DNS label cannot hold as '-'. Two types
    with the same name part could not have a worker group each."""
    return re.sub(r"[^a-z0-9-]", "-", accelerator_type.lower())
