"""llmop_fake_engine: a test engine that stands in for vLLM where no GPU exists.

It is not a language model and loads nothing. Ray Serve LLM's own application (the
`ray.serve.llm:build_openai_app` the operator renders for `engine.type: vllm`) runs
unchanged around it: Ray's OpenAI ingress, its `LLMServer` replicas, their placement
groups and autoscaling are all real; only the inference engine inside each replica is
this one instead of vLLM's. Ray picks it when the replica's environment holds

    RAYLLM_VLLM_ENGINE_CLS=llmop_fake_engine.engine:FakeVLLMEngine

(the local test image sets it; a Serve config's `runtime_env.env_vars` can too).

What it does in place of vLLM:

- starts one small Ray actor per bundle of the replica's placement group, each holding
  that bundle's GPU as one vLLM worker would, so the tensor x pipeline parallel layout
  the operator rendered is really placed (`llmop_fake_engine.workers`);
- answers chat and text completions, plain and streamed, with a deterministic function
  of the prompt (`llmop_fake_engine.replies`);
- reports what it received and where its actors landed: a chat request whose last
  user message is exactly `REPORT_PROMPT` ("llmop-fake-engine: report") is answered
  with that report as JSON in the message content, and the replica logs the same
  report, on one line starting with `llmop-fake-engine report:`, once its actors are up.

This package's top level and `replies` import nothing from Ray, so the bundle actors'
processes (which import `llmop_fake_engine.workers`) stay small and the pure parts are
testable without Ray Serve LLM or vLLM.
"""

from llmop_fake_engine.replies import ENGINE_CLASS_PATH, REPORT_PROMPT

__all__ = ["ENGINE_CLASS_PATH", "REPORT_PROMPT"]
