"""Pure rendering: a validated LLMDeployment to the KubeRay children. No I/O."""

from llm_operator.render.children import is_retained, layout_of, render

__all__ = ["is_retained", "layout_of", "render"]
