"""The generation-based diff base decides kopf's cause from status alone (no extra write)."""

from __future__ import annotations

from typing import Any

import kopf
import pytest

from llm_operator.controller.handlers import GenerationDiffBase

SPEC = {"model": {"source": "hf://Qwen/Qwen2.5-0.5B-Instruct"}}


def body(generation: int, observed: int | None) -> kopf.Body:
    raw: dict[str, Any] = {
        "apiVersion": "llmops.dev/v1alpha1",
        "kind": "LLMDeployment",
        "metadata": {"name": "m", "namespace": "ns", "generation": generation},
        "spec": SPEC,
    }
    if observed is not None:
        raw["status"] = {"observedGeneration": observed, "phase": "Pending"}
    return kopf.Body(raw)  # type: ignore[arg-type]


def test_no_status_is_a_creation() -> None:
    assert GenerationDiffBase().fetch(body=body(1, None)) is None


def test_reported_generation_is_handled_so_there_is_no_diff() -> None:
    storage = GenerationDiffBase()
    current = body(3, 3)
    old = storage.fetch(body=current)
    assert old is not None
    assert old == storage.build(body=current), "kopf sees no change"


@pytest.mark.parametrize("observed", [1, 2])
def test_older_generation_is_an_update(observed: int) -> None:
    storage = GenerationDiffBase()
    current = body(3, observed)
    old = storage.fetch(body=current)
    assert old is not None, "an update, not a creation"
    assert old != storage.build(body=current), "kopf sees a change"


def test_store_writes_nothing() -> None:
    patch = kopf.Patch()
    current = body(2, 1)
    storage = GenerationDiffBase()
    storage.store(body=current, patch=patch, essence=storage.build(body=current))
    assert not patch
