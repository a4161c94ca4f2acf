"""GPU-type fallbacks: one worker group per accelerator type, in preference order, each
holding a replica in the same pods; Serve not pinned to one accelerator type."""

from __future__ import annotations

from typing import Any

import pytest

from conftest import (
    SAMPLES,
    assert_refused,
    groups,
    llm_config,
    load_one,
    refusals,
    require_or_skip,
)
from llm_operator.api.validation import SpecError, names_field, resolve
from llm_operator.cli import main
from llm_operator.render.serve import serve_config


def fallback(**accelerator: Any) -> dict[str, Any]:
    """The gpu-fallback sample (H100 x 8 preferred, L4 x 4 fallback, TP 1, autoscaling
    1-4) with `accelerator` keys replaced."""
    body = load_one(SAMPLES / "gpu-fallback.yaml")
    body["spec"]["accelerator"].update(accelerator)
    return body


def test_one_worker_group_per_type_in_preference_order() -> None:
    body = fallback(
        fallbacks=[{"type": "L4", "gpusPerNode": 4}, {"type": "A100-80G", "gpusPerNode": 8}]
    )
    found = groups(body)
    assert list(found) == ["gpu-workers", "gpu-workers-l4", "gpu-workers-a100-80g"]
    preferred, l4, a100 = found.values()
    # The preferred group holds the minimum; fallbacks start empty, each up to the maximum.
    assert (preferred["minReplicas"], preferred["replicas"], preferred["maxReplicas"]) == (1, 1, 4)
    for group in (l4, a100):
        assert (group["minReplicas"], group["replicas"], group["maxReplicas"]) == (0, 0, 4)
    assert preferred["resources"] == {"GPU": "1", "accelerator_type:H100": "1"}
    assert l4["resources"] == {"GPU": "1", "accelerator_type:L4": "1"}
    selectors = [g["template"]["spec"]["nodeSelector"] for g in found.values()]
    assert selectors == [
        {"ray.io/accelerator-type": "H100"},
        {"ray.io/accelerator-type": "L4"},
        {"ray.io/accelerator-type": "A100-80G"},
    ]


def test_fallback_group_uses_its_own_resource_and_node_labels() -> None:
    body = fallback(
        fallbacks=[
            {
                "type": "AMD-Instinct-MI300X-OAM",
                "gpusPerNode": 8,
                "resourceName": "amd.com/gpu",
                "nodeSelector": {"pool": "mi300x"},
            }
        ]
    )
    group = groups(body)["gpu-workers-amd-instinct-mi300x-oam"]
    pod = group["template"]["spec"]
    (container,) = pod["containers"]
    assert container["resources"]["limits"]["amd.com/gpu"] == "1"
    assert "nvidia.com/gpu" not in container["resources"]["limits"]
    assert pod["nodeSelector"] == {"pool": "mi300x"}
    assert {"key": "amd.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod[
        "tolerations"
    ]


def test_serve_is_not_pinned_to_one_type_with_fallbacks() -> None:
    """Ray Serve LLM adds an accelerator_type:<type> share to every bundle of a config
    with accelerator_type: replicas could then never use a fallback group's pods."""
    config = llm_config(fallback())
    assert "accelerator_type" not in config
    assert config["placement_group_config"]["bundles"] == [{"GPU": 1}]
    without = llm_config(fallback(fallbacks=[]))
    assert without["accelerator_type"] == "H100"


def test_layout_must_fit_each_type_naming_the_entry() -> None:
    # TP 8 fills an H100 node; an L4 node has 4 GPUs.
    body = fallback()
    body["spec"]["engine"]["tensorParallelSize"] = 8
    messages = refusals(body)
    assert any(names_field(m, "spec.accelerator.fallbacks[0].gpusPerNode") for m in messages)
    assert any("L4" in m and "tensor-parallel group never spans nodes" in m for m in messages)


def test_same_pods_per_replica_on_every_type() -> None:
    # TP 2 x PP 4 = 8 GPUs: one H100 pod, but two L4 pods: one placement group cannot fit both.
    body = fallback()
    body["spec"]["engine"].update(tensorParallelSize=2, pipelineParallelSize=4)
    messages = refusals(body)
    (message,) = [
        m for m in messages if names_field(m, "spec.accelerator.fallbacks[0].gpusPerNode")
    ]
    assert "2 pod(s) of 4 GPU(s)" in message and "1 pod(s) of 8" in message


def test_memory_fit_per_type_naming_the_entry() -> None:
    # 30B at 16 bits: 56 GiB of weights fit one 80 GiB H100 (57.6 GiB budget) but not an L4.
    body = fallback(fallbacks=[{"type": "A100-80G"}, {"type": "L4", "gpusPerNode": 4}])
    body["spec"]["model"]["parametersBillions"] = 30
    with pytest.raises(SpecError) as caught:
        resolve(body)
    (error,) = caught.value.errors
    assert error.field == "spec.accelerator.fallbacks[1].type"
    assert error.message.startswith("L4: ") and "InsufficientGPUMemory" not in error.message
    assert "choose an accelerator with more memory" in error.message
    # The preferred H100 and the first fallback hold it.
    body["spec"]["accelerator"]["fallbacks"] = [{"type": "A100-80G"}]
    assert resolve(body).fallbacks[0].fit.fits is True


def test_each_type_once() -> None:
    assert_refused(fallback(fallbacks=[{"type": "H100"}]), "spec.accelerator.fallbacks")
    assert_refused(
        fallback(fallbacks=[{"type": "L4"}, {"type": "L4", "gpusPerNode": 4}]),
        "spec.accelerator.fallbacks",
    )


def test_group_names_differ_by_more_than_case() -> None:
    body = fallback(fallbacks=[{"type": "my-gpu"}, {"type": "My-GPU"}])
    body["spec"]["engine"] = {"type": "custom", "importPath": "app:build"}
    assert_refused(body, "spec.accelerator.fallbacks[1].type")


def test_fallback_types_are_rays_with_engine_vllm() -> None:
    assert_refused(fallback(fallbacks=[{"type": "TPU-v9"}]), "spec.accelerator.fallbacks")


def test_not_with_disaggregation() -> None:
    body = load_one(SAMPLES / "prefill-decode.yaml")
    body["spec"]["accelerator"]["fallbacks"] = [{"type": "A10G", "gpusPerNode": 4}]
    assert_refused(body, "spec.accelerator.fallbacks")


def test_gpu_of_a_fallback_type_is_not_typed_in_worker_resources() -> None:
    body = fallback(fallbacks=[{"type": "L4", "gpusPerNode": 4, "resourceName": "gpu.example/l4"}])
    body["spec"]["rayCluster"] = {"worker": {"resources": {"limits": {"gpu.example/l4": 1}}}}
    assert_refused(body, "spec.rayCluster.worker.resources.limits")


def test_plan_reports_each_type(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "-f", str(SAMPLES / "gpu-fallback.yaml")]) == 0
    out = capsys.readouterr().out
    assert "accelerator:        H100, 8 GPUs per node" in out
    (line,) = [line for line in out.splitlines() if line.strip().startswith("fallback 1:")]
    assert "L4, 4 GPUs per node; worker group gpu-workers-l4 0..4 of 1 pod(s) x 1 GPU(s)" in line
    assert "memory fit: fits:" in line and "L4 gives 21.6 GiB per GPU" in line
    assert "not pinned" in out


def test_rays_serve_models_accept_the_unpinned_config() -> None:
    require_or_skip("ray", "Ray's Serve models check the rendered config")
    from llm_operator import raycheck

    assert raycheck.serve_config_errors(serve_config(resolve(fallback()))) == []
