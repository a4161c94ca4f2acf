"""Replicas that peer draw distinct priorities: kopf pauses all replicas on a tie."""

from __future__ import annotations

from typing import Any

import kopf
import pytest

from llm_operator.controller import handlers
from llm_operator.settings import OperatorSettings


def started_with(monkeypatch: pytest.MonkeyPatch, peering: str | None) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    monkeypatch.setattr(kopf, "run", lambda **kwargs: seen.update(kwargs))
    monkeypatch.setattr(handlers, "serve_metrics", lambda address: None)
    handlers.run(
        namespaces=["a"],
        all_namespaces=False,
        verbose=False,
        liveness_endpoint="",
        settings=OperatorSettings(),
        peering=peering,
    )
    return seen


def test_peering_replicas_draw_distinct_positive_priorities(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    priorities = {started_with(monkeypatch, "llm-operator")["priority"] for _ in range(50)}
    assert len(priorities) == 50
    assert all(priority > 0 for priority in priorities)


def test_a_standalone_operator_takes_no_priority(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = started_with(monkeypatch, None)
    assert seen["standalone"] is True
    assert seen["priority"] is None
