"""The fake engine's bundle actors: one per placement-group bundle, where vLLM would
start one worker per GPU (tensor x pipeline parallel). Imports only Ray, so each actor's
process stays small (no vLLM, no torch).
"""

from __future__ import annotations

import os
import socket
from typing import Any

import ray


@ray.remote(num_cpus=0, num_gpus=1)
class BundleWorker:
    """Holds its bundle's GPU and says where it runs."""

    def __init__(self, bundle_index: int) -> None:
        self.bundle_index = bundle_index

    def ping(self) -> bool:
        return True

    def report(self) -> dict[str, Any]:
        return {
            "bundle_index": self.bundle_index,
            "gpu_ids": [str(gpu) for gpu in ray.get_gpu_ids()],
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "node_id": ray.get_runtime_context().get_node_id(),
            "hostname": socket.gethostname(),
            "pid": os.getpid(),
        }
