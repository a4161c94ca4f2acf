"""The `llm-operator` command: offline render, validate, plan and crd."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from conftest import SAMPLES, require_or_skip
from llm_operator import yamlio
from llm_operator.api.crd import build_crd
from llm_operator.cli import EXIT_INVALID, EXIT_OK, EXIT_USAGE, main

ALL_SAMPLES = sorted(SAMPLES.glob("*.yaml"))


@pytest.mark.parametrize("path", ALL_SAMPLES, ids=lambda p: p.stem)
def test_render_prints_children_in_apply_order(
    path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["render", "-f", str(path)]) == EXIT_OK
    children = list(yaml.safe_load_all(capsys.readouterr().out))
    kinds = [c["kind"] for c in children]
    # Claims, the Ray resource, then the route to the Service KubeRay makes for it.
    if kinds[-1] == "HTTPRoute":
        kinds.pop()
    assert kinds[-1] in ("RayService", "RayCluster", "RayJob")
    assert set(kinds[:-1]) <= {"PersistentVolumeClaim"}


def test_render_json_is_a_list(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["render", "-f", str(SAMPLES / "quickstart.yaml"), "-o", "json"]) == EXIT_OK
    listing = json.loads(capsys.readouterr().out)
    assert listing["kind"] == "List" and listing["items"][0]["kind"] == "RayService"


@pytest.mark.parametrize("path", ALL_SAMPLES, ids=lambda p: p.stem)
def test_samples_validate_with_ray(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    require_or_skip("ray", "`validate` checks Serve configs with Ray's own models")
    assert main(["validate", "-f", str(path)]) == EXIT_OK
    out = capsys.readouterr().out
    assert "valid" in out
    if "mode: Cluster" not in path.read_text():
        assert "Ray's Serve models" in out


def test_plan_shows_multi_host_layout(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "-f", str(SAMPLES / "llama-405b-h100.yaml")]) == EXIT_OK
    out = capsys.readouterr().out
    assert "GPUs per replica:   16" in out
    assert "hosts per replica:  2 (GPUs per worker pod: 8)" in out
    assert "memory fit:         fits" in out


def test_render_refuses_an_invalid_spec(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    body = yaml.safe_load((SAMPLES / "quickstart.yaml").read_text())
    body["spec"]["engine"] = {"tensorParallelSize": 0}
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(body))
    assert main(["render", "-f", str(bad)]) == EXIT_INVALID
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "spec.engine.tensorParallelSize" in captured.err


def test_unreadable_input_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["validate", "-f", str(tmp_path / "missing.yaml")]) == EXIT_USAGE
    (tmp_path / "broken.yaml").write_text("a: [unclosed")
    assert main(["validate", "-f", str(tmp_path / "broken.yaml")]) == EXIT_USAGE
    assert "not valid YAML" in capsys.readouterr().err


def test_crd_command_prints_the_generated_crd(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["crd"]) == EXIT_OK
    assert yamlio.load_all(capsys.readouterr().out) == [build_crd()]
