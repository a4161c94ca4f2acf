"""Pure rendering: a resolved plan to the KubeRay children. No I/O."""

from llm_operator.render.children import Children, is_retained, render, render_children

__all__ = ["Children", "is_retained", "render", "render_children"]
