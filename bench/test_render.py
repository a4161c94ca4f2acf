"""Render benchmark: validate + render of every golden case, the pure path the operator
runs on each reconcile. Run with `make bench-render`; results land in
bench/results/render.json (pytest-benchmark's format) and the README's table.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from llm_operator import yamlio
from llm_operator.api.validation import resolve
from llm_operator.render import render
from llm_operator.settings import OperatorSettings

GOLDEN = Path(__file__).resolve().parent.parent / "tests" / "golden"
CASES = sorted(p.name for p in GOLDEN.iterdir() if (p / "input.yaml").exists())
SETTINGS = OperatorSettings()


def _input(case: str) -> dict[str, Any]:
    (body,) = yamlio.load_all((GOLDEN / case / "input.yaml").read_text(encoding="utf-8"))
    assert isinstance(body, dict)
    return body


@pytest.mark.parametrize("case", CASES)
def test_validate_and_render(benchmark: Any, case: str) -> None:
    body = _input(case)
    children = benchmark(lambda: render(resolve(body, SETTINGS.gpu_memory_gib), SETTINGS))
    assert children, case
