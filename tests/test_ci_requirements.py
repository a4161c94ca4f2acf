"""Checks that need an extra (Ray's models) skip on a developer's machine without it, and
fail in CI, where .ci/run installs every extra: CI cannot stay green without them."""

from __future__ import annotations

import pytest

from conftest import UNIT_TEST_SECONDS, require_or_skip

MISSING = "llm_operator_no_such_module"


def test_without_the_extra_a_developer_run_skips(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="not installed"):
        require_or_skip(MISSING, "why")


@pytest.mark.parametrize("value", ["true", "TRUE", "1"])
def test_without_the_extra_ci_fails(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("CI", value)
    with pytest.raises(pytest.fail.Exception, match="missing in CI"):
        require_or_skip(MISSING, "why")


def test_with_the_module_it_is_returned(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    assert require_or_skip("json", "why").dumps([]) == "[]"


def test_unit_tests_have_a_tight_timeout(request: pytest.FixtureRequest) -> None:
    marker = request.node.get_closest_marker("timeout")
    assert marker is not None and marker.args == (UNIT_TEST_SECONDS,)
    assert request.config.getini("timeout") == "900"
