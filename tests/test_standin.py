"""The stand-in Serve app baked into the local Ray image (images/ray-local/standin):
its deterministic generation, OpenAI-shaped bodies, SSE framing and argument checks,
and that Ray Serve accepts the deployment options it derives from its arguments.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from conftest import require_or_skip

STANDIN = Path(__file__).resolve().parent.parent / "images" / "ray-local" / "standin"
sys.path.insert(0, str(STANDIN))

from llm_standin import protocol  # noqa: E402
from llm_standin.config import (  # noqa: E402
    REPLICA_CPUS,
    StandinArgs,
    deployment_options,
    parse_args,
    placement_bundles,
)

ENVELOPE = protocol.Envelope("chatcmpl-test", 1700000000, "standin")


def _events(stream: list[str]) -> list[dict[str, object]]:
    """Parse `data: {json}` events, checking the framing of each, up to [DONE]."""
    assert stream[-1] == "data: [DONE]\n\n"
    parsed = []
    for event in stream[:-1]:
        assert event.startswith("data: ")
        assert event.endswith("\n\n")
        assert "\n" not in event[: -len("\n\n")]
        parsed.append(json.loads(event[len("data: ") :]))
    return parsed


# --- generation --------------------------------------------------------------------


def test_generation_is_a_deterministic_echo_of_the_prompt() -> None:
    first = protocol.generate_tokens("Hello there,  world", 16)
    assert first == protocol.generate_tokens("Hello there,  world", 16)
    tokens, finish_reason = first
    assert tokens == ["[standin]", " Hello", " there,", " world"]
    assert "".join(tokens) == "[standin] Hello there, world"
    assert finish_reason == "stop"


def test_generation_stops_at_max_tokens_with_finish_reason_length() -> None:
    tokens, finish_reason = protocol.generate_tokens("one two three four", 3)
    assert tokens == ["[standin]", " one", " two"]
    assert finish_reason == "length"
    # Exactly enough room is not a cut.
    assert protocol.generate_tokens("one two", 3)[1] == "stop"
    assert protocol.generate_tokens("", 5) == (["[standin]"], "stop")
    with pytest.raises(ValueError, match="max_tokens"):
        protocol.generate_tokens("x", 0)


def test_chat_answers_the_last_user_message_and_counts_every_message() -> None:
    request = protocol.ChatRequest.model_validate(
        {
            "model": "standin",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "first question"},
                {"role": "assistant", "content": "an answer"},
                {"role": "user", "content": [{"type": "text", "text": "second question"}]},
            ],
            "temperature": 0.2,  # other OpenAI fields are accepted
        }
    )
    prompt, prompt_tokens = protocol.chat_prompt(request.messages)
    assert prompt == "second question"
    assert prompt_tokens == 8 + 4  # eight words, one per role


def test_chat_completion_body() -> None:
    answer = protocol.generate_tokens("hi you", 16)
    body = protocol.chat_completion(ENVELOPE, answer, prompt_tokens=3)
    assert body["object"] == "chat.completion"
    assert body["id"] == "chatcmpl-test"
    assert body["model"] == "standin"
    (choice,) = body["choices"]
    assert choice["message"] == {"role": "assistant", "content": "[standin] hi you"}
    assert choice["finish_reason"] == "stop"
    assert body["usage"] == {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6}


# --- streaming ---------------------------------------------------------------------


def test_sse_event_framing() -> None:
    event = protocol.sse_event({"text": "two\nlines", "n": 1})
    assert event == 'data: {"text":"two\\nlines","n":1}\n\n'
    assert list(protocol.sse_stream([])) == ["data: [DONE]\n\n"]


def test_streamed_chat_adds_up_to_the_plain_answer() -> None:
    answer = protocol.generate_tokens("stream these words please", 4)
    plain = protocol.chat_completion(ENVELOPE, answer, prompt_tokens=5)
    events = _events(list(protocol.sse_stream(protocol.chat_chunks(ENVELOPE, answer, 5))))

    assert {event["object"] for event in events} == {"chat.completion.chunk"}
    assert {event["id"] for event in events} == {"chatcmpl-test"}
    first, *middle, last, usage = events
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    content = "".join(chunk["choices"][0]["delta"]["content"] for chunk in middle)
    assert content == plain["choices"][0]["message"]["content"] == "[standin] stream these words"
    assert all(chunk["choices"][0]["finish_reason"] is None for chunk in [first, *middle])
    assert last["choices"][0] == {
        "index": 0,
        "delta": {},
        "logprobs": None,
        "finish_reason": "length",
    }
    assert usage["choices"] == []
    assert usage["usage"] == plain["usage"]


def test_streamed_chat_without_usage_has_no_usage_chunk() -> None:
    answer = protocol.generate_tokens("a", 4)
    events = _events(list(protocol.sse_stream(protocol.chat_chunks(ENVELOPE, answer))))
    assert all("usage" not in event for event in events)
    assert events[-1]["choices"][0]["finish_reason"] == "stop"


def test_completions_one_choice_per_prompt_and_stream() -> None:
    envelope = protocol.Envelope("cmpl-test", 1, "standin")
    answers = [protocol.generate_tokens(p, 2) for p in ("alpha beta", "")]
    body = protocol.text_completion(envelope, answers, prompt_tokens=2)
    assert [c["text"] for c in body["choices"]] == ["[standin] alpha", "[standin]"]
    assert [c["finish_reason"] for c in body["choices"]] == ["length", "stop"]
    assert body["usage"]["completion_tokens"] == 3

    events = _events(list(protocol.sse_stream(protocol.text_completion_chunks(envelope, answers))))
    texts: dict[int, str] = {}
    for event in events:
        (choice,) = event["choices"]
        texts[choice["index"]] = texts.get(choice["index"], "") + choice["text"]
    assert texts == {0: "[standin] alpha", 1: "[standin]"}


def test_error_bodies_are_openai_shaped() -> None:
    assert protocol.model_not_found("other") == {
        "error": {
            "message": "The model `other` does not exist.",
            "type": "NotFoundError",
            "param": "model",
            "code": 404,
        }
    }
    models = protocol.models_list("standin", 7)
    assert [entry["id"] for entry in models["data"]] == ["standin"]


# --- arguments and placement -------------------------------------------------------


def test_defaults() -> None:
    args = parse_args(None)
    assert args == StandinArgs()
    assert (args.model_id, args.gpus_per_replica, args.placement_strategy) == (
        "standin",
        1,
        "STRICT_PACK",
    )
    assert placement_bundles(args) == [{"CPU": REPLICA_CPUS, "GPU": 1}]
    assert deployment_options(args) == {
        "ray_actor_options": {"num_cpus": REPLICA_CPUS},
        "placement_group_bundles": [{"CPU": REPLICA_CPUS, "GPU": 1}],
        "placement_group_strategy": "STRICT_PACK",
    }


def test_unknown_argument_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="unknown argument") as refused:
        parse_args({"model_id": "m", "tensor_parallel_size": 2})
    message = str(refused.value)
    assert "tensor_parallel_size" in message
    assert "gpus_per_replica" in message  # the known ones are listed


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        ({"gpus_per_replica": 0}, "gpus_per_replica"),
        ({"placement_strategy": "SPREAD"}, "placement_strategy"),
        ({"response_delay_s": -1}, "response_delay_s"),
        ({"num_replicas": 2, "autoscaling_config": {"max_replicas": 2}}, "not both"),
        ({"model_id": ""}, "model_id"),
    ],
)
def test_invalid_arguments_are_refused(args: dict[str, object], problem: str) -> None:
    with pytest.raises(ValueError, match="invalid arguments") as refused:
        parse_args(args)
    assert problem in str(refused.value)


def test_bundles_per_gpu_with_accelerator_hint_in_the_first() -> None:
    args = parse_args(
        {
            "gpus_per_replica": 3,
            "placement_strategy": "PACK",
            "accelerator_type": "L4",
            "autoscaling_config": {"min_replicas": 1, "max_replicas": 2},
            "max_ongoing_requests": 4,
        }
    )
    assert placement_bundles(args) == [
        {"CPU": REPLICA_CPUS, "GPU": 1, "accelerator_type:L4": 0.001},
        {"GPU": 1},
        {"GPU": 1},
    ]
    options = deployment_options(args)
    assert options["placement_group_strategy"] == "PACK"
    assert options["autoscaling_config"] == {"min_replicas": 1, "max_replicas": 2}
    assert options["max_ongoing_requests"] == 4
    assert "num_replicas" not in options


def test_serve_accepts_the_deployment_options() -> None:
    """Serve checks at .options() time that the replica fits in the first bundle."""
    require_or_skip("ray.serve", "Ray Serve builds the stand-in's deployment")
    from llm_standin.app import StandinServer, build_app
    from ray.serve import Application

    args = parse_args({"gpus_per_replica": 2, "num_replicas": 3, "max_ongoing_requests": 5})
    deployment = StandinServer.options(**deployment_options(args))
    assert deployment.num_replicas == 3
    assert deployment.max_ongoing_requests == 5
    assert deployment.ray_actor_options["num_cpus"] == REPLICA_CPUS
    assert isinstance(build_app({"accelerator_type": "L4"}), Application)
    with pytest.raises(ValueError, match="unknown argument"):
        build_app({"batch_size": 32})
