"""llm_standin: a stand-in for vLLM, for machines without GPUs. It is not a language model.

A small Ray Serve application with an OpenAI-shaped HTTP API (`/v1/models`,
`/v1/chat/completions`, `/v1/completions`, streaming included) whose answers are a
deterministic function of the prompt. It exists so the operator's end-to-end tests can
run a real Ray cluster, real Serve deployments and real placement groups on a machine
with no GPU and no model weights: each replica asks for the GPU placement group a vLLM
replica would ask for and starts one small actor per GPU bundle, as vLLM's workers
would, and `/debug/placement` reports where they landed.

Deploy it with the operator's `engine.type: custom`,
`importPath: llm_standin.app:build_app`; `spec.engine.args` become the arguments
(see `llm_standin.config.StandinArgs`).
"""
