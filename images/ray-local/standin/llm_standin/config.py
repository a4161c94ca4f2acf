"""The stand-in's arguments (the Serve application's `args`, i.e. the LLMDeployment's
`spec.engine.args`) and the Serve deployment options they give. Pure: no Ray import.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

# Logical CPUs a replica reserves: the local node has two cores for everything.
REPLICA_CPUS = 0.1
# The fraction of `accelerator_type:<T>` Ray's own accelerator_type option asks for.
ACCELERATOR_HINT = 0.001


class StandinArgs(BaseModel):
    """Every argument is optional; unknown ones are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())

    model_id: str = Field(default="standin", min_length=1, description="Served model name.")
    gpus_per_replica: int = Field(
        default=1, ge=1, description="GPU bundles per replica (vLLM's tensor x pipeline size)."
    )
    placement_strategy: Literal["STRICT_PACK", "PACK"] = Field(
        default="STRICT_PACK", description="Placement group strategy of a replica's bundles."
    )
    accelerator_type: str | None = Field(
        default=None, min_length=1, description="Ray accelerator type the first bundle hints at."
    )
    num_replicas: int | None = Field(default=None, ge=1, description="Fixed replica count.")
    autoscaling_config: dict[str, Any] | None = Field(
        default=None, description="Serve's autoscaling_config, passed through."
    )
    max_ongoing_requests: int | None = Field(default=None, ge=1)
    response_delay_s: float = Field(
        default=0.0, ge=0, description="Delay before each answer, to load Serve's queues."
    )
    max_tokens: int = Field(default=16, ge=1, description="Completion length when unasked.")

    @model_validator(mode="after")
    def _one_way_to_scale(self) -> StandinArgs:
        if self.num_replicas is not None and self.autoscaling_config is not None:
            raise ValueError("set num_replicas or autoscaling_config, not both")
        return self


def parse_args(args: Mapping[str, Any] | None) -> StandinArgs:
    """Validate the application's args; ValueError with a readable message when wrong."""
    values = dict(args or {})
    unknown = sorted(set(values) - set(StandinArgs.model_fields))
    if unknown:
        raise ValueError(
            f"llm_standin: unknown argument(s) {', '.join(unknown)}; "
            f"known: {', '.join(StandinArgs.model_fields)}"
        )
    try:
        return StandinArgs.model_validate(values)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in problem['loc']) or 'args'}: {problem['msg']}"
            for problem in error.errors()
        )
        raise ValueError(f"llm_standin: invalid arguments: {problems}") from None


def accelerator_resource(accelerator_type: str) -> str:
    """Ray's custom resource for an accelerator type, as `ray start` advertises it."""
    return f"accelerator_type:{accelerator_type}"


def placement_bundles(args: StandinArgs) -> list[dict[str, float]]:
    """One GPU bundle per engine worker; the first also holds the replica (and the hint)."""
    first: dict[str, float] = {"CPU": REPLICA_CPUS, "GPU": 1}
    if args.accelerator_type is not None:
        first[accelerator_resource(args.accelerator_type)] = ACCELERATOR_HINT
    return [first] + [{"GPU": 1} for _ in range(args.gpus_per_replica - 1)]


def deployment_options(args: StandinArgs) -> dict[str, Any]:
    """Keyword arguments for the Serve deployment's `.options(...)`."""
    options: dict[str, Any] = {
        "ray_actor_options": {"num_cpus": REPLICA_CPUS},
        "placement_group_bundles": placement_bundles(args),
        "placement_group_strategy": args.placement_strategy,
    }
    if args.num_replicas is not None:
        options["num_replicas"] = args.num_replicas
    if args.autoscaling_config is not None:
        options["autoscaling_config"] = dict(args.autoscaling_config)
    if args.max_ongoing_requests is not None:
        options["max_ongoing_requests"] = args.max_ongoing_requests
    return options
