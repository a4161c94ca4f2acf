"""Shared helpers for the unit and golden tests."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from llm_operator import yamlio
from llm_operator.api.models import LLMDeployment
from llm_operator.api.validation import validate

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "manifests" / "samples"
GOLDEN = Path(__file__).resolve().parent / "golden"
UPDATE_GOLDEN = os.environ.get("UPDATE_GOLDEN") == "1"


def load_one(path: Path) -> dict[str, Any]:
    (document,) = yamlio.load_all(path.read_text(encoding="utf-8"))
    assert isinstance(document, dict)
    return document


def sample(name: str) -> LLMDeployment:
    return validate(load_one(SAMPLES / f"{name}.yaml"))


def golden_cases() -> list[str]:
    return sorted(p.name for p in GOLDEN.iterdir() if (p / "input.yaml").exists())


def compare_or_update(path: Path, actual: str) -> None:
    """Golden comparison; UPDATE_GOLDEN=1 rewrites the file instead (review the diff)."""
    if UPDATE_GOLDEN:
        path.write_text(actual, encoding="utf-8")
        return
    if not path.exists():
        pytest.fail(f"{path} is missing: run `make golden` and review the new file")
    assert actual == path.read_text(encoding="utf-8"), (
        f"{path} differs from the rendered output; if the change is intended, "
        "run `make golden` and review the diff"
    )
