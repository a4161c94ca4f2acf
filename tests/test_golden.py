"""Golden files: every case's input renders to exactly its committed expected.yaml."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import GOLDEN, SAMPLES, compare_or_update, golden_cases, load_one
from llm_operator import yamlio
from llm_operator.api.validation import resolve
from llm_operator.render import render
from llm_operator.settings import OperatorSettings


@pytest.mark.parametrize("case", golden_cases())
def test_render_matches_golden(case: str) -> None:
    plan = resolve(load_one(GOLDEN / case / "input.yaml"))
    rendered = yamlio.dump_all(render(plan, OperatorSettings()))
    compare_or_update(GOLDEN / case / "expected.yaml", rendered)


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
