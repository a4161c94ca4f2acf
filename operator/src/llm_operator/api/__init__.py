"""The LLMDeployment API: models, CRD generation and validation. No I/O."""
