"""Model sources: hf://, s3://, gs:// and pvc:// as Ray Serve LLM's model_source."""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

from llm_operator.api.models import LLMDeployment
from llm_operator.render import names


@dataclass(frozen=True)
class ModelSource:
    """What Ray Serve LLM loads from, and the claim to mount for pvc:// sources."""

    scheme: str
    model_source: str
    claim: str | None = None


class SourceOutsideMountError(ValueError):
    """A pvc:// path that would leave the claim's mount (validation refuses these first)."""


def under_mount(path: str) -> str:
    """`path` (relative to the claim) as a normalised path under the model-source mount.

    The API's grammar admits only relative paths without `.`, `..` or empty segments, so
    normalising changes nothing for an admitted source; it is the renderer's own guard that
    model_source never names a file outside the claim.
    """
    mount = names.MODEL_SOURCE_MOUNT
    local = posixpath.normpath(f"{mount}/{path}")
    if local != mount and not local.startswith(f"{mount}/"):
        raise SourceOutsideMountError(f"spec.model.source: {path!r} leaves the mount {mount}")
    return local


def parse_source(source: str) -> ModelSource:
    scheme, _, rest = source.partition("://")
    if scheme == "hf":
        return ModelSource(scheme, rest)
    if scheme == "pvc":
        claim, _, path = rest.partition("/")
        return ModelSource(scheme, under_mount(path), claim)
    # s3:// and gs:// are cloud mirrors Ray Serve LLM downloads itself.
    return ModelSource(scheme, source)


def model_source(llmd: LLMDeployment) -> ModelSource:
    """The served model's source (the serving modes require spec.model)."""
    source = optional_model_source(llmd)
    if source is None:
        raise ValueError("spec.model is required to serve a model")
    return source


def optional_model_source(llmd: LLMDeployment) -> ModelSource | None:
    """The model's source; None for a Job without a base model."""
    model = llmd.spec.model
    return None if model is None else parse_source(model.source)
