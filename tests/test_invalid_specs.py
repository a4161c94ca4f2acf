"""Each file in tests/invalid/ is wrong in one way; validation must name that field."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import SAMPLES, load_one
from llm_operator.api.validation import SpecError, names_field, validate
from llm_operator.cli import EXIT_INVALID, main

INVALID = sorted((Path(__file__).resolve().parent / "invalid").glob("*.yaml"))
EXPECT = re.compile(r"^# expect: (\S+)$", re.MULTILINE)


def expected_field(path: Path) -> str:
    found = EXPECT.search(path.read_text(encoding="utf-8"))
    assert found, f"{path.name} has no '# expect: <field>' line"
    return found.group(1)


def test_there_are_enough_invalid_specs() -> None:
    assert len(INVALID) >= 15
    assert all(expected_field(p) for p in INVALID)


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_validate_names_the_field(path: Path) -> None:
    with pytest.raises(SpecError) as caught:
        validate(load_one(path))
    messages = [str(error) for error in caught.value.errors]
    assert any(names_field(m, expected_field(path)) for m in messages), messages


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_cli_validate_exits_non_zero_with_the_field(
    path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["validate", "--no-ray", "-f", str(path)]) == EXIT_INVALID
    captured = capsys.readouterr()
    assert cli_names_field(captured.err, expected_field(path)), captured.err
    assert "valid (" not in captured.out


def cli_names_field(err: str, field: str) -> bool:
    """Whether one of the problems `llm-operator validate` lists names `field`."""
    return any(names_field(line, field) for line in err.splitlines() if line.startswith("  - "))


@pytest.mark.parametrize("path", sorted(SAMPLES.glob("*.yaml")), ids=lambda p: p.stem)
def test_samples_are_valid(path: Path) -> None:
    """Guard: validation accepts good specs, so the rejections above mean something."""
    assert validate(load_one(path)).name
