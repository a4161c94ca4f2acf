"""What the fake engine answers, as plain OpenAI-shaped dicts. Pure: no Ray, no vLLM.

The engine (`llmop_fake_engine.engine`) validates these dicts into Ray Serve LLM's own
response models before handing them to Ray, so a shape Ray's OpenAI ingress would not
take fails there, loudly.

Generation: the answer is the marker `[fake-vllm]` followed by the prompt's words, cut
at `max_tokens` (16 when the request sets none). A token is a whitespace-separated
word; every token but the first carries its leading space, so a stream's deltas join
to the non-streaming answer.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

ENGINE_CLASS_PATH = "llmop_fake_engine.engine:FakeVLLMEngine"
# A chat request whose last user message is exactly this is answered with the report.
REPORT_PROMPT = "llmop-fake-engine: report"
# A chat request whose last user message starts with this and a number of seconds is
# held that long before its answer, as a long generation would hold its replica: the
# one way a test can make Serve's autoscaler see ongoing requests. Capped, so a typo
# cannot hold a replica for good.
HOLD_PROMPT = "llmop-fake-engine: hold"
HOLD_MAX_SECONDS = 30.0
# The replica logs its report on one line starting with this.
REPORT_LOG_PREFIX = "llmop-fake-engine report: "
MARKER = "[fake-vllm]"
DEFAULT_MAX_TOKENS = 16
SSE_DONE = "data: [DONE]\n\n"

Body = dict[str, Any]
# An answer: its tokens and OpenAI's finish_reason.
Answer = tuple[list[str], str]


# --- prompts -------------------------------------------------------------------------
def _field(item: Any, name: str) -> Any:
    """A field of a chat message, whether a dict (vLLM's TypedDicts) or an object."""
    if isinstance(item, Mapping):
        return item.get(name)
    return getattr(item, name, None)


def content_text(content: Any) -> str:
    """A message's text: a string, or OpenAI's list of parts ({"type": "text", ...})."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, Iterable):
        texts = (_field(part, "text") for part in content)
        return " ".join(str(text) for text in texts if text)
    return str(content)


def chat_prompt(messages: Sequence[Any]) -> tuple[str, int]:
    """The text to answer (the last user message, else the last message) and the
    prompt's token count (every message's words, plus one for each role)."""
    if not messages:
        return "", 0
    texts = [(_field(m, "role"), content_text(_field(m, "content"))) for m in messages]
    answered = next((text for role, text in reversed(texts) if role == "user"), texts[-1][1])
    return answered, sum(count_tokens(text) + 1 for _, text in texts)


def completion_prompts(prompt: Any) -> list[str]:
    """A completion request's prompts: a string, strings, token ids or lists of them."""
    if prompt is None:
        return [""]
    if isinstance(prompt, str):
        return [prompt]
    items = list(prompt)
    if not items:
        return [""]
    if all(isinstance(item, int) for item in items):
        return [" ".join(str(item) for item in items)]
    return [
        item if isinstance(item, str) else " ".join(str(token) for token in item) for item in items
    ]


def count_tokens(text: str) -> int:
    return len(text.split())


def max_tokens(*asked: int | None) -> int:
    """The first limit the request set, else the default."""
    return next((value for value in asked if value is not None and value > 0), DEFAULT_MAX_TOKENS)


def generate(prompt: str, limit: int) -> Answer:
    """The answer's tokens and finish_reason ("length" when cut, else "stop")."""
    if limit < 1:
        raise ValueError("max_tokens must be at least 1")
    words = [MARKER, *prompt.split()]
    kept = words[:limit]
    return [kept[0], *(f" {word}" for word in kept[1:])], (
        "length" if len(words) > limit else "stop"
    )


def is_report_request(prompt: str) -> bool:
    return prompt.strip() == REPORT_PROMPT


def hold_seconds(prompt: str) -> float:
    """How long to hold the answer: what a `HOLD_PROMPT` asks (0 to the cap), else 0."""
    words = prompt.split()
    if words[:2] != HOLD_PROMPT.split() or len(words) < 3:
        return 0.0
    try:
        asked = float(words[2])
    except ValueError:
        return 0.0
    return min(max(asked, 0.0), HOLD_MAX_SECONDS)


# --- response bodies -----------------------------------------------------------------
def usage(prompt_tokens: int, completion_tokens: int) -> Body:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _head(request_id: str, created: int, model: str, kind: str) -> Body:
    return {"id": request_id, "object": kind, "created": created, "model": model}


def chat_body(
    request_id: str, created: int, model: str, answer: Answer, prompt_tokens: int
) -> Body:
    tokens, finish_reason = answer
    return {
        **_head(request_id, created, model, "chat.completion"),
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "".join(tokens)},
                "finish_reason": finish_reason,
            }
        ],
        "usage": usage(prompt_tokens, len(tokens)),
    }


def chat_chunks(
    request_id: str,
    created: int,
    model: str,
    answer: Answer,
    prompt_tokens: int | None = None,
) -> Iterator[Body]:
    """A streamed chat answer: the role, a chunk per token, the finish reason, and the
    usage when prompt_tokens is given (the request's stream_options.include_usage)."""
    tokens, finish_reason = answer
    head = _head(request_id, created, model, "chat.completion.chunk")

    def chunk(delta: Body, reason: str | None) -> Body:
        return {**head, "choices": [{"index": 0, "delta": delta, "finish_reason": reason}]}

    yield chunk({"role": "assistant", "content": ""}, None)
    for token in tokens:
        yield chunk({"content": token}, None)
    yield chunk({}, finish_reason)
    if prompt_tokens is not None:
        yield {**head, "choices": [], "usage": usage(prompt_tokens, len(tokens))}


def completion_body(
    request_id: str, created: int, model: str, answers: list[Answer], prompt_tokens: int
) -> Body:
    return {
        **_head(request_id, created, model, "text_completion"),
        "choices": [
            {"index": index, "text": "".join(tokens), "finish_reason": reason}
            for index, (tokens, reason) in enumerate(answers)
        ],
        "usage": usage(prompt_tokens, sum(len(tokens) for tokens, _ in answers)),
    }


def completion_chunks(
    request_id: str,
    created: int,
    model: str,
    answers: list[Answer],
    prompt_tokens: int | None = None,
) -> Iterator[Body]:
    head = _head(request_id, created, model, "text_completion")
    for index, (tokens, reason) in enumerate(answers):
        for token in tokens:
            yield {**head, "choices": [{"index": index, "text": token, "finish_reason": None}]}
        yield {**head, "choices": [{"index": index, "text": "", "finish_reason": reason}]}
    if prompt_tokens is not None:
        completion_tokens = sum(len(tokens) for tokens, _ in answers)
        yield {**head, "choices": [], "usage": usage(prompt_tokens, completion_tokens)}


def sse(data: str) -> str:
    """One server-sent event: `data: <json>` and a blank line."""
    return f"data: {data}\n\n"


# --- the report ----------------------------------------------------------------------
def placement_layout(table: Mapping[str, Any]) -> Body:
    """The parts of `ray.util.placement_group_table(pg)` the report shows: the strategy
    and the bundles as Ray placed them (the replica's own CPU and the accelerator hint
    merged into the first), in bundle order, with the node each landed on."""
    bundles = table.get("bundles") or {}
    nodes = table.get("bundles_to_node_id") or {}
    order = sorted(bundles, key=int)
    return {
        "id": table.get("placement_group_id"),
        "strategy": table.get("strategy"),
        "state": table.get("state"),
        "bundles": [dict(bundles[index]) for index in order],
        "bundle_nodes": [nodes.get(index) for index in order],
    }


def report_json(report: Mapping[str, Any]) -> str:
    """The report as one line of JSON (sorted keys; anything else as its str)."""
    return json.dumps(report, sort_keys=True, separators=(",", ":"), default=str)
