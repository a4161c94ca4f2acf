"""Shared helpers for the unit and golden tests."""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from tools.generate import golden_cases

from llm_operator import yamlio
from llm_operator.api.models import LLMDeployment
from llm_operator.api.plan import Plan
from llm_operator.api.validation import resolve, validate

__all__ = ["golden_cases"]  # the generator's list, for the suites

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "manifests" / "samples"
GOLDEN = Path(__file__).resolve().parent / "golden"
# A unit test that takes longer is stuck (the slowest take about a second); pyproject's
# global bound is for the e2e suite.
UNIT_TEST_SECONDS = 120.0


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).resolve().parent
    for item in items:
        in_unit_tests = here in Path(str(item.path)).resolve().parents
        if in_unit_tests and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(UNIT_TEST_SECONDS))


def in_ci() -> bool:
    """CI sets CI=true (.ci/run runs there); a developer's machine usually does not."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def require_or_skip(module: str, reason: str) -> ModuleType:
    """`module`, imported; without it the test is skipped on a developer's machine, but
    fails in CI, where every extra is installed and these checks must run."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        if in_ci():
            pytest.fail(f"{module} is missing in CI ({exc}): {reason}", pytrace=False)
        pytest.skip(f"{module} is not installed: {reason}", allow_module_level=True)


def load_one(path: Path) -> dict[str, Any]:
    (document,) = yamlio.load_all(path.read_text(encoding="utf-8"))
    assert isinstance(document, dict)
    return document


def sample(name: str) -> LLMDeployment:
    return validate(load_one(SAMPLES / f"{name}.yaml"))


def sample_plan(name: str) -> Plan:
    return resolve(load_one(SAMPLES / f"{name}.yaml"))
