"""The Serve application (serveConfigV2) of a RayService."""

from __future__ import annotations

import yaml

from llm_operator.api.models import LLMDeploymentSpec
from llm_operator.api.plan import LoraAdapters, Plan, RequestRouter
from llm_operator.render import names
from llm_operator.render.sources import model_source
from llm_operator.sizing import GpuLayout
from llm_operator.yamlio import Manifest

OPENAI_APP = "ray.serve.llm:build_openai_app"


def engine_kwargs(plan: Plan) -> Manifest:
    llmd = plan.llmd
    engine = llmd.spec.engine
    kwargs: Manifest = {
        "tensor_parallel_size": engine.tensor_parallel_size,
        "pipeline_parallel_size": engine.pipeline_parallel_size,
        "dtype": engine.dtype,
        "gpu_memory_utilization": engine.gpu_memory_utilization,
    }
    if engine.max_model_len is not None:
        kwargs["max_model_len"] = engine.max_model_len
    if llmd.spec.model.revision is not None and model_source(llmd).scheme == "hf":
        kwargs["revision"] = llmd.spec.model.revision
    if plan.lora is not None:
        # Ray downloads adapters and hands them to vLLM, which serves them only when on.
        kwargs["enable_lora"] = True
        kwargs["max_lora_rank"] = plan.lora.max_rank
    kwargs.update(engine.args)
    return kwargs


def placement_group_config(layout: GpuLayout) -> Manifest:
    """One GPU bundle per engine worker (a fraction of a GPU when replicas share one); one
    replica packs onto one pod unless multi-host."""
    return {
        "bundles": [{"GPU": layout.gpus_per_bundle} for _ in range(layout.gpus_per_replica)],
        "strategy": "PACK" if layout.multi_host else "STRICT_PACK",
    }


def replica_config(spec: LLMDeploymentSpec) -> Manifest:
    autoscaling = spec.autoscaling
    if autoscaling is None:
        return {"num_replicas": spec.min_replicas}
    return {
        "autoscaling_config": {
            "min_replicas": autoscaling.min_replicas,
            "max_replicas": autoscaling.max_replicas,
            "target_ongoing_requests": autoscaling.target_ongoing_requests,
        },
        "max_ongoing_requests": autoscaling.max_ongoing_requests,
    }


def request_router_config(router: RequestRouter) -> Manifest:
    """Serve's `RequestRouterConfig`: the class by import path, its `initialize_state`
    keyword arguments."""
    config: Manifest = {"request_router_class": router.class_path}
    if router.kwargs:
        config["request_router_kwargs"] = dict(router.kwargs)
    return config


def deployment_config(plan: Plan) -> Manifest:
    """The LLM server deployment's options: replicas, then the router when not Serve's
    default."""
    config = replica_config(plan.llmd.spec)
    if plan.router is not None:
        config["request_router_config"] = request_router_config(plan.router)
    return config


def llm_config(plan: Plan) -> Manifest:
    """One Ray Serve LLM `LLMConfig` whose placement matches the worker pods."""
    llmd = plan.llmd
    spec = llmd.spec
    return {
        "model_loading_config": {
            "model_id": llmd.served_model_id,
            "model_source": model_source(llmd).model_source,
        },
        "accelerator_type": plan.accelerator.type,
        "engine_kwargs": engine_kwargs(plan),
        "placement_group_config": placement_group_config(plan.layout),
        "deployment_config": deployment_config(plan),
        "log_engine_metrics": spec.monitoring.prometheus,
        **lora_config(plan.lora),
    }


def lora_config(lora: LoraAdapters | None) -> Manifest:
    """`lora_config` of the LLMConfig, when adapters are served: Ray multiplexes them,
    each replica holding at most `max_num_adapters_per_replica`."""
    if lora is None:
        return {}
    return {
        "lora_config": {
            "dynamic_lora_loading_path": lora.path,
            "max_num_adapters_per_replica": lora.max_per_replica,
        }
    }


def serve_application(plan: Plan) -> Manifest:
    engine = plan.llmd.spec.engine
    app: Manifest = {"name": names.SERVE_APP, "route_prefix": "/"}
    if engine.type == "custom":
        app["import_path"] = engine.import_path
        app["args"] = dict(engine.args)
    else:
        app["import_path"] = OPENAI_APP
        app["args"] = {"llm_configs": [llm_config(plan)]}
    return app


def serve_config(plan: Plan) -> Manifest:
    return {"applications": [serve_application(plan)]}


def serve_config_yaml(plan: Plan) -> str:
    """serveConfigV2 is a YAML string inside the RayService."""
    return yaml.safe_dump(serve_config(plan), sort_keys=False)
