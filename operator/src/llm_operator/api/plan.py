"""The resolved plan of one LLMDeployment: its validated spec and everything derived
from it once, for render, status, metrics and `llm-operator plan` to read.

Validation builds it (`validation.resolve`); nothing downstream recomputes the GPU
layout, the memory fit, the accelerator or the mode's choice of child.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from llm_operator.api.models import (
    AutoscalingSpec,
    LLMDeployment,
    LLMDeploymentSpec,
    LoraSpec,
    RoutingSpec,
)
from llm_operator.api.vocabulary import RayKind
from llm_operator.sizing import Accelerator, GpuLayout, MemoryFit


@dataclass(frozen=True)
class Strategy:
    """What a mode is, for everything downstream: render builds the child of `ray_kind`
    (its builder is keyed by it, as is the status observer), and the flags say what the
    child does, so no consumer reads `spec.mode` itself."""

    ray_kind: RayKind
    # A Ray Serve application and its endpoint (RayService).
    serves: bool
    # Runs an entrypoint to its end (RayJob): a finished run is a record, never re-run,
    # and its pods get the checkpoint directory in LLMOP_CHECKPOINT_DIR.
    runs_to_completion: bool


SERVICE = Strategy(RayKind.RAY_SERVICE, serves=True, runs_to_completion=False)
CLUSTER = Strategy(RayKind.RAY_CLUSTER, serves=False, runs_to_completion=False)
JOB = Strategy(RayKind.RAY_JOB, serves=False, runs_to_completion=True)

# spec.mode -> its strategy: the one place the mode is read.
STRATEGY_OF_MODE = {"Service": SERVICE, "Cluster": CLUSTER, "Job": JOB}

# Ray Serve LLM's prefix-aware router (ray/serve/llm/request_router.py in Ray 2.60), and
# the `initialize_state` keyword arguments the spec exposes: PrefixCacheAffinitySpec's
# fields carry the same names (camelCase on the wire).
PREFIX_CACHE_AFFINITY_ROUTER = "ray.serve.llm.request_router:PrefixCacheAffinityRouter"
PREFIX_CACHE_AFFINITY_KWARGS = ("imbalanced_threshold", "match_rate_threshold")

# Ray Serve LLM's application builders (ray/serve/llm/__init__.py in Ray 2.60).
OPENAI_APP = "ray.serve.llm:build_openai_app"
DATA_PARALLEL_APP = "ray.serve.llm:build_dp_openai_app"
PREFILL_DECODE_APP = "ray.serve.llm:build_pd_openai_app"

# vLLM's KVTransferConfig role for both sides: Ray's P/D servers pick the direction per
# request (kv_transfer_params), so each engine both sends and receives.
KV_ROLE = "kv_both"


def serve_app(spec: LLMDeploymentSpec) -> str | None:
    """The Ray Serve LLM builder that serves the spec; None for a custom application
    (or none at all, mode Cluster)."""
    if not spec.serves_llm:
        return None
    if spec.disaggregation is not None:
        return PREFILL_DECODE_APP
    return DATA_PARALLEL_APP if spec.engine.data_parallel_size > 1 else OPENAI_APP


@dataclass(frozen=True)
class GpuRole:
    """One GPU worker group and the Serve LLM deployment whose replicas it holds: the
    whole model (role None), or the prefill or decode side of a disaggregated one."""

    name: str | None
    layout: GpuLayout
    fit: MemoryFit
    min_replicas: int
    max_replicas: int
    # Serve autoscaling of the role's deployment; None: a fixed count of min_replicas.
    autoscaling: AutoscalingSpec | None = None

    @property
    def gpus_at_min(self) -> int:
        return self.layout.gpus(self.min_replicas)

    @property
    def gpus_at_max(self) -> int:
        return self.layout.gpus(self.max_replicas)


@dataclass(frozen=True)
class FallbackGroup:
    """A worker group on another accelerator type (spec.accelerator.fallbacks[index]):
    the whole model's layout on that type's nodes, starting at no pods, up to the same
    maximum as the preferred group."""

    index: int
    accelerator: Accelerator
    # The nodes of this type, as spec'd; empty: the operator's accelerator label.
    node_selector: Mapping[str, str]
    layout: GpuLayout
    fit: MemoryFit
    max_replicas: int

    @property
    def field(self) -> str:
        return f"spec.accelerator.fallbacks[{self.index}]"


@dataclass(frozen=True)
class KvTransfer:
    """vLLM's `kv_transfer_config` for both sides of prefill/decode disaggregation."""

    connector: str
    role: str = KV_ROLE


@dataclass(frozen=True)
class RequestRouter:
    """A Serve request router in place of Serve's default (power of two choices)."""

    class_path: str
    kwargs: Mapping[str, float] = field(default_factory=dict)


def request_router(routing: RoutingSpec | None) -> RequestRouter | None:
    """The router a routing policy asks for; None keeps Serve's default router, so a
    spec without routing (or with PowerOfTwoChoices) renders no router at all."""
    if routing is None or routing.policy == "PowerOfTwoChoices":
        return None
    options = routing.prefix_cache_affinity
    kwargs: dict[str, float] = {}
    if options is not None:
        for kwarg in PREFIX_CACHE_AFFINITY_KWARGS:
            value = getattr(options, kwarg)
            if value is not None:
                kwargs[kwarg] = value
    return RequestRouter(PREFIX_CACHE_AFFINITY_ROUTER, kwargs)


@dataclass(frozen=True)
class LoraAdapters:
    """LoRA adapters loaded on demand: Ray's `LLMConfig.lora_config` and the engine's LoRA
    switches."""

    path: str  # object storage prefix, one directory per adapter
    max_per_replica: int
    max_rank: int


def lora_adapters(lora: LoraSpec | None) -> LoraAdapters | None:
    if lora is None:
        return None
    return LoraAdapters(lora.source, lora.max_adapters_per_replica, lora.max_rank)


@dataclass(frozen=True)
class Plan:
    """A valid LLMDeployment, resolved. Immutable: every consumer sees the same answers."""

    llmd: LLMDeployment
    layout: GpuLayout
    fit: MemoryFit
    accelerator: Accelerator
    # The mode's strategy: render builds its kind of Ray child, status observes it.
    strategy: Strategy
    # The serving patterns, each resolved once: None where the spec leaves Ray's default.
    router: RequestRouter | None = None
    lora: LoraAdapters | None = None
    # Which Ray Serve LLM builder runs the model: the plain OpenAI app, the data-parallel
    # or the prefill/decode one; None for a custom Serve application.
    serve_app: str | None = None
    # The GPU worker groups, each with its Serve replicas: one for the whole model, or
    # prefill then decode. Render makes one worker group per role.
    roles: tuple[GpuRole, ...] = ()
    # The KV cache hand-over of prefill/decode disaggregation; None without it.
    kv_transfer: KvTransfer | None = None
    # Worker groups on other accelerator types, in preference order; the whole model's
    # role only (the CRD keeps fallbacks apart from disaggregation).
    fallbacks: tuple[FallbackGroup, ...] = ()

    @property
    def pinned_accelerator(self) -> str | None:
        """The accelerator type Serve may pin replicas to: the one type, or None when
        fallbacks let replicas run on any of several."""
        return None if self.fallbacks else self.accelerator.type

    @property
    def ray_kind(self) -> RayKind:
        return self.strategy.ray_kind

    @property
    def serves(self) -> bool:
        """Whether the deployment serves through Ray Serve (a RayService) or is a bare
        RayCluster or a RayJob running the user's own work."""
        return self.strategy.serves

    @property
    def runs_to_completion(self) -> bool:
        """Whether the child is a run that finishes (a RayJob)."""
        return self.strategy.runs_to_completion

    def role(self, name: str | None) -> GpuRole:
        for role in self.roles:
            if role.name == name:
                return role
        raise KeyError(name)

    @property
    def min_replicas(self) -> int:
        """Serve replicas of every role at its fewest: prefill and decode engines count
        alike."""
        return sum(role.min_replicas for role in self.roles)

    @property
    def max_replicas(self) -> int:
        return sum(role.max_replicas for role in self.roles)

    @property
    def gpus_per_replica(self) -> int:
        """GPUs of one replica of each role: one model replica, or one prefill engine and
        one decode engine."""
        return sum(role.layout.gpus_per_replica for role in self.roles)

    @property
    def gpus_at_min(self) -> int:
        """Whole GPUs of every worker group at its fewest replicas."""
        return sum(role.gpus_at_min for role in self.roles)

    @property
    def gpus_at_max(self) -> int:
        return sum(role.gpus_at_max for role in self.roles)
