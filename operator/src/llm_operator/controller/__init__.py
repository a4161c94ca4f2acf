"""The kopf operator: converge LLMDeployments into KubeRay children, mirror status."""
