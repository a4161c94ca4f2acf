"""Golden cases: each sample is one; rendering is deterministic. That every case's input
renders to exactly its committed expected.yaml is tests/test_generated.py's check."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import GOLDEN, SAMPLES, golden_cases, load_one
from llm_operator.api.validation import resolve
from llm_operator.render import render


@pytest.mark.parametrize("path", sorted(SAMPLES.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_sample_is_a_golden_input(path: Path) -> None:
    """The golden case named after a sample renders that very sample, not an old copy."""
    golden_input = GOLDEN / path.stem / "input.yaml"
    assert golden_input.exists(), f"{path.name} has no golden case"
    assert load_one(golden_input) == load_one(path), f"{golden_input} differs from {path}"


def test_rendering_is_deterministic() -> None:
    for case in golden_cases():
        plan = resolve(load_one(GOLDEN / case / "input.yaml"))
        assert render(plan) == render(plan)
