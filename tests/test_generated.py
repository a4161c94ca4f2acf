"""Every generated file is what `make generate` (tools/generate.py) makes of its sources:
golden files, CRDs, the chart's values and schema, the README's values table and the
install manifest. Compared only; a stale file is fixed by `make generate`, then review."""

from __future__ import annotations

from pathlib import Path

import pytest
from tools import generate

from conftest import ROOT

FILES = generate.generators()


@pytest.mark.parametrize("path", sorted(FILES), ids=lambda p: str(p.relative_to(ROOT)))
def test_generated_file_is_current(path: Path) -> None:
    assert path.exists(), f"{path} is missing: run `make generate` and review the new file"
    assert FILES[path]() == path.read_text(encoding="utf-8"), (
        f"{path.relative_to(ROOT)} differs from what `make generate` makes; if the change "
        "is intended, run `make generate` and review the diff"
    )


def test_every_golden_case_and_committed_crd_is_covered() -> None:
    cases = {p.parent.name for p in (ROOT / "tests" / "golden").glob("*/input.yaml")}
    assert {p.parent.name for p in FILES if p.name == "expected.yaml"} == cases
    committed = [*ROOT.glob("manifests/crds/*.yaml"), *ROOT.glob("charts/*/crds/*.yaml")]
    assert {p for p in FILES if p.parent.name == "crds"} == set(committed)


def test_the_readme_table_has_its_markers() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert generate.TABLE_START in text and generate.TABLE_END in text
