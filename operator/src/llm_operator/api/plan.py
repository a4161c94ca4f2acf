"""The resolved plan of one LLMDeployment: its validated spec and everything derived
from it once, for render, status, metrics and `llm-operator plan` to read.

Validation builds it (`validation.resolve`); nothing downstream recomputes the GPU
layout, the memory fit, the accelerator or the mode's choice of child.
"""

from __future__ import annotations

from dataclasses import dataclass

from llm_operator.api.models import LLMDeployment
from llm_operator.api.vocabulary import RayKind
from llm_operator.sizing import Accelerator, GpuLayout, MemoryFit

# spec.mode -> the KubeRay kind it becomes: the one place the mode is read.
RAY_KIND_OF_MODE = {"Service": RayKind.RAY_SERVICE, "Cluster": RayKind.RAY_CLUSTER}


@dataclass(frozen=True)
class Plan:
    """A valid LLMDeployment, resolved. Immutable: every consumer sees the same answers."""

    llmd: LLMDeployment
    layout: GpuLayout
    fit: MemoryFit
    accelerator: Accelerator
    # The mode's strategy: render builds this kind of Ray child, status observes it.
    ray_kind: RayKind

    @property
    def serves(self) -> bool:
        """Whether the deployment serves through Ray Serve (a RayService) or is a bare
        RayCluster for the user's own jobs."""
        return self.ray_kind is RayKind.RAY_SERVICE

    @property
    def name(self) -> str:
        return self.llmd.name

    @property
    def namespace(self) -> str:
        return self.llmd.namespace

    @property
    def gpus_at_min(self) -> int:
        return self.layout.gpus_per_replica * self.llmd.spec.min_replicas

    @property
    def gpus_at_max(self) -> int:
        return self.layout.gpus_per_replica * self.llmd.spec.max_replicas
