"""LLMDeployments for the real node, where the inference engine is stood in.

No GPU exists here, so vLLM cannot run: these specs keep the quick start's shape
(manifests/samples/quickstart.yaml: model, accelerator, layout) and swap only the engine
for the small OpenAI-compatible Serve app baked into the local Ray image
(images/ray-local/standin, `engine.type: custom`). Everything else, from the operator's
rendering to KubeRay's pods and Ray's placement, is the real thing.

For e2e/demo.sh: `python e2e/standin.py deployment NS` prints the quick start so shaped,
`python e2e/standin.py namespace NS TAINT` a namespace whose pods go to the real node.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = ROOT / "manifests" / "samples" / "quickstart.yaml"
NODE_ENV = ROOT / ".e2e" / "node" / "images.env"
STANDIN_APP = "llm_standin.app:build_app"
# Small requests: the real node has 2 cores. Its kubelet enforces no CPU limit, so Ray is
# not throttled to them; the memory limits hold.
HEAD_RESOURCES = {"cpu": "300m", "memory": "3Gi"}
WORKER_RESOURCES = {"cpu": "200m", "memory": "2Gi"}
# The namespace annotations that send every pod of a namespace to the real node
# (the API server's PodNodeSelector and PodTolerationRestriction admission plugins).
NODE_SELECTOR_ANNOTATION = "scheduler.alpha.kubernetes.io/node-selector"
TOLERATIONS_ANNOTATION = "scheduler.alpha.kubernetes.io/defaultTolerations"

Body = dict[str, Any]


def ray_image() -> str:
    """The local Ray image e2e/node.sh built and imported into the node's containerd."""
    assert NODE_ENV.exists(), f"{NODE_ENV} is missing: the real node is not up (e2e/node.sh up)"
    lines = NODE_ENV.read_text(encoding="utf-8").split()
    return dict(line.split("=", 1) for line in lines if "=" in line)["RAY_LOCAL_IMAGE"]


def real_node_annotations(taint: str) -> dict[str, str]:
    tolerations = [
        {"key": taint, "operator": "Exists", "effect": "NoSchedule"},
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
    ]
    return {
        NODE_SELECTOR_ANNOTATION: f"{taint}=true",
        TOLERATIONS_ANNOTATION: json.dumps(tolerations),
    }


def quickstart() -> Body:
    document = yaml.safe_load(QUICKSTART.read_text(encoding="utf-8"))
    assert isinstance(document, dict)
    return document


def standin_deployment(
    namespace: str,
    *,
    tensor_parallel: int = 1,
    pipeline_parallel: int = 1,
    gpus_per_node: int | None = None,
    replicas: int | None = None,
    autoscaling: Body | None = None,
    app_args: Body | None = None,
) -> Body:
    """The quick start in `namespace` with the engine stood in; the rest as asked."""
    body = copy.deepcopy(quickstart())
    body["metadata"]["namespace"] = namespace
    spec = body["spec"]
    accelerator = spec["accelerator"]
    if gpus_per_node is not None:
        accelerator["gpusPerNode"] = gpus_per_node
    gpus = tensor_parallel * pipeline_parallel
    spec["engine"] = {
        **spec.get("engine", {}),
        "type": "custom",
        "importPath": STANDIN_APP,
        "tensorParallelSize": tensor_parallel,
        "pipelineParallelSize": pipeline_parallel,
        # What vLLM would take from the rendered LLMConfig, the stand-in takes as args.
        "args": {
            "model_id": spec["model"]["name"],
            "gpus_per_replica": gpus,
            "placement_strategy": "PACK" if gpus > accelerator["gpusPerNode"] else "STRICT_PACK",
            "accelerator_type": accelerator["type"],
            **(app_args or {}),
        },
    }
    spec["rayCluster"] = {
        "image": ray_image(),
        "head": {"resources": {"requests": HEAD_RESOURCES, "limits": HEAD_RESOURCES}},
        "worker": {"resources": {"requests": WORKER_RESOURCES, "limits": WORKER_RESOURCES}},
    }
    if autoscaling is not None:
        spec.pop("replicas", None)
        spec["autoscaling"] = autoscaling
        spec["rayCluster"]["autoscaler"] = {"idleTimeoutSeconds": 20}
    elif replicas is not None:
        spec["replicas"] = replicas
    return body


def namespace(name: str, taint: str) -> Body:
    metadata = {"name": name, "annotations": real_node_annotations(taint)}
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": metadata}


if __name__ == "__main__":
    what, *args = sys.argv[1:]
    document = standin_deployment(*args) if what == "deployment" else namespace(*args)
    yaml.safe_dump(document, sys.stdout, sort_keys=False)
