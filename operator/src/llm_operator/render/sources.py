"""Model sources: hf://, s3://, gs:// and pvc:// as Ray Serve LLM's model_source."""

from __future__ import annotations

from dataclasses import dataclass

from llm_operator.api.models import LLMDeployment
from llm_operator.render import names


@dataclass(frozen=True)
class ModelSource:
    """What Ray Serve LLM loads from, and the claim to mount for pvc:// sources."""

    scheme: str
    model_source: str
    claim: str | None = None


def parse_source(source: str) -> ModelSource:
    scheme, _, rest = source.partition("://")
    if scheme == "hf":
        return ModelSource(scheme, rest)
    if scheme == "pvc":
        claim, _, path = rest.partition("/")
        local = f"{names.MODEL_SOURCE_MOUNT}/{path}".rstrip("/")
        return ModelSource(scheme, local, claim)
    # s3:// and gs:// are cloud mirrors Ray Serve LLM downloads itself.
    return ModelSource(scheme, source)


def model_source(llmd: LLMDeployment) -> ModelSource:
    return parse_source(llmd.spec.model.source)
