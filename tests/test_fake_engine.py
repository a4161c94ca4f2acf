"""The fake engine baked into the local Ray LLM image (images/ray-local/fake_engine), which
stands in for vLLM where no GPU exists: its deterministic answers and their OpenAI shapes,
the report's placement layout, and that it implements Ray Serve LLM's engine protocol.

The engine module itself needs Ray Serve LLM and vLLM (the image has them; CI's
environment has only ray[serve]), so its methods are checked against Ray's protocol by
reading its source; the end-to-end check is e2e/test_vllm.py.
"""

from __future__ import annotations

import ast
import inspect
import json
import sys
from pathlib import Path

import pytest

from conftest import require_or_skip

FAKE_ENGINE = Path(__file__).resolve().parent.parent / "images" / "ray-local" / "fake_engine"
ENGINE_SOURCE = FAKE_ENGINE / "llmop_fake_engine" / "engine.py"
sys.path.insert(0, str(FAKE_ENGINE))

from llmop_fake_engine import replies  # noqa: E402

HEAD = ("chatcmpl-test", 1700000000, "qwen")


def _events(stream: list[str]) -> list[dict[str, object]]:
    parsed = []
    for event in stream:
        assert event.startswith("data: ") and event.endswith("\n\n")
        parsed.append(json.loads(event[len("data: ") : -2]))
    return parsed


def test_answers_are_a_deterministic_echo_cut_at_max_tokens() -> None:
    assert replies.generate("Hello there,  world", 16) == (
        ["[fake-vllm]", " Hello", " there,", " world"],
        "stop",
    )
    assert replies.generate("one two three", 2) == (["[fake-vllm]", " one"], "length")
    assert replies.generate("one two", 3)[1] == "stop"
    assert replies.generate("", 4) == (["[fake-vllm]"], "stop")
    with pytest.raises(ValueError, match="max_tokens"):
        replies.generate("x", 0)


def test_max_tokens_is_the_first_limit_the_request_set() -> None:
    assert replies.max_tokens(None, None) == replies.DEFAULT_MAX_TOKENS
    assert replies.max_tokens(None, 5) == 5
    assert replies.max_tokens(3, 5) == 3


def test_chat_answers_the_last_user_message_whatever_the_message_type() -> None:
    class Message:  # vLLM hands messages over as dicts; objects work too
        role = "user"
        content = "as an object"

    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "an answer"},
        {"role": "user", "content": [{"type": "text", "text": "second question"}]},
    ]
    assert replies.chat_prompt(messages) == ("second question", 3 + 2 + 3 + 3)
    assert replies.chat_prompt([Message()]) == ("as an object", 4)
    assert replies.chat_prompt([{"role": "system", "content": "only"}]) == ("only", 2)
    assert replies.chat_prompt([]) == ("", 0)


def test_completion_prompts_of_every_shape() -> None:
    assert replies.completion_prompts("a b") == ["a b"]
    assert replies.completion_prompts(["a", "b c"]) == ["a", "b c"]
    assert replies.completion_prompts([1, 2, 3]) == ["1 2 3"]
    assert replies.completion_prompts([[1, 2], [3]]) == ["1 2", "3"]
    assert replies.completion_prompts(None) == [""]


def test_chat_body_and_stream_agree() -> None:
    answer = replies.generate("say it twice", 16)
    body = replies.chat_body(*HEAD, answer, prompt_tokens=4)
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"] == {
        "role": "assistant",
        "content": "[fake-vllm] say it twice",
    }
    assert body["usage"] == {"prompt_tokens": 4, "completion_tokens": 4, "total_tokens": 8}

    chunks = list(replies.chat_chunks(*HEAD, answer, prompt_tokens=4))
    assert {chunk["object"] for chunk in chunks} == {"chat.completion.chunk"}
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    streamed = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks[:-1])
    assert streamed == body["choices"][0]["message"]["content"]
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1] == {**chunks[-1], "choices": [], "usage": body["usage"]}
    # Without stream_options.include_usage there is no usage chunk.
    assert len(list(replies.chat_chunks(*HEAD, answer))) == len(chunks) - 1


def test_completion_body_and_stream_agree_per_prompt() -> None:
    answers = [replies.generate(p, 2) for p in ("one two three", "four")]
    body = replies.completion_body(*HEAD, answers, prompt_tokens=4)
    assert [c["text"] for c in body["choices"]] == ["[fake-vllm] one", "[fake-vllm] four"]
    assert [c["finish_reason"] for c in body["choices"]] == ["length", "stop"]
    chunks = list(replies.completion_chunks(*HEAD, answers))
    for index, choice in enumerate(body["choices"]):
        mine = [c["choices"][0] for c in chunks if c["choices"][0]["index"] == index]
        assert "".join(c["text"] for c in mine) == choice["text"]
        assert mine[-1]["finish_reason"] == choice["finish_reason"]


def test_server_sent_events_frame_one_json_document_each() -> None:
    stream = [replies.sse(json.dumps(c)) for c in replies.chat_chunks(*HEAD, (["x"], "stop"))]
    assert [e["object"] for e in _events(stream)] == ["chat.completion.chunk"] * 3
    assert replies.SSE_DONE == "data: [DONE]\n\n"


def test_the_report_prompt_is_recognised_exactly() -> None:
    assert replies.is_report_request(replies.REPORT_PROMPT)
    assert replies.is_report_request(f"  {replies.REPORT_PROMPT}\n")
    assert not replies.is_report_request(f"please {replies.REPORT_PROMPT}")


def test_a_hold_prompt_holds_the_answer_for_what_it_asks_within_the_cap() -> None:
    assert replies.hold_seconds(f"{replies.HOLD_PROMPT} 0.5") == 0.5
    assert replies.hold_seconds(f"{replies.HOLD_PROMPT} 2 and some words") == 2.0
    assert replies.hold_seconds(f"{replies.HOLD_PROMPT} 3600") == replies.HOLD_MAX_SECONDS
    assert replies.hold_seconds(f"{replies.HOLD_PROMPT} -4") == 0.0
    assert replies.hold_seconds(f"{replies.HOLD_PROMPT} soon") == 0.0
    assert replies.hold_seconds(replies.HOLD_PROMPT) == 0.0
    assert replies.hold_seconds(f"please {replies.HOLD_PROMPT} 5") == 0.0
    assert replies.hold_seconds("Hello there") == 0.0


def test_placement_layout_orders_bundles_and_their_nodes() -> None:
    table = {
        "placement_group_id": "pg1",
        "strategy": "PACK",
        "state": "CREATED",
        "bundles": {1: {"GPU": 1.0}, 0: {"CPU": 1.0, "GPU": 1.0, "accelerator_type:L4": 0.001}},
        "bundles_to_node_id": {0: "node-a", 1: "node-b"},
    }
    layout = replies.placement_layout(table)
    assert layout == {
        "id": "pg1",
        "strategy": "PACK",
        "state": "CREATED",
        "bundles": [{"CPU": 1.0, "GPU": 1.0, "accelerator_type:L4": 0.001}, {"GPU": 1.0}],
        "bundle_nodes": ["node-a", "node-b"],
    }
    assert json.loads(replies.report_json({"layout": layout, "other": {1}}))["other"] == "{1}"


def _engine_methods() -> dict[str, ast.FunctionDef | ast.AsyncFunctionDef]:
    tree = ast.parse(ENGINE_SOURCE.read_text(encoding="utf-8"))
    (engine,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "FakeVLLMEngine"]
    return {
        node.name: node
        for node in engine.body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    }


def test_the_engine_implements_ray_serve_llms_engine_protocol() -> None:
    protocol = require_or_skip(
        "ray.llm._internal.serve.core.engine.protocol", "the fake engine's protocol check"
    )
    methods = _engine_methods()
    for name in sorted(protocol.LLMEngine.__abstractmethods__):
        assert name in methods, f"FakeVLLMEngine lacks {name}"
        expected = protocol.LLMEngine.__dict__[name]
        mine = methods[name]
        # Same parameters, and async where Ray's protocol is (generators stay generators).
        assert [a.arg for a in mine.args.args] == list(inspect.signature(expected).parameters)
        is_async = inspect.iscoroutinefunction(expected) or inspect.isasyncgenfunction(expected)
        assert isinstance(mine, ast.AsyncFunctionDef) == is_async, name
    assert replies.ENGINE_CLASS_PATH == "llmop_fake_engine.engine:FakeVLLMEngine"
