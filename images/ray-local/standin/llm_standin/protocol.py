"""OpenAI-shaped requests and responses, and the stand-in's "generation". Pure: no Ray.

The generated text is a deterministic function of the prompt: the marker `[standin]`
followed by the prompt's words, cut at `max_tokens`. A token is a whitespace-separated
word; every token but the first carries its leading space, so joining the tokens gives
the text and a stream's deltas add up to the non-streaming answer.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

MARKER = "[standin]"
SSE_DONE = "data: [DONE]\n\n"
OWNER = "llm-standin"

Body = dict[str, Any]
# An answer: its tokens and OpenAI's finish_reason.
Answer = tuple[list[str], str]


@dataclass(frozen=True)
class Envelope:
    """What every response object (or chunk) of one request repeats."""

    request_id: str
    created: int
    model: str

    def body(self, object_type: str) -> Body:
        return {
            "id": self.request_id,
            "object": object_type,
            "created": self.created,
            "model": self.model,
        }


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: str
    # A string, or OpenAI's list of parts ({"type": "text", "text": ...}).
    content: str | list[dict[str, Any]] | None = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")

    include_usage: bool = False


class ChatRequest(BaseModel):
    """What the stand-in reads of a chat request; other OpenAI fields are accepted."""

    model_config = ConfigDict(extra="allow")

    model: str | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    stream: bool = False
    stream_options: StreamOptions | None = None


class CompletionRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str | None = None
    prompt: str | list[str]
    max_tokens: int | None = Field(default=None, ge=1)
    stream: bool = False
    stream_options: StreamOptions | None = None


def message_text(message: ChatMessage) -> str:
    if message.content is None:
        return ""
    if isinstance(message.content, str):
        return message.content
    return " ".join(str(part.get("text", "")) for part in message.content)


def chat_prompt(messages: list[ChatMessage]) -> tuple[str, int]:
    """The text to answer (the last user message) and the prompt's token count (all
    messages, plus one for each role)."""
    answered = next(
        (message_text(m) for m in reversed(messages) if m.role == "user"),
        message_text(messages[-1]),
    )
    prompt_tokens = sum(count_tokens(message_text(m)) + 1 for m in messages)
    return answered, prompt_tokens


def count_tokens(text: str) -> int:
    return len(text.split())


def generate_tokens(prompt: str, max_tokens: int) -> Answer:
    """The answer's tokens and OpenAI's finish_reason ("length" when cut, else "stop")."""
    if max_tokens < 1:
        raise ValueError("max_tokens must be at least 1")
    words = [MARKER, *prompt.split()]
    finish_reason = "length" if len(words) > max_tokens else "stop"
    kept = words[:max_tokens]
    return [kept[0]] + [f" {word}" for word in kept[1:]], finish_reason


def usage(prompt_tokens: int, completion_tokens: int) -> Body:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def chat_completion(envelope: Envelope, answer: Answer, prompt_tokens: int) -> Body:
    tokens, finish_reason = answer
    return {
        **envelope.body("chat.completion"),
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "".join(tokens)},
                "logprobs": None,
                "finish_reason": finish_reason,
            }
        ],
        "usage": usage(prompt_tokens, len(tokens)),
    }


def chat_chunks(
    envelope: Envelope, answer: Answer, prompt_tokens: int | None = None
) -> Iterator[Body]:
    """The chunks of a streamed chat answer: the role, one per token, the finish reason,
    and the usage when prompt_tokens is given (stream_options.include_usage)."""
    tokens, finish_reason = answer

    def chunk(delta: Body, reason: str | None) -> Body:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": reason}
        return {**envelope.body("chat.completion.chunk"), "choices": [choice]}

    yield chunk({"role": "assistant", "content": ""}, None)
    for token in tokens:
        yield chunk({"content": token}, None)
    yield chunk({}, finish_reason)
    if prompt_tokens is not None:
        yield {
            **envelope.body("chat.completion.chunk"),
            "choices": [],
            "usage": usage(prompt_tokens, len(tokens)),
        }


def text_completion(envelope: Envelope, answers: list[Answer], prompt_tokens: int) -> Body:
    """A /v1/completions answer: one choice per prompt."""
    return {
        **envelope.body("text_completion"),
        "choices": [
            {"index": index, "text": "".join(tokens), "logprobs": None, "finish_reason": reason}
            for index, (tokens, reason) in enumerate(answers)
        ],
        "usage": usage(prompt_tokens, sum(len(tokens) for tokens, _ in answers)),
    }


def text_completion_chunks(
    envelope: Envelope, answers: list[Answer], prompt_tokens: int | None = None
) -> Iterator[Body]:
    def chunk(index: int, text: str, reason: str | None) -> Body:
        choice = {"index": index, "text": text, "logprobs": None, "finish_reason": reason}
        return {**envelope.body("text_completion"), "choices": [choice]}

    for index, (tokens, reason) in enumerate(answers):
        for token in tokens:
            yield chunk(index, token, None)
        yield chunk(index, "", reason)
    if prompt_tokens is not None:
        completion_tokens = sum(len(tokens) for tokens, _ in answers)
        yield {
            **envelope.body("text_completion"),
            "choices": [],
            "usage": usage(prompt_tokens, completion_tokens),
        }


def sse_event(data: Body) -> str:
    """One server-sent event as OpenAI streams it: `data: <json>` and a blank line."""
    return f"data: {json.dumps(data, separators=(',', ':'))}\n\n"


def sse_stream(chunks: Iterable[Body]) -> Iterator[str]:
    """The events of a stream, ending with OpenAI's `data: [DONE]`."""
    for chunk in chunks:
        yield sse_event(chunk)
    yield SSE_DONE


def models_list(model_id: str, created: int) -> Body:
    return {
        "object": "list",
        "data": [{"id": model_id, "object": "model", "created": created, "owned_by": OWNER}],
    }


def error_body(message: str, error_type: str, code: int, param: str | None = None) -> Body:
    """OpenAI's error shape."""
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


def model_not_found(model: str) -> Body:
    return error_body(f"The model `{model}` does not exist.", "NotFoundError", 404, "model")
