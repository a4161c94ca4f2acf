"""`FakeVLLMEngine`: Ray Serve LLM's engine protocol without vLLM's inference.

It stands in for vLLM where no GPU exists (see the package docstring). Ray Serve LLM's
`LLMServer` replica builds it from the rendered `LLMConfig` in place of its `VLLMEngine`
when `RAYLLM_VLLM_ENGINE_CLS=llmop_fake_engine.engine:FakeVLLMEngine` is in the
replica's environment, calls `start()` once, then hands it the OpenAI requests its
ingress received. The engine protocol's conventions, as Ray 2.60's ingress reads them:
a non-streaming call yields one response object of Ray's own OpenAI models
(`ray.llm._internal.serve.core.configs.openai_api_models`), a streaming call yields
`data: <json>\\n\\n` strings ending with `data: [DONE]\\n\\n`, an error yields one
`ErrorResponse`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections.abc import AsyncGenerator
from typing import Any

import ray
from ray.llm._internal.serve.core.configs.llm_config import DiskMultiplexConfig, LLMConfig
from ray.llm._internal.serve.core.configs.openai_api_models import (
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatCompletionStreamResponse,
    CompletionRequest,
    CompletionResponse,
    CompletionStreamResponse,
    ErrorResponse,
)
from ray.llm._internal.serve.core.engine.protocol import LLMEngine
from ray.llm._internal.serve.core.protocol import RawRequestInfo
from ray.util.placement_group import get_current_placement_group, placement_group_table
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from llmop_fake_engine import replies
from llmop_fake_engine.workers import BundleWorker

logger = logging.getLogger("ray.serve")

WORKERS_START_TIMEOUT_S = 120.0
HEALTH_TIMEOUT_S = 10.0


def _jsonable(value: Any) -> Any:
    """A config value as plain data (pydantic models dumped, the rest as is)."""
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json", exclude_unset=True)
    return value


def _error(message: str, code: int = 400, kind: str = "BadRequestError") -> ErrorResponse:
    return ErrorResponse.model_validate({"error": {"message": message, "type": kind, "code": code}})


class FakeVLLMEngine(LLMEngine):
    """Loads nothing; places one actor per bundle; answers deterministically."""

    def __init__(self, llm_config: LLMConfig) -> None:
        super().__init__(llm_config)
        self.llm_config = llm_config
        self.model_id = llm_config.model_id
        self.placement_group: Any = None
        self.workers: list[Any] = []
        self.lora_adapters: list[str] = []
        self.started_at: float | None = None
        self.start_seconds: float | None = None

    # --- life cycle ------------------------------------------------------------------
    async def start(self) -> None:
        if self.started_at is not None:
            return
        began = time.monotonic()
        self.placement_group = get_current_placement_group()
        if self.placement_group is None:
            raise RuntimeError("llmop_fake_engine: the replica runs outside a placement group")
        layout = replies.placement_layout(placement_group_table(self.placement_group))
        self.workers = [
            self._start_worker(index, bundle) for index, bundle in enumerate(layout["bundles"])
        ]
        # A bundle actor that cannot start fails the replica, as a vLLM worker would.
        await asyncio.wait_for(
            asyncio.gather(*(worker.ping.remote() for worker in self.workers)),
            WORKERS_START_TIMEOUT_S,
        )
        self.started_at = time.time()
        self.start_seconds = round(time.monotonic() - began, 3)
        report = await self.report()
        logger.info("%s%s", replies.REPORT_LOG_PREFIX, replies.report_json(report))

    def _start_worker(self, index: int, bundle: dict[str, float]) -> Any:
        # One GPU per worker; a fractional bundle (several replicas on one GPU) its share.
        gpus = min(1.0, float(bundle.get("GPU", 0)))
        strategy = PlacementGroupSchedulingStrategy(
            placement_group=self.placement_group,
            placement_group_bundle_index=index,
            placement_group_capture_child_tasks=False,
        )
        return BundleWorker.options(num_gpus=gpus, scheduling_strategy=strategy).remote(index)

    async def check_health(self) -> None:
        await asyncio.wait_for(
            asyncio.gather(*(worker.ping.remote() for worker in self.workers)),
            HEALTH_TIMEOUT_S,
        )

    async def shutdown(self) -> None:
        for worker in self.workers:
            ray.kill(worker)
        self.workers = []

    def routing_stats(self) -> dict[str, Any]:
        return {}

    async def resolve_lora(self, lora_model: DiskMultiplexConfig) -> None:
        if lora_model.model_id not in self.lora_adapters:
            self.lora_adapters.append(lora_model.model_id)

    async def reset_prefix_cache(self) -> None:
        return None

    # --- the report --------------------------------------------------------------------
    async def report(self) -> dict[str, Any]:
        """What the engine received and where its bundle actors run."""
        config = self.llm_config
        loading = config.model_loading_config
        workers = await asyncio.gather(*(worker.report.remote() for worker in self.workers))
        table = placement_group_table(self.placement_group) if self.placement_group else {}
        return {
            "engine": replies.ENGINE_CLASS_PATH,
            "model_id": config.model_id,
            "model_source": getattr(loading, "model_source", None),
            "accelerator_type": config.accelerator_type,
            "engine_kwargs": dict(config.engine_kwargs),
            "placement_group_config": _jsonable(config.placement_group_config),
            "deployment_config": _jsonable(config.deployment_config),
            "lora_config": _jsonable(config.lora_config),
            "placement_group": replies.placement_layout(table),
            "bundle_actors": sorted(workers, key=lambda worker: worker["bundle_index"]),
            "replica": self._replica(),
            "lora_adapters_loaded": list(self.lora_adapters),
            "started_at": self.started_at,
            "start_seconds": self.start_seconds,
        }

    @staticmethod
    def _replica() -> dict[str, Any]:
        replica: dict[str, Any] = {
            "node_id": ray.get_runtime_context().get_node_id(),
            "hostname": socket.gethostname(),
            "pid": os.getpid(),
        }
        try:
            from ray import serve

            context = serve.get_replica_context()
            replica.update(
                id=context.replica_id.unique_id,
                application=context.app_name,
                deployment=context.deployment,
            )
        except Exception:  # outside a replica (unit use): no Serve context
            pass
        return replica

    # --- requests --------------------------------------------------------------------
    def _served_model(self, request: Any) -> str:
        return getattr(request, "model", None) or self.model_id

    def _head(self, request: Any, prefix: str) -> tuple[str, int, str]:
        """A response's id, creation time and model."""
        request_id = getattr(request, "request_id", None) or uuid.uuid4().hex
        return f"{prefix}-{request_id}", int(time.time()), self._served_model(request)

    @staticmethod
    def _include_usage(request: Any) -> bool:
        return bool(getattr(getattr(request, "stream_options", None), "include_usage", False))

    async def chat(
        self, request: ChatCompletionRequest, raw_request_info: RawRequestInfo | None = None
    ) -> AsyncGenerator[str | ChatCompletionResponse | ErrorResponse, None]:
        prompt, prompt_tokens = replies.chat_prompt(list(request.messages))
        hold = replies.hold_seconds(prompt)
        if hold:
            await asyncio.sleep(hold)
        if replies.is_report_request(prompt):
            answer: replies.Answer = ([replies.report_json(await self.report())], "stop")
        else:
            limit = replies.max_tokens(request.max_completion_tokens, request.max_tokens)
            answer = replies.generate(prompt, limit)
        head = self._head(request, "chatcmpl")
        if request.stream:
            usage_tokens = prompt_tokens if self._include_usage(request) else None
            for chunk in replies.chat_chunks(*head, answer, usage_tokens):
                event = ChatCompletionStreamResponse.model_validate(chunk)
                yield replies.sse(event.model_dump_json(exclude_unset=True))
            yield replies.SSE_DONE
        else:
            yield ChatCompletionResponse.model_validate(
                replies.chat_body(*head, answer, prompt_tokens)
            )

    async def completions(
        self, request: CompletionRequest, raw_request_info: RawRequestInfo | None = None
    ) -> AsyncGenerator[str | CompletionResponse | ErrorResponse, None]:
        prompts = replies.completion_prompts(request.prompt)
        limit = replies.max_tokens(request.max_tokens)
        answers = [replies.generate(prompt, limit) for prompt in prompts]
        prompt_tokens = sum(replies.count_tokens(prompt) for prompt in prompts)
        head = self._head(request, "cmpl")
        if request.stream:
            usage_tokens = prompt_tokens if self._include_usage(request) else None
            for chunk in replies.completion_chunks(*head, answers, usage_tokens):
                event = CompletionStreamResponse.model_validate(chunk)
                yield replies.sse(event.model_dump_json(exclude_unset=True))
            yield replies.SSE_DONE
        else:
            yield CompletionResponse.model_validate(
                replies.completion_body(*head, answers, prompt_tokens)
            )

    async def embeddings(
        self, request: Any, raw_request_info: RawRequestInfo | None = None
    ) -> AsyncGenerator[ErrorResponse, None]:
        yield _error("llmop_fake_engine answers chat and completions only, not embeddings")

    async def transcriptions(
        self, request: Any, raw_request_info: RawRequestInfo | None = None
    ) -> AsyncGenerator[ErrorResponse, None]:
        yield _error("llmop_fake_engine answers chat and completions only, not transcriptions")
