"""Every rendered serveConfigV2 is accepted by Ray's own Serve and LLMConfig models."""

from __future__ import annotations

import copy

import pytest
import yaml

from conftest import GOLDEN, golden_cases, load_one, require_or_skip
from llm_operator import raycheck
from llm_operator.api.validation import resolve
from llm_operator.render import render

require_or_skip("ray", "the `ray` extra provides Ray's schema models")


def _serve_configs() -> list[tuple[str, dict]]:
    found = []
    for case in golden_cases():
        for child in render(resolve(load_one(GOLDEN / case / "input.yaml"))):
            if child["kind"] == "RayService":
                found.append((case, yaml.safe_load(child["spec"]["serveConfigV2"])))
    return found


SERVE_CONFIGS = _serve_configs()


def test_service_cases_exist() -> None:
    assert len(SERVE_CONFIGS) >= 6


@pytest.mark.parametrize(("case", "config"), SERVE_CONFIGS, ids=[c for c, _ in SERVE_CONFIGS])
def test_ray_accepts_rendered_serve_config(case: str, config: dict) -> None:
    assert raycheck.serve_config_errors(config) == []


def test_ray_check_catches_a_bad_accelerator_type() -> None:
    """Guard: the check itself can fail."""
    config = next(cfg for c, cfg in SERVE_CONFIGS if c == "llama-8b-l4")
    broken = copy.deepcopy(config)
    broken["applications"][0]["args"]["llm_configs"][0]["accelerator_type"] = "NOT-A-GPU"
    errors = raycheck.serve_config_errors(broken)
    assert errors and "LLMConfig" in errors[0]


def test_ray_check_catches_a_bad_deployment_config() -> None:
    config = next(cfg for c, cfg in SERVE_CONFIGS if c == "llama-8b-l4")
    broken = copy.deepcopy(config)
    llm = broken["applications"][0]["args"]["llm_configs"][0]
    llm["deployment_config"] = {"num_replicas": -3}
    assert any("DeploymentSchema" in e for e in raycheck.serve_config_errors(broken))


def test_ray_check_catches_a_router_kwarg_the_router_does_not_take() -> None:
    config = next(cfg for c, cfg in SERVE_CONFIGS if c == "prefix-cache-routing")
    broken = copy.deepcopy(config)
    router = broken["applications"][0]["args"]["llm_configs"][0]["deployment_config"][
        "request_router_config"
    ]
    router["request_router_kwargs"]["imbalance_threshold"] = 3
    errors = raycheck.serve_config_errors(broken)
    assert any("imbalance_threshold" in e for e in errors), errors


@pytest.mark.parametrize("path", ["/models/adapters", "pvc://adapters/x", "hf://org/name"])
def test_ray_loads_lora_adapters_from_object_storage_only(path: str) -> None:
    """Why spec.lora.source takes s3:// and gs:// only: Ray's LoraConfig refuses the rest."""
    config = next(cfg for c, cfg in SERVE_CONFIGS if c == "lora-adapters")
    broken = copy.deepcopy(config)
    broken["applications"][0]["args"]["llm_configs"][0]["lora_config"][
        "dynamic_lora_loading_path"
    ] = path
    errors = raycheck.serve_config_errors(broken)
    assert errors and "LLMConfig" in errors[0]


def test_ray_check_reads_the_dp_builders_args_model() -> None:
    config = next(cfg for c, cfg in SERVE_CONFIGS if c == "data-parallel")
    assert list(config["applications"][0]["args"]) == ["llm_config"]
    broken = copy.deepcopy(config)
    app = broken["applications"][0]
    app["args"]["llm_configs"] = [app["args"].pop("llm_config")]
    errors = raycheck.serve_config_errors(broken)
    assert any("DPOpenAiServingArgs" in e and "llm_configs" in e for e in errors), errors
