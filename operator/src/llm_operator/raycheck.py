"""Deep validation of a rendered Serve config with Ray's own models (the `ray` extra).

Ray's LLMConfig lives in an internal module; the path is pinned to the Ray version
the project tests with (see pyproject's `ray` extra).
"""

from __future__ import annotations

import logging
from typing import Any

from llm_operator.render.serve import OPENAI_APP


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
        for index, config in enumerate(app.get("args", {}).get("llm_configs", [])):
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
