"""Deep validation of a rendered Serve config with Ray's own models (the `ray` extra).

Ray's LLMConfig lives in an internal module; the path is pinned to the Ray version
the project tests with (see pyproject's `ray` extra).
"""

from __future__ import annotations

import ast
import copy
import importlib.util
import inspect
import logging
from typing import Any

from llm_operator.api.plan import (
    DATA_PARALLEL_APP,
    OPENAI_APP,
    PREFILL_DECODE_APP,
    PREFIX_CACHE_AFFINITY_ROUTER,
)

# Public router path -> the internal class it re-exports (ray/serve/llm/request_router.py,
# Ray 2.60). The public package refuses to import without vLLM, which this check does not
# need; the internal module imports without it, so Ray's models check that one instead.
ROUTER_IMPLEMENTATIONS = {
    PREFIX_CACHE_AFFINITY_ROUTER: (
        "ray.llm._internal.serve.routing_policies.prefix_aware.prefix_aware_router"
        ":PrefixCacheAffinityRouter"
    ),
}


class RayUnavailableError(RuntimeError):
    """Ray is not installed: `pip install 'llm-operator[ray]'`."""


def _ray_models() -> tuple[Any, Any, Any]:
    try:
        import ray  # noqa: F401  (configures Ray's loggers, which the line below quiets)

        # Ray LLM warns at import that torch and transformers are missing; not needed here.
        logging.getLogger("ray").setLevel(logging.ERROR)
        from ray.llm._internal.serve.core.configs.llm_config import LLMConfig
        from ray.serve.schema import DeploymentSchema, ServeDeploySchema
    except ImportError as exc:
        raise RayUnavailableError(
            f"deep validation needs Ray: pip install 'llm-operator[ray]' ({exc})"
        ) from exc
    return ServeDeploySchema, LLMConfig, DeploymentSchema


def ray_available() -> bool:
    try:
        _ray_models()
    except RayUnavailableError:
        return False
    return True


def serve_config_errors(serve_config: dict[str, Any]) -> list[str]:
    """Messages from Ray's ServeDeploySchema and LLMConfig; empty when Ray accepts it."""
    serve_schema, llm_config_model, deployment_schema = _ray_models()
    errors: list[str] = []
    try:
        serve_schema.model_validate(serve_config)
    except Exception as exc:  # pydantic's ValidationError, from Ray's own pydantic
        errors.append(f"serveConfigV2 rejected by Ray ServeDeploySchema: {exc}")
    for app in serve_config.get("applications", []):
        args = app.get("args", {})
        errors.extend(_builder_args_errors(app.get("import_path"), args))
        for label, rendered in _llm_configs(app.get("import_path"), args):
            config = _with_router_implementation(rendered)
            errors.extend(
                f"{label}.deployment_config.request_router_config: {problem}"
                for problem in _router_kwargs_errors(config)
            )
            try:
                llm_config_model.model_validate(config)
            except Exception as exc:
                errors.append(f"{label} rejected by Ray LLMConfig: {exc}")
            # LLMConfig keeps deployment_config as a plain dict; Serve checks it at deploy.
            options = {"name": "LLMServer", **config.get("deployment_config", {})}
            try:
                deployment_schema.model_validate(options)
            except Exception as exc:
                errors.append(f"{label}.deployment_config rejected by Ray DeploymentSchema: {exc}")
    return errors


def _llm_configs(import_path: str | None, args: dict[str, Any]) -> list[tuple[str, Any]]:
    """The LLMConfigs a Ray Serve LLM builder's args hold, each with its path in args."""
    if import_path == OPENAI_APP:
        return [(f"llm_configs[{i}]", c) for i, c in enumerate(args.get("llm_configs", []))]
    if import_path == DATA_PARALLEL_APP:
        return [("llm_config", args.get("llm_config", {}))]
    if import_path == PREFILL_DECODE_APP:
        return [(side, args.get(side, {})) for side in PD_SIDES]
    return []


# Builder -> (module, class) of the pydantic model its args must fit. Both modules
# import vLLM at module level, so their fields are read from their source instead.
BUILDER_ARGS_MODELS = {
    DATA_PARALLEL_APP: (
        "ray.llm._internal.serve.serving_patterns.data_parallel.builder",
        "DPOpenAiServingArgs",
    ),
    PREFILL_DECODE_APP: (
        "ray.llm._internal.serve.serving_patterns.prefill_decode.builder",
        "PDServingArgs",
    ),
}
PD_SIDES = ("prefill_config", "decode_config")
# PDServingArgs' own model validators (Ray 2.60), which need vLLM to import: the checks
# below restate the first three; the last two only fill in decode's port defaults.
# `pd_validator_names()` reads the list from Ray's source, so a validator added in
# another Ray version shows up as a difference in the tests.
PD_VALIDATORS = (
    "_validate_model_ids",
    "_validate_lora_configs",
    "_validate_kv_transfer_config",
    "_default_decode_nixl_port_base",
    "_default_decode_moriio_port_base",
)


def _model_fields_in_source(module: str, class_name: str) -> set[str]:
    """The annotated fields of a class, read from its module's source, not imported."""
    return {
        item.target.id
        for item in _class_in_source(module, class_name).body
        if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)
    }


def _class_in_source(module: str, class_name: str) -> ast.ClassDef:
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise RayUnavailableError(f"Ray has no module {module}")
    with open(spec.origin, encoding="utf-8") as source:
        tree = ast.parse(source.read())
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == class_name:
            return node
    raise RayUnavailableError(f"{module} defines no {class_name}")


def pd_validator_names() -> tuple[str, ...]:
    """The model validators of Ray's PDServingArgs, from its source."""
    module, class_name = BUILDER_ARGS_MODELS[PREFILL_DECODE_APP]
    node = _class_in_source(module, class_name)
    return tuple(
        item.name
        for item in node.body
        if isinstance(item, ast.FunctionDef)
        and any(
            isinstance(d, ast.Call) and getattr(d.func, "id", None) == "model_validator"
            for d in item.decorator_list
        )
    )


def _builder_args_errors(import_path: str | None, args: dict[str, Any]) -> list[str]:
    if import_path not in BUILDER_ARGS_MODELS:
        return []
    module, class_name = BUILDER_ARGS_MODELS[import_path]
    fields = _model_fields_in_source(module, class_name)
    errors = [
        f"args.{key} rejected by Ray {class_name}: not one of its fields {sorted(fields)}"
        for key in args
        if key not in fields
    ]
    if import_path == PREFILL_DECODE_APP:
        errors.extend(f"args rejected by Ray {class_name}: {e}" for e in _pd_errors(args))
    return errors


def _pd_errors(args: dict[str, Any]) -> list[str]:
    """PDServingArgs' cross-side rules (its model validators, see PD_VALIDATORS)."""
    missing = [side for side in PD_SIDES if not isinstance(args.get(side), dict)]
    if missing:
        return [f"{side} is required" for side in missing]
    prefill, decode = (args[side] for side in PD_SIDES)
    errors: list[str] = []
    model_ids = [c.get("model_loading_config", {}).get("model_id") for c in (prefill, decode)]
    if model_ids[0] != model_ids[1]:
        errors.append("P/D model id mismatch")
    loras = [c.get("lora_config") for c in (prefill, decode)]
    if (loras[0] is None) != (loras[1] is None):
        errors.append("P/D LoRA must be configured on both prefill and decode")
    elif loras[0] is not None and loras[1] is not None:
        paths = [lora.get("dynamic_lora_loading_path") for lora in loras]
        if paths[0] != paths[1]:
            errors.append("P/D prefill and decode LoRA loading paths must be the same")
    for side, config in zip(PD_SIDES, (prefill, decode), strict=True):
        if config.get("engine_kwargs", {}).get("kv_transfer_config") is None:
            errors.append(f"{side}: kv_transfer_config is required for P/D disaggregation")
    return errors


def _router_config(config: dict[str, Any]) -> dict[str, Any] | None:
    router = config.get("deployment_config", {}).get("request_router_config")
    return router if isinstance(router, dict) else None


def _with_router_implementation(config: dict[str, Any]) -> dict[str, Any]:
    """`config` with a public router path swapped for the class it re-exports."""
    router = _router_config(config)
    if router is None or router.get("request_router_class") not in ROUTER_IMPLEMENTATIONS:
        return config
    swapped = copy.deepcopy(config)
    swapped["deployment_config"]["request_router_config"]["request_router_class"] = (
        ROUTER_IMPLEMENTATIONS[router["request_router_class"]]
    )
    return swapped


def _router_kwargs_errors(config: dict[str, Any]) -> list[str]:
    """Keyword arguments the router's `initialize_state` does not take: Serve passes them
    only when a replica starts routing, so its config models cannot catch them."""
    router = _router_config(config)
    if router is None or "request_router_class" not in router:
        return []
    from ray._common.utils import import_attr

    try:
        cls = import_attr(router["request_router_class"])
    except Exception as exc:
        return [f"{router['request_router_class']} cannot be imported: {exc}"]
    accepted = inspect.signature(cls.initialize_state).parameters
    return [
        f"{cls.__name__}.initialize_state takes no argument {name!r}"
        for name in router.get("request_router_kwargs", {})
        if name not in accepted
    ]
