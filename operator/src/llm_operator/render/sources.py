"""Model sources: hf://, s3://, gs:// and pvc:// as Ray Serve LLM's model_source."""

from __future__ import annotations

import hashlib
import posixpath
from dataclasses import dataclass
from typing import Final

from llm_operator.api.models import LLMDeployment, ModelCacheSpec
from llm_operator.render import names

# Prefetched models live here on the cache claim, one directory per source and revision.
CACHE_DIR: Final = "prefetched"
KEY_LENGTH: Final = 16


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


@dataclass(frozen=True)
class Prefetch:
    """What one prefetch downloads, and where: `key` is a hash of the source and
    revision, so a changed source or revision makes a new Job and a new directory."""

    source: str
    revision: str
    key: str
    path: str
    cache: ModelCacheSpec


def model_key(source: str, revision: str | None) -> str:
    digest = hashlib.sha256(f"{source}\n{revision or ''}".encode()).hexdigest()
    return digest[:KEY_LENGTH]


def prefetch_of(llmd: LLMDeployment) -> Prefetch | None:
    """The deployment's prefetch, or None when it asks for none."""
    cache, model = llmd.spec.storage.model_cache, llmd.spec.model
    if cache is None or not cache.prefetch or model is None:
        return None
    key = model_key(model.source, model.revision)
    path = posixpath.join(cache.mount_path, CACHE_DIR, key)
    return Prefetch(model.source, model.revision or "", key, path, cache)


def cached_source(prefetch: Prefetch) -> ModelSource:
    """What the Ray pods load with prefetch: the directory on the cache claim (mounted at
    the same path in the Job and the Ray pods), with no source claim to mount."""
    return ModelSource("cache", prefetch.path)


def serving_source(llmd: LLMDeployment) -> ModelSource | None:
    """What the Ray pods load: the prefetched directory on the cache claim with
    spec.storage.modelCache.prefetch, else the model's own source."""
    prefetch = prefetch_of(llmd)
    return optional_model_source(llmd) if prefetch is None else cached_source(prefetch)
