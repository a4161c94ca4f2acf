"""Prefill/decode disaggregation: two roles of the plan, each with its own engines,
worker group and GPU arithmetic, served by Ray Serve LLM's build_pd_openai_app."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from conftest import SAMPLES, groups, load_one, refusals, require_or_skip
from llm_operator.api.plan import PREFILL_DECODE_APP
from llm_operator.api.validation import names_field, resolve
from llm_operator.render import render
from llm_operator.render.serve import serve_config


def pd(**spec: Any) -> dict[str, Any]:
    """The prefill-decode sample (prefill TP 1 x 2, decode TP 2 x 1, 4-GPU L4 nodes) with
    `spec` keys replaced."""
    body = load_one(SAMPLES / "prefill-decode.yaml")
    body["spec"].update(spec)
    return body


def with_roles(prefill: dict[str, Any], decode: dict[str, Any], **spec: Any) -> dict[str, Any]:
    body = pd(**spec)
    body["spec"]["disaggregation"]["prefill"] = prefill
    body["spec"]["disaggregation"]["decode"] = decode
    return body


def app(body: dict[str, Any]) -> dict[str, Any]:
    application: dict[str, Any] = serve_config(resolve(body))["applications"][0]
    return application


def test_renders_rays_pd_builder_with_a_config_per_side() -> None:
    application = app(pd())
    assert application["import_path"] == PREFILL_DECODE_APP == "ray.serve.llm:build_pd_openai_app"
    assert list(application["args"]) == ["prefill_config", "decode_config"]
    prefill, decode = application["args"]["prefill_config"], application["args"]["decode_config"]
    # PDServingArgs refuses two model ids and a side without kv_transfer_config.
    assert prefill["model_loading_config"] == decode["model_loading_config"]
    for config in (prefill, decode):
        assert config["engine_kwargs"]["kv_transfer_config"] == {
            "kv_connector": "NixlConnector",
            "kv_role": "kv_both",
        }
    assert prefill["engine_kwargs"]["tensor_parallel_size"] == 1
    assert decode["engine_kwargs"]["tensor_parallel_size"] == 2
    assert prefill["deployment_config"] == {"num_replicas": 2}
    assert decode["deployment_config"] == {"num_replicas": 1}


def test_each_side_is_placed_on_its_own_worker_group() -> None:
    """A side's bundles ask for a resource only its group's pods advertise, one unit per
    GPU: Ray places prefill engines on prefill-workers only, and the Ray autoscaler scales
    the group of the side that needs room."""
    args = app(pd())["args"]
    assert args["prefill_config"]["placement_group_config"] == {
        "bundles": [{"GPU": 1, "prefill-workers": 1}],
        "strategy": "STRICT_PACK",
    }
    assert args["decode_config"]["placement_group_config"]["bundles"] == [
        {"GPU": 1, "decode-workers": 1},
        {"GPU": 1, "decode-workers": 1},
    ]
    found = groups(pd())
    assert list(found) == ["prefill-workers", "decode-workers"]
    prefill, decode = found["prefill-workers"], found["decode-workers"]
    assert prefill["resources"] == {"GPU": "1", "accelerator_type:L4": "1", "prefill-workers": "1"}
    assert decode["resources"] == {"GPU": "2", "accelerator_type:L4": "1", "decode-workers": "2"}
    assert (prefill["replicas"], prefill["minReplicas"], prefill["maxReplicas"]) == (2, 2, 2)
    assert (decode["replicas"], decode["minReplicas"], decode["maxReplicas"]) == (1, 1, 1)
    for group, gpus in ((prefill, "1"), (decode, "2")):
        limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
        assert limits["nvidia.com/gpu"] == gpus
        assert group["template"]["spec"]["nodeSelector"] == {"ray.io/accelerator-type": "L4"}


def test_the_whole_model_keeps_its_one_group_and_plain_bundles() -> None:
    body = load_one(SAMPLES / "quickstart.yaml")
    (service,) = [c for c in render(resolve(body)) if c["kind"] == "RayService"]
    (group,) = service["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    assert group["groupName"] == "gpu-workers"
    assert set(group["resources"]) == {"GPU", "accelerator_type:L4"}


@pytest.mark.parametrize(
    ("prefill", "decode", "per_node", "expected"),
    [
        # (prefill pods min..max, decode pods min..max, numOfHosts per side, GPUs min, max)
        ({"replicas": 3}, {"replicas": 1}, 4, ((3, 3), (1, 1), (1, 1), 4, 4)),
        (
            {"autoscaling": {"minReplicas": 1, "maxReplicas": 4}},
            {"tensorParallelSize": 4, "autoscaling": {"minReplicas": 1, "maxReplicas": 2}},
            4,
            ((1, 4), (1, 2), (1, 1), 5, 12),
        ),
        # Pipeline stages (spec.engine) apply to both sides: TP 2 x PP 2 on 2-GPU nodes
        # spans two pods per engine.
        ({"tensorParallelSize": 2}, {"tensorParallelSize": 2}, 2, ((1, 1), (1, 1), (2, 2), 8, 8)),
    ],
)
def test_each_side_is_sized_and_bounded_from_its_own_role(
    prefill: dict[str, Any],
    decode: dict[str, Any],
    per_node: int,
    expected: tuple[tuple[int, int], tuple[int, int], tuple[int, int], int, int],
) -> None:
    body = with_roles(prefill, decode)
    body["spec"]["accelerator"]["gpusPerNode"] = per_node
    if per_node == 2:
        body["spec"]["engine"]["pipelineParallelSize"] = 2
    found = groups(body)
    p, d = found["prefill-workers"], found["decode-workers"]
    got = (
        (p["minReplicas"], p["maxReplicas"]),
        (d["minReplicas"], d["maxReplicas"]),
        (p["numOfHosts"], d["numOfHosts"]),
    )
    plan = resolve(body)
    assert (*got, plan.gpus_at_min, plan.gpus_at_max) == expected


def test_side_autoscaling_goes_to_its_deployment_config() -> None:
    body = with_roles(
        {"autoscaling": {"minReplicas": 1, "maxReplicas": 4, "targetOngoingRequests": 8}},
        {"replicas": 2},
    )
    args = app(body)["args"]
    assert args["prefill_config"]["deployment_config"] == {
        "autoscaling_config": {"min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 8},
        "max_ongoing_requests": 64,
    }
    assert args["decode_config"]["deployment_config"] == {"num_replicas": 2}


def test_side_tensor_parallelism_defaults_to_the_engines() -> None:
    body = with_roles({}, {})
    body["spec"]["engine"]["tensorParallelSize"] = 2
    args = app(body)["args"]
    assert args["prefill_config"]["engine_kwargs"]["tensor_parallel_size"] == 2
    assert args["decode_config"]["engine_kwargs"]["tensor_parallel_size"] == 2
    # A side without replicas or autoscaling runs one engine.
    assert resolve(body).min_replicas == 2


def test_lmcache_connector() -> None:
    body = pd()
    body["spec"]["disaggregation"]["kvConnector"] = "LMCacheConnectorV1"
    for config in app(body)["args"].values():
        assert config["engine_kwargs"]["kv_transfer_config"]["kv_connector"] == (
            "LMCacheConnectorV1"
        )


def test_lora_and_routing_apply_to_both_sides() -> None:
    """PDServingArgs wants the same LoRA path on both sides; each side is an LLM server
    deployment with its own request router."""
    body = pd(
        lora={"source": "s3://acme-adapters/qwen"},
        routing={"policy": "PrefixCacheAffinity"},
    )
    for config in app(body)["args"].values():
        assert config["lora_config"]["dynamic_lora_loading_path"] == "s3://acme-adapters/qwen"
        assert config["engine_kwargs"]["enable_lora"] is True
        assert "request_router_config" in config["deployment_config"]


def test_fit_is_checked_per_side_and_names_its_field() -> None:
    """Both sides hold the whole weights: a 1-GPU prefill engine of a 14B model does not
    fit an L4, while the 2-GPU decode engine would."""
    body = pd()
    body["spec"]["model"]["parametersBillions"] = 14
    messages = refusals(body)
    assert any(names_field(m, "spec.disaggregation.prefill.tensorParallelSize") for m in messages)
    body["spec"]["disaggregation"]["prefill"]["tensorParallelSize"] = 2
    assert resolve(body).fit.fits is True


def _without(body: dict[str, Any], *path: str) -> dict[str, Any]:
    out = copy.deepcopy(body)
    node = out
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]
    return out


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (pd(replicas=2), "spec.disaggregation"),
        (pd(autoscaling={"minReplicas": 1, "maxReplicas": 2}), "spec.disaggregation"),
        (pd(mode="Cluster"), "spec.disaggregation"),
        (
            pd(engine={"type": "custom", "importPath": "my_app.serve:app"}),
            "spec.disaggregation",
        ),
        (
            with_roles({"replicas": 1, "autoscaling": {"maxReplicas": 2}}, {}),
            "spec.disaggregation.prefill.replicas",
        ),
        (
            with_roles({}, {"tensorParallelSize": 8}),
            "spec.disaggregation.decode.tensorParallelSize",
        ),
        (with_roles({"replicas": 0}, {}), "spec.disaggregation.prefill.replicas"),
        (pd(engine={"dataParallelSize": 2}), "spec.engine.dataParallelSize"),
        (
            pd(engine={"args": {"kv_transfer_config": {"kv_connector": "P2pNcclConnector"}}}),
            "spec.engine.args.kv_transfer_config",
        ),
        (
            pd(disaggregation={"kvConnector": "MooncakeConnector"}),
            "spec.disaggregation.kvConnector",
        ),
        # Three stages of TP 2 cannot split into identical 4-GPU pods.
        (pd(engine={"pipelineParallelSize": 3}), "spec.engine.pipelineParallelSize"),
    ],
    ids=[
        "replicas",
        "autoscaling",
        "cluster-mode",
        "custom-engine",
        "role-replicas-and-autoscaling",
        "role-tp-above-node",
        "role-replicas-zero",
        "data-parallel",
        "kv-transfer-in-engine-args",
        "unknown-connector",
        "uneven-pipeline",
    ],
)
def test_refusals_name_the_field(body: dict[str, Any], field: str) -> None:
    messages = refusals(body)
    assert any(names_field(m, field) for m in messages), messages


def test_gpu_fraction_is_refused() -> None:
    body = pd()
    body["spec"]["accelerator"]["gpuFraction"] = 0.5
    body["spec"]["engine"]["gpuMemoryUtilization"] = 0.5
    body["spec"]["disaggregation"]["decode"]["tensorParallelSize"] = 1
    messages = refusals(body)
    assert any(names_field(m, "spec.accelerator.gpuFraction") for m in messages), messages


def test_plan_command_prints_each_side(capsys: pytest.CaptureFixture[str]) -> None:
    from llm_operator.cli import main

    assert main(["plan", "-f", str(SAMPLES / "prefill-decode.yaml")]) == 0
    out = capsys.readouterr().out
    assert "KV cache from prefill to decode over NixlConnector (kv_role kv_both)" in out
    assert (
        "  prefill:            tensor 1 x pipeline 1 = 1 GPU(s) per engine on 1 pod(s) of 1 "
        "GPU(s); engines (fixed) min 2, max 2; worker group prefill-workers 2..2; GPUs 2..2"
    ) in out
    assert (
        "  decode:             tensor 2 x pipeline 1 = 2 GPU(s) per engine on 1 pod(s) of 2 "
        "GPU(s); engines (fixed) min 1, max 1; worker group decode-workers 1..1; GPUs 2..2"
    ) in out
    assert "GPUs at min:        4" in out
    assert "worker pods at max: 3" in out


def test_status_counts_both_sides() -> None:
    from llm_operator.controller import status

    plan = resolve(pd())
    observed = status.observe(plan, None)
    out = status.reconciled_status(plan, observed, {}, "2026-01-01T00:00:00Z")
    # One prefill engine plus one decode engine; three engines wanted in all.
    assert out["gpusPerReplica"] == 3
    assert out["replicas"]["desired"] == 3


# --- Ray's own models -------------------------------------------------------------------


def test_ray_accepts_the_pd_app_and_catches_a_side_without_kv_transfer() -> None:
    require_or_skip("ray", "the `ray` extra provides Ray's schema models")
    from llm_operator import raycheck

    config = serve_config(resolve(pd()))
    assert raycheck.serve_config_errors(config) == []
    broken = copy.deepcopy(config)
    del broken["applications"][0]["args"]["decode_config"]["engine_kwargs"]["kv_transfer_config"]
    errors = raycheck.serve_config_errors(broken)
    assert any("PDServingArgs" in e and "kv_transfer_config" in e for e in errors), errors
    broken = copy.deepcopy(config)
    broken["applications"][0]["args"]["prefill_config"]["model_loading_config"]["model_id"] = "x"
    errors = raycheck.serve_config_errors(broken)
    assert any("model id mismatch" in e for e in errors), errors
    broken = copy.deepcopy(config)
    broken["applications"][0]["args"]["llm_configs"] = []
    errors = raycheck.serve_config_errors(broken)
    assert any("PDServingArgs" in e and "llm_configs" in e for e in errors), errors


def test_the_restated_pd_rules_are_all_of_rays() -> None:
    """raycheck restates PDServingArgs' validators (importing it needs vLLM); a validator
    Ray adds or renames shows up here."""
    require_or_skip("ray", "the `ray` extra provides Ray's schema models")
    from llm_operator import raycheck

    assert raycheck.pd_validator_names() == raycheck.PD_VALIDATORS


# --- admission: the CRD's schema and CEL rules ------------------------------------------


def _spec_schema() -> dict[str, Any]:
    from llm_operator.api.crd import build_crd

    (version,) = build_crd()["spec"]["versions"]
    spec: dict[str, Any] = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    return spec


def test_the_crd_carries_the_rules_as_the_api_server_reads_them() -> None:
    """Written out by hand: what the API server evaluates at `.spec`."""
    rules_at_spec = {v["rule"] for v in _spec_schema()["x-kubernetes-validations"]}
    expected = {
        "!has(self.disaggregation) || (self.mode == 'Service' && self.engine.type == 'vllm')",
        "!has(self.disaggregation) || !(has(self.replicas) || has(self.autoscaling))",
        "!has(self.disaggregation) || !has(self.accelerator.gpuFraction)",
        "!has(self.disaggregation) || self.engine.dataParallelSize == 1",
        "!has(self.disaggregation) || !(has(self.disaggregation.decode.replicas) && "
        "has(self.disaggregation.decode.autoscaling))",
        "!has(self.disaggregation) || !has(self.disaggregation.prefill.tensorParallelSize) || "
        "self.disaggregation.prefill.tensorParallelSize <= self.accelerator.gpusPerNode",
    }
    assert expected <= rules_at_spec, expected - rules_at_spec


def test_the_sides_default_to_empty_objects() -> None:
    """The API server fills in `prefill: {}` and `decode: {}` before the rules run, so a
    rule reading `self.disaggregation.prefill.replicas` never meets a missing side."""
    fields = _spec_schema()["properties"]["disaggregation"]["properties"]
    assert fields["prefill"]["default"] == {} and fields["decode"]["default"] == {}
    assert fields["kvConnector"]["enum"] == ["NixlConnector", "LMCacheConnectorV1"]
    assert fields["kvConnector"]["default"] == "NixlConnector"
    assert fields["prefill"]["properties"]["replicas"]["minimum"] == 1
