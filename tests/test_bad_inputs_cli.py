"""The bad-input corpus (e2e/bad_inputs/) offline: `llm-operator validate` gives the verdict
the API server or the operator gives, naming the same field, and refuses YAML bombs
quickly and without a traceback. See e2e/bad_inputs/README.md for the file format.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from testkit.bad_inputs import REPEAT, expand, expected_field, header

from conftest import ROOT
from llm_operator import yamlio
from llm_operator.cli import EXIT_INVALID, main
from test_invalid_specs import cli_names_field

CORPUS = ROOT / "e2e" / "bad_inputs"
CASES = sorted(CORPUS.glob("*.yaml"))
BOMBS = sorted((CORPUS / "cli-only").glob("*.yaml"))
GAPS = sorted((CORPUS / "known-gaps").glob("*.yaml"))
# The categories of issue #5 and the file-name prefixes that hold them.
CATEGORIES = {
    "wrong types": ("type-",),
    "out-of-range numbers": ("range-",),
    "unknown fields": ("unknown-field-",),
    "conflicting fields": ("conflict-",),
    "unsupported source schemes": ("source-",),
    "names too long or not DNS-1035": ("name-",),
    "unicode": ("unicode-",),
    "huge strings": ("huge-",),
    "GPU layouts that cannot fit": ("layout-", "fit-"),
}
BOMB_SECONDS = 10.0


def expanded(path: Path, tmp_path: Path) -> Path:
    """The case as a file, with every `<<N x c>>` marker replaced by c repeated N times."""
    text = path.read_text(encoding="utf-8")
    if not REPEAT.search(text):
        return path
    out = tmp_path / path.name
    out.write_text(expand(text), encoding="utf-8")
    return out


def with_gap_marks(paths: list[Path]) -> list[object]:
    """Cases with a `# gap:` line are expected to fail until the product closes the gap:
    strictly (one that starts passing fails the run) and only by a failed assertion, so a
    crash is a failure too, never the expected one."""
    return [
        pytest.param(
            p,
            id=p.stem,
            marks=(
                pytest.mark.xfail(
                    strict=True,
                    raises=AssertionError,
                    reason=f"known gap: {p.relative_to(CORPUS)}",
                )
                if header(p, "gap")
                else ()
            ),
        )
        for p in paths
    ]


def test_the_corpus_covers_the_issue() -> None:
    assert len(CASES) >= 40
    for path in CASES:
        assert header(path, "why"), f"{path.name} has no '# why:' line"
        assert not header(path, "gap"), f"{path.name}: known gaps live in known-gaps/"
        assert expected_field(path)
    missing = [
        name
        for name, prefixes in CATEGORIES.items()
        if not any(p.name.startswith(prefixes) for p in CASES)
    ]
    assert not missing, f"categories without a case: {missing}"
    by_operator = [p for p in CASES if header(p, "decided-by")]
    assert 0 < len(by_operator) < len(CASES) // 2
    assert len(BOMBS) >= 5 and GAPS


def test_case_names_are_unique() -> None:
    """The e2e suite creates the operator's cases side by side in one namespace."""
    names = Counter(
        yamlio.load_all(REPEAT.sub("x", p.read_text(encoding="utf-8")))[0]["metadata"]["name"]
        for p in CASES
    )
    assert [name for name, count in names.items() if count > 1] == []


def test_huge_cases_are_small_on_disk() -> None:
    huge = [p for p in CASES if p.name.startswith("huge-")]
    assert huge and all(REPEAT.search(p.read_text(encoding="utf-8")) for p in huge)
    assert all(p.stat().st_size < 4096 for p in CASES + BOMBS + GAPS)


@pytest.mark.parametrize("path", CASES, ids=lambda p: p.stem)
def test_cli_refuses_with_the_field(
    path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["validate", "--no-ray", "-f", str(expanded(path, tmp_path))]) == EXIT_INVALID
    captured = capsys.readouterr()
    assert cli_names_field(captured.err, expected_field(path)), captured.err[:2000]
    assert "valid (" not in captured.out


@pytest.mark.parametrize("path", with_gap_marks(GAPS))
def test_known_gaps(path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """What the CLI should say about each known gap; expected to fail until it does."""
    assert main(["validate", "--no-ray", "-f", str(expanded(path, tmp_path))]) == EXIT_INVALID
    assert cli_names_field(capsys.readouterr().err, expected_field(path))


@pytest.mark.parametrize("path", with_gap_marks(BOMBS))
def test_cli_refuses_yaml_bombs_quickly_and_cleanly(path: Path, tmp_path: Path) -> None:
    exit_code, expect = header(path, "exit"), header(path, "expect")
    assert exit_code and expect, f"{path.name} needs '# exit:' and '# expect:' lines"
    document = str(expanded(path, tmp_path))
    command = [sys.executable, "-m", "llm_operator.cli", "validate", "--no-ray", "-f", document]
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    elapsed = time.monotonic() - started
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    assert done.returncode == int(exit_code), done.stderr[-2000:]
    assert expect in done.stderr, done.stderr[-2000:]
    assert elapsed < BOMB_SECONDS


def test_the_huge_document_is_over_the_cap(tmp_path: Path) -> None:
    document = expanded(CORPUS / "cli-only" / "huge-document.yaml", tmp_path)
    assert document.stat().st_size > yamlio.MAX_DOCUMENT_BYTES


def test_one_bad_document_fails_the_file_but_not_the_others(
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = CORPUS / "cli-only" / "multi-document-one-bad.yaml"
    assert main(["validate", "--no-ray", "-f", str(path)]) == EXIT_INVALID
    captured = capsys.readouterr()
    assert "good-one: valid" in captured.out
    assert "bad-one: invalid" in captured.err
    assert "good-one" not in captured.err
