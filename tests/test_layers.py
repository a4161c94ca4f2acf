"""The one-way layering: api -> render -> controller. Pure layers import no cluster code."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "operator" / "src" / "llm_operator"
PURE = ["api", "render", "sizing", "settings.py", "yamlio.py"]
FORBIDDEN = ("kopf", "kubernetes", "llm_operator.controller", "llm_operator.cli")


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def _files(part: str) -> list[Path]:
    target = PACKAGE / part
    return sorted(target.rglob("*.py")) if target.is_dir() else [target]


@pytest.mark.parametrize("part", PURE)
def test_pure_layers_import_no_cluster_code(part: str) -> None:
    files = _files(part)
    assert files
    bad = {
        f"{path.relative_to(PACKAGE)}: {name}"
        for path in files
        for name in _imports(path)
        if name.split(".")[0] in ("kopf", "kubernetes") or name.startswith(FORBIDDEN[2:])
    }
    assert bad == set()


def test_api_does_not_import_render() -> None:
    bad = [
        str(path)
        for path in _files("api")
        if any(n.startswith("llm_operator.render") for n in _imports(path))
    ]
    assert bad == []


def test_the_check_sees_imports() -> None:
    """Guard: the controller does import kopf, so the scan can find it."""
    assert "kopf" in _imports(PACKAGE / "controller" / "handlers.py")


def _top_level_imports(path: Path) -> set[str]:
    """Imports at module level only (a function's own import is deferred on purpose)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def test_status_reads_the_plan_not_validation_or_render_internals() -> None:
    found = _imports(PACKAGE / "controller" / "status.py")
    assert "llm_operator.api.validation" not in found
    assert {n for n in found if n.startswith("llm_operator.render")} <= {"llm_operator.render"}
    assert "llm_operator.api.plan" in found


def test_the_offline_cli_imports_no_controller_module() -> None:
    """Only `run` (deferred inside it) needs the controller; render, validate and plan
    work without kopf or a client."""
    assert not any(
        n.startswith(("llm_operator.controller", "kopf", "kubernetes"))
        for n in _top_level_imports(PACKAGE / "cli.py")
    )


def test_layout_and_fit_are_called_only_by_validation() -> None:
    """The plan carries them; no other module may compute its own."""
    callers = {
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if path.parent.name != "sizing"
        and any(
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("gpu_layout", "memory_fit")
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        )
    }
    assert callers == {"api/validation.py"}


def test_build_time_tools_are_not_in_the_operator_package() -> None:
    """The chart's values model only generates files: the operator image does not ship it."""
    shipped = {str(path.relative_to(PACKAGE)) for path in PACKAGE.rglob("*.py")}
    assert "chart_values.py" not in shipped
    assert not [p for p in shipped if "chart_values" in (PACKAGE / p).read_text(encoding="utf-8")]
