"""Validation beyond single broken files: several errors at once, messages, safe YAML."""

from __future__ import annotations

import pytest
import yaml

from conftest import SAMPLES, load_one
from llm_operator import yamlio
from llm_operator.api.validation import FieldError, SpecError, names_field, parse, validate


def quickstart() -> dict:
    return load_one(SAMPLES / "quickstart.yaml")


def test_every_problem_is_reported_at_once() -> None:
    body = quickstart()
    body["spec"]["engine"] = {"args": {"dtype": "half", "max_model_len": 10}}
    body["spec"]["rayCluster"] = {"worker": {"resources": {"limits": {"nvidia.com/gpu": 1}}}}
    with pytest.raises(SpecError) as caught:
        validate(body)
    fields = sorted(e.field for e in caught.value.errors)
    assert fields == [
        "spec.engine.args.dtype",
        "spec.engine.args.max_model_len",
        "spec.rayCluster.worker.resources.limits",
    ]
    assert "; " in str(caught.value)


def test_schema_errors_are_all_reported() -> None:
    body = quickstart()
    body["spec"]["engine"] = {"tensorParallelSize": 0, "gpuMemoryUtilization": 2}
    with pytest.raises(SpecError) as caught:
        parse(body)
    assert {e.field for e in caught.value.errors} == {
        "spec.engine.tensorParallelSize",
        "spec.engine.gpuMemoryUtilization",
    }


def test_field_error_text() -> None:
    assert str(FieldError("spec.a", "is bad")) == "spec.a: is bad"
    assert str(FieldError("spec.a", "spec.a must be good")) == "spec.a must be good"


def test_not_a_mapping() -> None:
    with pytest.raises(SpecError) as caught:
        parse(["a", "list"])  # type: ignore[arg-type]
    assert caught.value.errors[0].field == "(document)"


def test_defaults_are_filled() -> None:
    llmd = validate(quickstart())
    assert llmd.spec.mode == "Service"
    assert llmd.spec.engine.type == "vllm"
    assert llmd.spec.accelerator.resource_name == "nvidia.com/gpu"
    assert llmd.served_model_id == "qwen2.5-0.5b-instruct"


def test_yaml_bomb_is_refused() -> None:
    bomb = "a: &a [x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}]\n" for i in range(12)
    )
    with pytest.raises(yaml.YAMLError, match="aliases"):
        yamlio.load_all(bomb)


def test_oversized_input_is_refused() -> None:
    with pytest.raises(yaml.YAMLError, match="larger than"):
        yamlio.load_all("a: " + "x" * (yamlio.MAX_DOCUMENT_BYTES + 1))


def test_unsafe_tags_are_refused() -> None:
    with pytest.raises(yaml.YAMLError):
        yamlio.load_all("!!python/object/apply:os.system ['true']")


@pytest.mark.parametrize(
    ("text", "field", "named"),
    [
        ("  - spec.replicas: must be at least 1", "spec.replicas", True),
        ("  - spec.replicas: must be at least 1", "spec.replica", False),
        ("spec.model.source must be hf://...", "spec.model", False),
        ("spec.model.source must be hf://...", "spec.model.source", True),
        ("spec.rayCluster.env[0].name: Invalid value", "spec.rayCluster.env", False),
        ("spec.rayCluster.env[0].name: Invalid value", "spec.rayCluster.env[0]", False),
        ("spec.rayCluster.env[0].name: Invalid value", "spec.rayCluster.env[0].name", True),
        ("spec.rayCluster.podLabels.team in body should match", "spec.rayCluster.podLabels", False),
        ('x "qwen-small" is invalid: metadata.name: Invalid value', "name", False),
        ('x "qwen-small" is invalid: metadata.name: Invalid value', "metadata.name", True),
        ("is invalid: [spec.a: Required value, spec.b: Invalid value]", "spec.a", True),
        ("set a branch, tag or commit in spec.model.revision.", "spec.model.revision", True),
        (
            'strict decoding error: unknown field "spec.rayCluster.hostNetwork"',
            "spec.rayCluster.hostNetwork",
            True,
        ),
        ("spec.resources[storage]: must be greater than zero", "spec.resources", False),
        ("spec.resources[storage]: must be greater than zero", "spec.resources[storage]", True),
    ],
)
def test_names_field_matches_the_whole_path(text: str, field: str, named: bool) -> None:
    assert names_field(text, field) is named
