"""Operator-wide defaults (image, Ray version, accelerator catalogue), read once at start.

Pure data: the CLI and controller build it from flags and environment variables
(`LLMOP_*`), `render` only receives it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from llm_operator.api.models import ResourceRequirements
from llm_operator.sizing import DEFAULT_GPU_MEMORY_GIB

DEFAULT_RAY_VERSION = "2.60.0"
DEFAULT_RAY_IMAGE = f"rayproject/ray-llm:{DEFAULT_RAY_VERSION}-py311-cu128"
# Node label that carries the Ray accelerator type on GPU nodes (Ray's own label key).
DEFAULT_ACCELERATOR_NODE_LABEL = "ray.io/accelerator-type"
GPU_MEMORY_ENV = "LLMOP_GPU_MEMORY_GIB"
AUTOSCALER_RESOURCES_ENV = "LLMOP_AUTOSCALER_RESOURCES"
# KubeRay's own default for the Ray autoscaler sidecar is 500m CPU and 512Mi, which on a
# small CPU node leaves little room beside the head. The sidecar idles between its 5 s
# polls; 200m keeps its start-up (importing Ray) quick. Requests equal limits, so a head
# whose own container asks for equal requests and limits stays in the Guaranteed QoS
# class. To be confirmed against the sidecar measured on the real node.
DEFAULT_AUTOSCALER_RESOURCES: dict[str, dict[str, int | str]] = {
    "requests": {"cpu": "200m", "memory": "512Mi"},
    "limits": {"cpu": "200m", "memory": "512Mi"},
}


class OperatorSettings(BaseModel):
    """Defaults the platform team sets once for every LLMDeployment."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    ray_image: str = Field(default=DEFAULT_RAY_IMAGE, description="Default Ray image.")
    ray_version: str = Field(default=DEFAULT_RAY_VERSION, description="Default Ray version.")
    accelerator_node_label: str = Field(
        default=DEFAULT_ACCELERATOR_NODE_LABEL,
        description=(
            "Node label whose value is the accelerator type; used when "
            "spec.accelerator.nodeSelector is empty."
        ),
    )
    gpu_memory_gib: Mapping[str, float] = Field(
        default_factory=lambda: dict(DEFAULT_GPU_MEMORY_GIB),
        description="GPU memory per accelerator type, for the fit check.",
    )
    head_cpu: str = Field(
        default="2", description="Head CPU when spec.rayCluster.head.resources is empty."
    )
    head_memory: str = Field(default="8Gi", description="Head memory when unset.")
    worker_cpu_per_gpu: int = Field(default=4, description="Worker CPUs per GPU when unset.")
    worker_memory_gib_per_gpu: int = Field(
        default=16, description="Worker memory (GiB) per GPU when unset."
    )
    autoscaler_resources: ResourceRequirements = Field(
        default_factory=lambda: ResourceRequirements.model_validate(DEFAULT_AUTOSCALER_RESOURCES),
        description=(
            "Requests and limits of KubeRay's Ray autoscaler sidecar when "
            "spec.rayCluster.autoscaler.resources is empty."
        ),
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> OperatorSettings:
        """Settings from LLMOP_RAY_IMAGE, LLMOP_RAY_VERSION, LLMOP_ACCELERATOR_NODE_LABEL,
        LLMOP_GPU_MEMORY_GIB (a JSON object: accelerator type -> GiB, as the chart's
        `operator.gpuMemoryGiB` writes it) and LLMOP_AUTOSCALER_RESOURCES (a JSON object
        `{requests: {...}, limits: {...}}`, as `operator.rayAutoscaler.resources` writes it).
        Bad values raise ValueError (JSON or pydantic's).
        """
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for field in ("ray_image", "ray_version", "accelerator_node_label"):
            key = f"LLMOP_{field.upper()}"
            if env.get(key):
                values[field] = env[key]
        if env.get(GPU_MEMORY_ENV):
            values["gpu_memory_gib"] = json.loads(env[GPU_MEMORY_ENV])
        if env.get(AUTOSCALER_RESOURCES_ENV):
            values["autoscaler_resources"] = json.loads(env[AUTOSCALER_RESOURCES_ENV])
        return cls.model_validate(values)
