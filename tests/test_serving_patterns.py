"""Serving patterns of a plan: request routing, LoRA adapters, shared GPUs.

Each pattern is a field of the resolved plan; render reads it from there. Without the
spec section the plan holds Ray's default and the render is unchanged.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from conftest import SAMPLES, assert_refused, llm_config, load_one, refusals
from llm_operator.api.plan import PREFIX_CACHE_AFFINITY_ROUTER
from llm_operator.api.validation import resolve
from llm_operator.render import render
from llm_operator.render.serve import serve_config


def quickstart(**spec: Any) -> dict[str, Any]:
    body = load_one(SAMPLES / "quickstart.yaml")
    body["spec"].update(spec)
    return body


def plan_output(capsys: pytest.CaptureFixture[str], sample: str) -> str:
    """What `llm-operator plan` prints for a sample."""
    from llm_operator.cli import main

    assert main(["plan", "-f", str(SAMPLES / sample)]) == 0
    return capsys.readouterr().out


# --- routing ----------------------------------------------------------------------------


def test_no_routing_keeps_serves_default_router() -> None:
    assert resolve(quickstart()).router is None
    assert "request_router_config" not in llm_config(quickstart())["deployment_config"]


def test_power_of_two_choices_renders_nothing_new() -> None:
    """Serve's default router is power of two choices: naming it changes no byte."""
    explicit = quickstart(routing={"policy": "PowerOfTwoChoices"})
    assert render(resolve(explicit)) == render(resolve(quickstart()))


def test_prefix_cache_affinity_with_its_kwargs() -> None:
    body = quickstart(
        routing={
            "policy": "PrefixCacheAffinity",
            "prefixCacheAffinity": {"imbalancedThreshold": 8, "matchRateThreshold": 0.25},
        }
    )
    deployment = llm_config(body)["deployment_config"]
    assert deployment["num_replicas"] == 1
    assert deployment["request_router_config"] == {
        "request_router_class": PREFIX_CACHE_AFFINITY_ROUTER,
        "request_router_kwargs": {"imbalanced_threshold": 8, "match_rate_threshold": 0.25},
    }


def test_prefix_cache_affinity_without_options_leaves_rays_defaults() -> None:
    config = llm_config(quickstart(routing={"policy": "PrefixCacheAffinity"}))
    assert config["deployment_config"]["request_router_config"] == {
        "request_router_class": PREFIX_CACHE_AFFINITY_ROUTER
    }


def test_router_rides_with_autoscaling() -> None:
    body = quickstart(routing={"policy": "PrefixCacheAffinity"})
    del body["spec"]["replicas"]
    body["spec"]["autoscaling"] = {"minReplicas": 1, "maxReplicas": 3}
    deployment = llm_config(body)["deployment_config"]
    assert deployment["autoscaling_config"]["max_replicas"] == 3
    assert "request_router_config" in deployment


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"routing": {"policy": "Random"}}, "spec.routing.policy"),
        (
            {"routing": {"prefixCacheAffinity": {"matchRateThreshold": 0.5}}},
            "spec.routing.prefixCacheAffinity",
        ),
        (
            {
                "routing": {
                    "policy": "PrefixCacheAffinity",
                    "prefixCacheAffinity": {"matchRateThreshold": 2},
                }
            },
            "spec.routing.prefixCacheAffinity.matchRateThreshold",
        ),
        ({"mode": "Cluster", "routing": {"policy": "PrefixCacheAffinity"}}, "spec.routing"),
        (
            {
                "engine": {"type": "custom", "importPath": "app.main:app"},
                "routing": {"policy": "PrefixCacheAffinity"},
            },
            "spec.routing",
        ),
    ],
)
def test_routing_refusals_name_the_field(spec: dict[str, Any], field: str) -> None:
    assert_refused(quickstart(**spec), field)


def test_plan_command_names_the_router(capsys: pytest.CaptureFixture[str]) -> None:
    out = plan_output(capsys, "prefix-cache-routing.yaml")
    assert f"routing:            {PREFIX_CACHE_AFFINITY_ROUTER}" in out
    assert "imbalanced_threshold=8, match_rate_threshold=0.2" in out


def test_serve_config_is_yaml_safe() -> None:
    body = quickstart(routing={"policy": "PrefixCacheAffinity"})
    text = yaml.safe_dump(serve_config(resolve(body)))
    assert "PrefixCacheAffinityRouter" in text


# --- LoRA -------------------------------------------------------------------------------

LORA = {"source": "gs://acme-adapters/qwen"}


def test_lora_defaults_render_lora_config_and_engine_switches() -> None:
    config = llm_config(quickstart(lora=LORA))
    assert config["lora_config"] == {
        "dynamic_lora_loading_path": "gs://acme-adapters/qwen",
        "max_num_adapters_per_replica": 16,
    }
    assert config["engine_kwargs"]["enable_lora"] is True
    assert config["engine_kwargs"]["max_lora_rank"] == 64


def test_no_lora_renders_no_lora() -> None:
    config = llm_config(quickstart())
    assert "lora_config" not in config
    assert "enable_lora" not in config["engine_kwargs"]


def test_lora_engine_args_are_free_without_spec_lora() -> None:
    """Only spec.lora owns the LoRA switches; without it they stay plain engine args."""
    body = quickstart(engine={"args": {"enable_lora": True}})
    assert llm_config(body)["engine_kwargs"]["enable_lora"] is True


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"lora": {"source": "pvc://adapters/qwen"}}, "spec.lora.source"),
        ({"lora": {"source": "hf://acme/adapters"}}, "spec.lora.source"),
        ({"lora": {"source": "s3://ab"}}, "spec.lora.source"),
        ({"lora": {**LORA, "maxRank": 1024}}, "spec.lora.maxRank"),
        ({"lora": {**LORA, "maxAdaptersPerReplica": 0}}, "spec.lora.maxAdaptersPerReplica"),
        ({"mode": "Cluster", "lora": LORA}, "spec.lora"),
        (
            {"lora": LORA, "engine": {"args": {"enable_lora": False}}},
            "spec.engine.args.enable_lora",
        ),
    ],
)
def test_lora_refusals_name_the_field(spec: dict[str, Any], field: str) -> None:
    assert_refused(quickstart(**spec), field)


def test_lora_refuses_a_base_model_id_with_a_colon() -> None:
    body = quickstart(lora=LORA)
    body["spec"]["model"]["name"] = "qwen:small"
    assert_refused(body, "spec.model.name")


def test_plan_command_explains_adapter_ids(capsys: pytest.CaptureFixture[str]) -> None:
    out = plan_output(capsys, "lora-adapters.yaml")
    assert "as model llama-3.1-8b-instruct:<adapter>; up to 8 per replica, rank <= 32" in out


# --- shared GPUs ------------------------------------------------------------------------


def shared(fraction: float, utilization: float, **spec: Any) -> dict[str, Any]:
    body = quickstart(**spec)
    body["spec"]["accelerator"]["gpuFraction"] = fraction
    body["spec"].setdefault("engine", {})["gpuMemoryUtilization"] = utilization
    return body


def worker_group(body: dict[str, Any]) -> dict[str, Any]:
    (service,) = [c for c in render(resolve(body)) if c["kind"] == "RayService"]
    group: dict[str, Any] = service["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]
    return group


@pytest.mark.parametrize(
    ("fraction", "min_replicas", "max_replicas", "pods"),
    [(0.5, 1, 3, (1, 2)), (0.25, 2, 6, (1, 2)), (0.3, 0, 7, (0, 3)), (0.1, 10, 10, (1, 1))],
)
def test_shared_gpu_bundles_and_worker_bounds(
    fraction: float, min_replicas: int, max_replicas: int, pods: tuple[int, int]
) -> None:
    body = shared(fraction, fraction)
    del body["spec"]["replicas"]
    body["spec"]["autoscaling"] = {"minReplicas": min_replicas, "maxReplicas": max_replicas}
    config = llm_config(body)
    assert config["placement_group_config"]["bundles"] == [{"GPU": fraction}]
    group = worker_group(body)
    assert (group["minReplicas"], group["maxReplicas"]) == pods
    assert group["replicas"] == pods[0]
    # Worker pods keep whole GPUs: Ray packs the fractional bundles onto them.
    assert group["resources"]["GPU"] == "1"
    assert group["numOfHosts"] == 1
    limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == "1"
    plan = resolve(body)
    assert (plan.gpus_at_min, plan.gpus_at_max) == pods


def test_shared_gpu_memory_fit_uses_the_share() -> None:
    body = shared(0.25, 0.25)
    body["spec"]["model"]["parametersBillions"] = 8  # 14.9 GiB of weights > 1/4 of an L4
    messages = refusals(body)
    assert any("0.25 share of the GPU" in m for m in messages), messages
    assert resolve(shared(0.5, 0.5)).fit.fits is True


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (shared(0.25, 0.9), "spec.engine.gpuMemoryUtilization"),
        (shared(0.5, 0.5, engine={"tensorParallelSize": 2}), "spec.accelerator.gpuFraction"),
        (shared(0.5, 0.5, engine={"pipelineParallelSize": 2}), "spec.accelerator.gpuFraction"),
        (shared(0.5, 0.5, mode="Cluster"), "spec.accelerator.gpuFraction"),
        (shared(1.0, 0.5), "spec.accelerator.gpuFraction"),
        (shared(0.001, 0.001), "spec.accelerator.gpuFraction"),
    ],
)
def test_shared_gpu_refusals_name_the_field(body: dict[str, Any], field: str) -> None:
    assert_refused(body, field)


def test_plan_command_shows_the_share(capsys: pytest.CaptureFixture[str]) -> None:
    out = plan_output(capsys, "shared-gpu.yaml")
    assert "GPUs per replica:   0.25 (shared: 4 replicas per GPU worker pod)" in out
    assert "GPUs at max:        2" in out
    assert "worker pods at max: 2" in out


def test_status_counts_up_to_the_shared_replicas_of_ready_pods() -> None:
    from llm_operator.controller import status

    body = shared(0.25, 0.25)
    del body["spec"]["replicas"]
    body["spec"]["autoscaling"] = {"minReplicas": 2, "maxReplicas": 6}
    plan = resolve(body)
    workers = {"availableWorkerReplicas": 2, "readyWorkerReplicas": 2}
    live = {
        "kind": "RayService",
        "metadata": {"name": "qwen-small", "generation": 1},
        "status": {
            "observedGeneration": 1,
            "conditions": [{"type": "Ready", "status": "True", "reason": "Ready"}],
            "activeServiceStatus": {"rayClusterName": "c", "rayClusterStatus": workers},
        },
    }
    # Two Ready pods hold up to eight quarter-GPU replicas; the spec allows six.
    assert status.observe(plan, live).ready_replicas == 6


# --- data parallel ----------------------------------------------------------------------


def data_parallel(dp: int, tp: int = 1, per_node: int = 4, **spec: Any) -> dict[str, Any]:
    body = quickstart(**spec)
    body["spec"]["engine"] = {"tensorParallelSize": tp, "dataParallelSize": dp}
    body["spec"]["accelerator"]["gpusPerNode"] = per_node
    return body


def test_data_parallel_renders_rays_dp_builder() -> None:
    body = data_parallel(4, tp=2, per_node=8)
    app = serve_config(resolve(body))["applications"][0]
    assert app["import_path"] == "ray.serve.llm:build_dp_openai_app"
    assert list(app["args"]) == ["llm_config"]
    config = app["args"]["llm_config"]
    assert config["engine_kwargs"]["data_parallel_size"] == 4
    # Placement is per rank (one Serve replica): its TP x PP bundles.
    assert config["placement_group_config"]["bundles"] == [{"GPU": 1}, {"GPU": 1}]
    # Serve's replicas are data-parallel groups; Ray multiplies them by the DP size.
    assert config["deployment_config"] == {"num_replicas": 1}


@pytest.mark.parametrize(
    ("engine", "per_node", "expected"),
    [
        # (hosts per replica, GPUs per pod, per-rank strategy)
        ({"tensorParallelSize": 2, "dataParallelSize": 4}, 8, (1, 8, "STRICT_PACK")),
        ({"tensorParallelSize": 2, "dataParallelSize": 4}, 4, (2, 4, "STRICT_PACK")),
        ({"dataParallelSize": 2}, 1, (2, 1, "STRICT_PACK")),
        # A rank of TP 2 x PP 2 spans two 2-GPU pods.
        (
            {"tensorParallelSize": 2, "pipelineParallelSize": 2, "dataParallelSize": 2},
            2,
            (4, 2, "PACK"),
        ),
    ],
)
def test_data_parallel_worker_pods_hold_whole_tensor_groups(
    engine: dict[str, int], per_node: int, expected: tuple[int, int, str]
) -> None:
    body = quickstart(engine=engine)
    body["spec"]["accelerator"]["gpusPerNode"] = per_node
    group = worker_group(body)
    config = llm_config_of_dp(body)
    got = (
        group["numOfHosts"],
        int(group["resources"]["GPU"]),
        config["placement_group_config"]["strategy"],
    )
    assert got == expected
    gpus = engine.get("tensorParallelSize", 1) * engine.get("pipelineParallelSize", 1)
    assert len(config["placement_group_config"]["bundles"]) == gpus
    assert resolve(body).gpus_at_max == gpus * engine["dataParallelSize"]


def llm_config_of_dp(body: dict[str, Any]) -> dict[str, Any]:
    config: dict[str, Any] = serve_config(resolve(body))["applications"][0]["args"]["llm_config"]
    return config


def test_data_parallel_autoscaling_bounds_count_groups() -> None:
    body = data_parallel(2, tp=2, per_node=4)
    del body["spec"]["replicas"]
    body["spec"]["autoscaling"] = {"minReplicas": 1, "maxReplicas": 3}
    group = worker_group(body)
    assert (group["minReplicas"], group["maxReplicas"], group["numOfHosts"]) == (1, 3, 1)
    autoscaling = llm_config_of_dp(body)["deployment_config"]["autoscaling_config"]
    assert (autoscaling["min_replicas"], autoscaling["max_replicas"]) == (1, 3)


def test_data_parallel_one_renders_the_plain_openai_app() -> None:
    body = data_parallel(1)
    app = serve_config(resolve(body))["applications"][0]
    assert app["import_path"] == "ray.serve.llm:build_openai_app"
    assert "data_parallel_size" not in app["args"]["llm_configs"][0]["engine_kwargs"]


def test_data_parallel_fit_is_per_rank() -> None:
    """Every rank holds the whole model over its TP x PP GPUs."""
    body = data_parallel(4, tp=1, per_node=4)
    body["spec"]["model"]["parametersBillions"] = 8
    fit = resolve(body).fit
    assert fit.weights_gib_per_gpu is not None and fit.weights_gib_per_gpu > 14


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (data_parallel(3, tp=2, per_node=4), "spec.engine.dataParallelSize"),
        (data_parallel(0), "spec.engine.dataParallelSize"),
        (data_parallel(2, mode="Cluster"), "spec.engine.dataParallelSize"),
        (data_parallel(2, tp=4, per_node=2), "spec.engine.tensorParallelSize"),
    ],
)
def test_data_parallel_refusals_name_the_field(body: dict[str, Any], field: str) -> None:
    assert_refused(body, field)


def test_plan_command_explains_the_ranks(capsys: pytest.CaptureFixture[str]) -> None:
    out = plan_output(capsys, "data-parallel.yaml")
    assert "parallelism:        tensor 2 x pipeline 1 x data 4" in out
    assert "each replica is 4 gang-scheduled ranks of 2 GPU(s)" in out
