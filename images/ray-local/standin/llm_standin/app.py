"""The stand-in's Ray Serve application: `llm_standin.app:build_app`.

One deployment, an OpenAI-shaped FastAPI ingress. Each replica sits in a placement group
of `gpus_per_replica` GPU bundles (the first also holds the replica's own small CPU
share and, when `accelerator_type` is set, Ray's accelerator hint) and starts one tiny
actor per bundle, each holding that bundle's GPU, where vLLM would start its workers.
`GET /debug/placement` shows what they got.
"""

# No `from __future__ import annotations` here: FastAPI reads the handlers' annotations
# at runtime to tell a JSON body from a query parameter.
import asyncio
import os
import socket
import time
import uuid
from collections.abc import Iterator
from typing import Any

import ray
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from ray import serve
from ray.serve import Application
from ray.util.placement_group import get_current_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from llm_standin import protocol
from llm_standin.config import (
    REPLICA_CPUS,
    StandinArgs,
    deployment_options,
    parse_args,
    placement_bundles,
)
from llm_standin.protocol import ChatRequest, CompletionRequest, StreamOptions

BUNDLE_ACTOR_START_TIMEOUT_S = 120

api = FastAPI(title="llm_standin", description="A stand-in for vLLM's OpenAI API; no model.")


@api.exception_handler(RequestValidationError)
async def _invalid_request(_request: Request, error: RequestValidationError) -> JSONResponse:
    problems = "; ".join(
        f"{'.'.join(str(part) for part in problem['loc'])}: {problem['msg']}"
        for problem in error.errors()
    )
    return JSONResponse(
        status_code=400, content=protocol.error_body(problems, "BadRequestError", 400)
    )


@ray.remote(num_cpus=0, num_gpus=1)
class BundleWorker:
    """Holds one bundle's GPU, as one vLLM worker would, and says where it runs."""

    def __init__(self, bundle_index: int) -> None:
        self.bundle_index = bundle_index

    def report(self) -> dict[str, Any]:
        return {
            "bundle_index": self.bundle_index,
            "gpu_ids": [str(gpu) for gpu in ray.get_gpu_ids()],
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "node_id": ray.get_runtime_context().get_node_id(),
            "hostname": socket.gethostname(),
            "pid": os.getpid(),
        }


def _sse(chunks: Iterator[dict[str, Any]]) -> StreamingResponse:
    return StreamingResponse(protocol.sse_stream(chunks), media_type="text/event-stream")


def _include_usage(options: StreamOptions | None) -> bool:
    return options is not None and options.include_usage


@serve.deployment(ray_actor_options={"num_cpus": REPLICA_CPUS})
@serve.ingress(api)
class StandinServer:
    def __init__(self, args: dict[str, Any]) -> None:
        self.args: StandinArgs = parse_args(args)
        self.bundles = placement_bundles(self.args)
        self.placement_group = get_current_placement_group()
        if self.placement_group is None:
            raise RuntimeError("llm_standin: the replica runs outside a placement group")
        self.workers = [self._start_worker(index) for index in range(len(self.bundles))]
        # Fail the replica (and so the deployment) if a bundle's actor cannot start.
        ray.get(
            [worker.report.remote() for worker in self.workers],
            timeout=BUNDLE_ACTOR_START_TIMEOUT_S,
        )
        self.created = int(time.time())

    def _start_worker(self, index: int) -> Any:
        options: dict[str, Any] = {
            "scheduling_strategy": PlacementGroupSchedulingStrategy(
                placement_group=self.placement_group, placement_group_bundle_index=index
            )
        }
        if index == 0 and self.args.accelerator_type is not None:
            options["accelerator_type"] = self.args.accelerator_type
        return BundleWorker.options(**options).remote(index)

    def _unknown_model(self, model: str | None) -> JSONResponse | None:
        if model is None or model == self.args.model_id:
            return None
        return JSONResponse(status_code=404, content=protocol.model_not_found(model))

    def _envelope(self, id_prefix: str) -> protocol.Envelope:
        return protocol.Envelope(
            f"{id_prefix}-{uuid.uuid4().hex}", int(time.time()), self.args.model_id
        )

    async def _delay(self) -> None:
        if self.args.response_delay_s > 0:
            await asyncio.sleep(self.args.response_delay_s)

    @api.get("/health")
    def health(self) -> dict[str, str]:
        return {"status": "ok"}

    @api.get("/v1/models")
    def models(self) -> dict[str, Any]:
        return protocol.models_list(self.args.model_id, self.created)

    @api.post("/v1/chat/completions", response_model=None)
    async def chat(self, body: ChatRequest) -> Any:
        if (error := self._unknown_model(body.model)) is not None:
            return error
        await self._delay()
        prompt, prompt_tokens = protocol.chat_prompt(body.messages)
        max_tokens = body.max_completion_tokens or body.max_tokens or self.args.max_tokens
        answer = protocol.generate_tokens(prompt, max_tokens)
        envelope = self._envelope("chatcmpl")
        if body.stream:
            usage_tokens = prompt_tokens if _include_usage(body.stream_options) else None
            return _sse(protocol.chat_chunks(envelope, answer, usage_tokens))
        return protocol.chat_completion(envelope, answer, prompt_tokens)

    @api.post("/v1/completions", response_model=None)
    async def completions(self, body: CompletionRequest) -> Any:
        if (error := self._unknown_model(body.model)) is not None:
            return error
        await self._delay()
        prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
        max_tokens = body.max_tokens or self.args.max_tokens
        answers = [protocol.generate_tokens(prompt, max_tokens) for prompt in prompts]
        prompt_tokens = sum(protocol.count_tokens(prompt) for prompt in prompts)
        envelope = self._envelope("cmpl")
        if body.stream:
            usage_tokens = prompt_tokens if _include_usage(body.stream_options) else None
            return _sse(protocol.text_completion_chunks(envelope, answers, usage_tokens))
        return protocol.text_completion(envelope, answers, prompt_tokens)

    @api.get("/debug/placement")
    async def placement(self) -> dict[str, Any]:
        context = serve.get_replica_context()
        reports = await asyncio.gather(*(worker.report.remote() for worker in self.workers))
        return {
            "replica_id": context.replica_id.unique_id,
            "application": context.app_name,
            "deployment": context.deployment,
            "hostname": socket.gethostname(),
            "node_id": ray.get_runtime_context().get_node_id(),
            "accelerator_type": self.args.accelerator_type,
            "placement_group_id": self.placement_group.id.hex(),
            "strategy": self.args.placement_strategy,
            "bundles": self.bundles,
            "bundle_actors": list(reports),
        }


def build_app(args: dict[str, Any]) -> Application:
    """Serve application builder: `import_path: llm_standin.app:build_app`."""
    settings = parse_args(args)
    return StandinServer.options(**deployment_options(settings)).bind(settings.model_dump())
