"""The Serve application (serveConfigV2) of a RayService."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import yaml

from llm_operator.api.models import LLMDeployment
from llm_operator.api.plan import (
    DATA_PARALLEL_APP,
    OPENAI_APP,
    PREFILL_DECODE_APP,
    GpuRole,
    KvTransfer,
    LoraAdapters,
    Plan,
    RequestRouter,
)
from llm_operator.render import names
from llm_operator.render.sources import model_source, prefetch_of, serving_source
from llm_operator.sizing import GpuLayout
from llm_operator.yamlio import Manifest


def _openai_args(plan: Plan) -> Manifest:
    return {"llm_configs": [llm_config(plan, plan.role(None))]}


def _data_parallel_args(plan: Plan) -> Manifest:
    return {"llm_config": llm_config(plan, plan.role(None))}


def _prefill_decode_args(plan: Plan) -> Manifest:
    return {
        "prefill_config": llm_config(plan, plan.role("prefill")),
        "decode_config": llm_config(plan, plan.role("decode")),
    }


# The builder's arguments holding the LLMConfigs: a list for the OpenAI app, the one
# config for the data-parallel app, one per side for the prefill/decode app (Ray's
# LLMServingArgs, DPOpenAiServingArgs and PDServingArgs).
BUILDER_ARGS: dict[str, Callable[[Plan], Manifest]] = {
    OPENAI_APP: _openai_args,
    DATA_PARALLEL_APP: _data_parallel_args,
    PREFILL_DECODE_APP: _prefill_decode_args,
}


def kv_transfer_config(kv: KvTransfer) -> Manifest:
    """vLLM's `kv_transfer_config`, which Ray's PDServingArgs requires on both sides and
    whose `kv_connector` picks Ray's connector backend (NixlConnector, LMCacheConnectorV1)."""
    return {"kv_connector": kv.connector, "kv_role": kv.role}


def engine_kwargs(plan: Plan, role: GpuRole) -> Manifest:
    llmd = plan.llmd
    engine = llmd.spec.engine
    kwargs: Manifest = {
        "tensor_parallel_size": role.layout.tensor_parallel_size,
        "pipeline_parallel_size": role.layout.pipeline_parallel_size,
        "dtype": engine.dtype,
        "gpu_memory_utilization": engine.gpu_memory_utilization,
    }
    if role.layout.data_parallel_size > 1:
        kwargs["data_parallel_size"] = role.layout.data_parallel_size
    if engine.max_model_len is not None:
        kwargs["max_model_len"] = engine.max_model_len
    revision = None if llmd.spec.model is None else llmd.spec.model.revision
    # A prefetched model is a directory of that revision already.
    if revision is not None and model_source(llmd).scheme == "hf" and prefetch_of(llmd) is None:
        kwargs["revision"] = revision
    if plan.lora is not None:
        # Ray downloads adapters and hands them to vLLM, which serves them only when on.
        kwargs["enable_lora"] = True
        kwargs["max_lora_rank"] = plan.lora.max_rank
    if plan.kv_transfer is not None:
        kwargs["kv_transfer_config"] = kv_transfer_config(plan.kv_transfer)
    kwargs.update(engine.args)
    return kwargs


def placement_group_config(layout: GpuLayout, group_resource: str | None = None) -> Manifest:
    """One GPU bundle per engine worker (a fraction of a GPU when replicas share one); one
    engine instance packs onto one pod unless it spans pods. Ray's DP builder gang-places
    the ranks of a data-parallel replica itself (PACK), dropping this strategy.

    `group_resource`: a custom Ray resource only one worker group's pods advertise, one
    unit per GPU, so that a role's engines land on (and scale) its own group."""
    bundle: Manifest = {"GPU": layout.gpus_per_bundle}
    if group_resource is not None:
        bundle[group_resource] = 1
    return {
        "bundles": [dict(bundle) for _ in range(layout.gpus_per_rank)],
        "strategy": "PACK" if layout.rank_multi_host else "STRICT_PACK",
    }


def replica_config(role: GpuRole) -> Manifest:
    autoscaling = role.autoscaling
    if autoscaling is None:
        return {"num_replicas": role.min_replicas}
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


def deployment_config(plan: Plan, role: GpuRole) -> Manifest:
    """The LLM server deployment's options: replicas, then the router when not Serve's
    default (on each side of a disaggregated model: both are LLM server deployments)."""
    config = replica_config(role)
    if plan.router is not None:
        config["request_router_config"] = request_router_config(plan.router)
    return config


def loaded_from(llmd: LLMDeployment) -> str:
    """Ray Serve LLM's model_source: the cache claim's directory when prefetched."""
    source = serving_source(llmd)
    if source is None:
        raise ValueError("spec.model is required to serve a model")
    return source.model_source


def llm_config(plan: Plan, role: GpuRole) -> Manifest:
    """One Ray Serve LLM `LLMConfig` whose placement matches its role's worker pods."""
    llmd = plan.llmd
    spec = llmd.spec
    config: Manifest = {
        "model_loading_config": {
            "model_id": llmd.served_model_id,
            "model_source": loaded_from(llmd),
        },
    }
    # Ray Serve LLM adds an `accelerator_type:<type>` share to every bundle it is given
    # (vllm_models.placement_bundles): with fallbacks that would keep replicas off them.
    if plan.pinned_accelerator is not None:
        config["accelerator_type"] = plan.pinned_accelerator
    return config | {
        "engine_kwargs": engine_kwargs(plan, role),
        "placement_group_config": placement_group_config(
            role.layout, names.role_resource(role.name)
        ),
        "deployment_config": deployment_config(plan, role),
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
    if plan.serve_app is None:
        app["import_path"] = engine.import_path
        app["args"] = dict(engine.args)
    else:
        app["import_path"] = plan.serve_app
        app["args"] = BUILDER_ARGS[plan.serve_app](plan)
    return app


def serve_config(plan: Plan) -> Manifest:
    return {"applications": [serve_application(plan)]}


def serve_config_yaml(plan: Plan) -> str:
    """serveConfigV2 is a YAML string inside the RayService."""
    return dump_serve_config(serve_config(plan))


# libyaml's emitter (PyYAML's CSafeDumper) writes a fifth of the CPU of PyYAML's own and
# the same text for scalars like these (words, numbers, paths, URLs: every config the
# samples render). It quotes and folds long or unusual strings and writes empty keys
# differently, so a config holding any other string keeps PyYAML's emitter: the text
# running RayServices hold must not change, or each would be updated for nothing.
_LIBYAML_DUMPER: Any = getattr(yaml, "CSafeDumper", None)
_LIBYAML_SAME_TEXT = re.compile(r"[A-Za-z0-9_/][A-Za-z0-9_./:@+=-]{0,63}\Z")


def _libyaml_writes_the_same(value: object) -> bool:
    if isinstance(value, str):
        return _LIBYAML_SAME_TEXT.match(value) is not None
    if isinstance(value, dict):
        return all(
            isinstance(key, str) and _libyaml_writes_the_same(key) and _libyaml_writes_the_same(v)
            for key, v in value.items()
        )
    if isinstance(value, list):
        return all(_libyaml_writes_the_same(item) for item in value)
    return value is None or isinstance(value, bool | int | float)


def dump_serve_config(config: Manifest) -> str:
    """`yaml.safe_dump(config, sort_keys=False)`, with libyaml's emitter where its text is
    the same."""
    if _LIBYAML_DUMPER is not None and _libyaml_writes_the_same(config):
        return str(yaml.dump(config, Dumper=_LIBYAML_DUMPER, sort_keys=False))
    return yaml.safe_dump(config, sort_keys=False)
