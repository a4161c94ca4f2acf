"""Shared helpers for the unit and golden tests."""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from tools.generate import golden_cases

from fakeapi import FakeApiServer, RecordingKubeApi, cluster_api
from llm_operator import yamlio
from llm_operator.api.models import LLMDeployment
from llm_operator.api.plan import Plan
from llm_operator.api.validation import SpecError, names_field, resolve, validate
from llm_operator.render import render
from llm_operator.render.serve import serve_config

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


# Where `e2e/tools.sh` links the pinned tools and the CRDs of KubeRay and the Gateway API.
BIN_DIR = Path(os.environ.get("LLM_OPERATOR_BIN_DIR", ROOT / ".e2e" / "bin"))


def crd_schema(path: Path, installed_by: str) -> dict[str, Any]:
    """The v1 openAPIV3Schema of the CRD at `path`; without the file the test is skipped
    on a developer's machine and fails in CI. `installed_by` says what puts it there."""
    if not path.exists():
        missing = f"{path} is missing: {installed_by}"
        if in_ci():
            pytest.fail(missing, pytrace=False)
        pytest.skip(missing)
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # KubeRay's run to 17,000 lines
    crd = yaml.load(path.read_text(encoding="utf-8"), Loader=loader)
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


def unknown_fields(value: Any, schema: dict[str, Any], path: str = "") -> list[str]:
    """Paths in `value` that `schema` has no field for (what the API server would prune)."""
    if isinstance(value, dict) and "properties" in schema:
        found = []
        for key, item in value.items():
            if key not in schema["properties"]:
                found.append(f"{path}.{key}")
            else:
                found += unknown_fields(item, schema["properties"][key], f"{path}.{key}")
        return found
    if isinstance(value, list) and "items" in schema:
        return [
            p
            for i, item in enumerate(value)
            for p in unknown_fields(item, schema["items"], f"{path}[{i}]")
        ]
    return []


def refusals(body: dict[str, Any]) -> list[str]:
    """What validation says, one message per problem (each names its field)."""
    with pytest.raises(SpecError) as caught:
        resolve(body)
    return [str(e) for e in caught.value.errors]


def assert_refused(body: dict[str, Any], field: str) -> None:
    """Validation refuses the body with a message that names `field`."""
    messages = refusals(body)
    assert any(names_field(m, field) for m in messages), messages


def llm_config(body: dict[str, Any]) -> dict[str, Any]:
    """The first LLM config of the first Serve application rendered for `body`."""
    config: dict[str, Any] = serve_config(resolve(body))["applications"][0]["args"]
    return dict(config["llm_configs"][0])


@pytest.fixture
def server() -> FakeApiServer:
    return FakeApiServer()


@pytest.fixture
def api(server: FakeApiServer) -> RecordingKubeApi:
    return cluster_api(server)


def groups(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The worker groups of the RayService rendered for `body`, by group name."""
    (service,) = [c for c in render(resolve(body)) if c["kind"] == "RayService"]
    specs = service["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    return {g["groupName"]: g for g in specs}


def load_one(path: Path) -> dict[str, Any]:
    (document,) = yamlio.load_all(path.read_text(encoding="utf-8"))
    assert isinstance(document, dict)
    return document


def sample(name: str) -> LLMDeployment:
    return validate(load_one(SAMPLES / f"{name}.yaml"))


def sample_plan(name: str) -> Plan:
    return resolve(load_one(SAMPLES / f"{name}.yaml"))
