"""Deep validation of a rendered Serve config with Ray's own models (the `ray` extra).

Ray's LLMConfig lives in an internal module; the path is pinned to the Ray version
the project tests with (see pyproject's `ray` extra).
"""

from __future__ import annotations

import copy
import inspect
import logging
from typing import Any

from llm_operator.api.plan import PREFIX_CACHE_AFFINITY_ROUTER
from llm_operator.render.serve import OPENAI_APP

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
        if app.get("import_path") != OPENAI_APP:
            continue
        for index, rendered in enumerate(app.get("args", {}).get("llm_configs", [])):
            config = _with_router_implementation(rendered)
            errors.extend(
                f"llm_configs[{index}].deployment_config.request_router_config: {problem}"
                for problem in _router_kwargs_errors(config)
            )
            try:
                llm_config_model.model_validate(config)
            except Exception as exc:
                errors.append(f"llm_configs[{index}] rejected by Ray LLMConfig: {exc}")
            # LLMConfig keeps deployment_config as a plain dict; Serve checks it at deploy.
            options = {"name": "LLMServer", **config.get("deployment_config", {})}
            try:
                deployment_schema.model_validate(options)
            except Exception as exc:
                errors.append(
                    f"llm_configs[{index}].deployment_config rejected by Ray "
                    f"DeploymentSchema: {exc}"
                )
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
