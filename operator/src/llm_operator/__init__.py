"""llm-operator: serve large language models on Ray through KubeRay."""

__version__ = "0.2.0"
