"""The vLLM path served for real: Ray Serve LLM's own application on the real node.

`engine.type: vllm` (the default) renders a Serve config whose application is Ray Serve
LLM's `build_openai_app`, with the LLMConfig the operator computed: placement group
bundles and strategy, accelerator type, engine kwargs, deployment config. Here that
application runs unchanged on the real node (e2e/node.sh): Ray's OpenAI ingress, its
LLMServer replicas and their placement groups are the real thing. Only the inference
engine inside each replica is replaced: no GPU exists here, so vLLM cannot run, and the
local Ray LLM image (`bash images/ray-local/build.sh ray-llm`) sets
RAYLLM_VLLM_ENGINE_CLS to llmop_fake_engine (images/ray-local/fake_engine), a test engine
that stands in for vLLM. It loads nothing, answers deterministically, starts one actor
per placement-group bundle (each holding that bundle's logical GPU, where vLLM would
start a worker) and, asked the chat message `REPORT_PROMPT`, answers with a JSON report
of what it received and where its actors run. The tests check that report against the
Serve config the operator rendered.

Needs the Ray LLM image imported on the node: e2e/node.sh writes its reference to
.e2e/node/images.env as RAY_LLM_LOCAL_IMAGE. Run with `pytest -m vllm e2e`.
"""

from __future__ import annotations

import contextlib
import copy
import json
import threading
import time
import urllib.error
import urllib.request
from typing import Any, NamedTuple

import pytest
import yaml
from standin import NODE_ENV, quickstart
from support import RAY_TEST_SECONDS, Body, Kube, serving_cluster_name, wait_for, worker_pods
from test_ray import (
    REQUEST_SECONDS,
    base_url,
    http,
    kuberay_ready,
    ray_service,
    record,
    wait_ready,
)

pytestmark = [pytest.mark.vllm, pytest.mark.timeout(RAY_TEST_SECONDS)]

IMAGE_KEY = "RAY_LLM_LOCAL_IMAGE"
MODEL = quickstart()["spec"]["model"]["name"]
NAME = quickstart()["metadata"]["name"]
ACCELERATOR = quickstart()["spec"]["accelerator"]["type"]
# Kept in step with images/ray-local/fake_engine/llmop_fake_engine/replies.py.
ENGINE_CLASS = "llmop_fake_engine.engine:FakeVLLMEngine"
REPORT_PROMPT = "llmop-fake-engine: report"
# Held that many seconds before the answer (llmop_fake_engine.replies.HOLD_PROMPT).
HOLD_PROMPT = "llmop-fake-engine: hold"
MARKER = "[fake-vllm]"
# Ray's accelerator hint: the fraction of `accelerator_type:<T>` Ray Serve LLM adds to
# every bundle of a replica whose LLMConfig names an accelerator type.
ACCELERATOR_HINT = 0.001
# Ray Serve LLM's OpenAI ingress (on the head) and each LLMServer replica (on a worker)
# import vLLM and torch: about 1.1 GB each on top of Ray's own processes.
HEAD_RESOURCES = {"cpu": "300m", "memory": "4Gi"}
WORKER_RESOURCES = {"cpu": "200m", "memory": "3Gi"}
# Importing vLLM on 2 busy cores is slow, and the image is large: the first pod on a
# fresh node unpacks it (about 9.5 GB).
READY_SECONDS = 900.0
ANSWER_SECONDS = 180.0


def ray_llm_image() -> str:
    """The local Ray LLM image e2e/node.sh built and imported into the node's containerd."""
    assert NODE_ENV.exists(), f"{NODE_ENV} is missing: the real node is not up (e2e/node.sh up)"
    lines = NODE_ENV.read_text(encoding="utf-8").split()
    images = dict(line.split("=", 1) for line in lines if "=" in line)
    assert IMAGE_KEY in images, f"{NODE_ENV} has no {IMAGE_KEY}: the node lacks the Ray LLM image"
    return images[IMAGE_KEY]


def vllm_deployment(
    namespace: str,
    *,
    tensor_parallel: int = 1,
    pipeline_parallel: int = 1,
    gpus_per_node: int | None = None,
) -> Body:
    """The quick start as users write it (engine vLLM), in `namespace`, with the layout
    asked, small pods and the local Ray LLM image, which swaps vLLM's engine for the fake."""
    body = copy.deepcopy(quickstart())
    body["metadata"]["namespace"] = namespace
    spec = body["spec"]
    assert spec.get("engine", {}).get("type", "vllm") == "vllm"
    spec["engine"] = {
        **spec.get("engine", {}),
        "tensorParallelSize": tensor_parallel,
        "pipelineParallelSize": pipeline_parallel,
    }
    if gpus_per_node is not None:
        spec["accelerator"]["gpusPerNode"] = gpus_per_node
    spec["rayCluster"] = {
        "image": ray_llm_image(),
        "head": {"resources": {"requests": HEAD_RESOURCES, "limits": HEAD_RESOURCES}},
        "worker": {"resources": {"requests": WORKER_RESOURCES, "limits": WORKER_RESOURCES}},
    }
    return body


def rendered_llm_config(kube: Kube, namespace: str) -> Body:
    """The LLMConfig of the Serve config the operator rendered and KubeRay submitted."""
    serve_config = yaml.safe_load(ray_service(kube, namespace, NAME)["spec"]["serveConfigV2"])
    (application,) = serve_config["applications"]
    assert application["import_path"] == "ray.serve.llm:build_openai_app"
    (llm_config,) = application["args"]["llm_configs"]
    assert isinstance(llm_config, dict)
    return llm_config


# --- requests ------------------------------------------------------------------------
def chat(url: str, content: str, **extra: Any) -> Body:
    body = {"model": MODEL, "messages": [{"role": "user", "content": content}], **extra}
    answer: Body = http("POST", f"{url}/v1/chat/completions", body)
    return answer


def chat_answers(url: str) -> Body | None:
    try:
        return chat(url, "Hello")
    except (OSError, json.JSONDecodeError):  # URLError, HTTPError, refused, timed out
        return None


def stream(url: str, path: str, body: Body) -> list[Body]:
    """The chunks of a streamed answer; the stream must end with `data: [DONE]`."""
    request = urllib.request.Request(
        f"{url}{path}",
        data=json.dumps({**body, "stream": True}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=REQUEST_SECONDS) as response:
        assert response.headers["Content-Type"].startswith("text/event-stream")
        events = [event for event in response.read().decode().split("\n\n") if event]
    assert events[-1] == "data: [DONE]", events[-3:]
    assert all(event.startswith("data: ") for event in events)
    return [json.loads(event.removeprefix("data: ")) for event in events[:-1]]


def engine_report(url: str) -> Body:
    """What the fake engine of the replica that answered received, and where it runs."""
    answer = chat(url, REPORT_PROMPT)
    report: Body = json.loads(answer["choices"][0]["message"]["content"])
    return report


def serve_and_answer(kube: Kube, namespace: str, body: Body) -> tuple[str, dict[str, float]]:
    """Apply, wait for KubeRay's Ready and a first answer; return the URL and timings."""
    started = time.monotonic()
    kube.create_llmd(body)
    wait_for(
        lambda: kuberay_ready(kube, namespace, NAME),
        f"KubeRay to report RayService {namespace}/{NAME} Ready",
        READY_SECONDS,
    )
    wait_ready(kube, namespace, NAME)  # and the LLMDeployment, every replica
    ready_s = time.monotonic() - started
    url = base_url(kube, namespace, NAME)
    wait_for(lambda: chat_answers(url), "Ray Serve LLM's endpoint to answer", ANSWER_SECONDS)
    return url, {"ready_s": round(ready_s, 1), "answer_s": round(time.monotonic() - started, 1)}


# --- what every layout must show -----------------------------------------------------
def check_openai_api(url: str) -> None:
    models = http("GET", f"{url}/v1/models")
    assert [model["id"] for model in models["data"]] == [MODEL]

    answer = chat(url, "Hello there", max_tokens=2)
    assert answer["object"] == "chat.completion"
    assert answer["model"] == MODEL
    message = answer["choices"][0]["message"]  # vLLM's model: other fields are null
    assert (message["role"], message["content"]) == ("assistant", f"{MARKER} Hello")
    assert answer["choices"][0]["finish_reason"] == "length"
    assert answer["usage"]["completion_tokens"] == 2
    assert chat(url, "Hello there", max_tokens=2)["choices"] == answer["choices"]  # deterministic

    hello = {"model": MODEL, "messages": [{"role": "user", "content": "Hello there"}]}
    chunks = stream(url, "/v1/chat/completions", hello)
    assert {chunk["object"] for chunk in chunks} == {"chat.completion.chunk"}
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == f"{MARKER} Hello there"

    completion = http("POST", f"{url}/v1/completions", {"model": MODEL, "prompt": "one two"})
    assert completion["object"] == "text_completion"
    assert completion["choices"][0]["text"] == f"{MARKER} one two"
    streamed = stream(url, "/v1/completions", {"model": MODEL, "prompt": "one two"})
    assert "".join(c["choices"][0]["text"] for c in streamed if c["choices"]) == (
        f"{MARKER} one two"
    )

    unknown = {"model": "no-such-model", "messages": [{"role": "user", "content": "Hello"}]}
    with pytest.raises(urllib.error.HTTPError) as error:
        http("POST", f"{url}/v1/chat/completions", unknown)
    assert error.value.code == 404


def check_report(
    report: Body, rendered: Body, tensor_parallel: int, pipeline_parallel: int
) -> None:
    """The engine got the LLMConfig the operator rendered, and Ray placed it as promised."""
    assert report["engine"] == ENGINE_CLASS
    assert report["model_id"] == MODEL == rendered["model_loading_config"]["model_id"]
    assert report["accelerator_type"] == ACCELERATOR == rendered["accelerator_type"]
    assert report["engine_kwargs"] == rendered["engine_kwargs"]
    assert report["engine_kwargs"]["tensor_parallel_size"] == tensor_parallel
    assert report["engine_kwargs"]["pipeline_parallel_size"] == pipeline_parallel
    assert report["placement_group_config"] == rendered["placement_group_config"]

    promised = rendered["placement_group_config"]
    placed = report["placement_group"]
    assert placed["state"] == "CREATED"
    assert placed["strategy"] == promised["strategy"]
    gpus = tensor_parallel * pipeline_parallel
    assert len(placed["bundles"]) == len(promised["bundles"]) == gpus
    hint = f"accelerator_type:{ACCELERATOR}"
    for index, (bundle, asked) in enumerate(
        zip(placed["bundles"], promised["bundles"], strict=True)
    ):
        assert bundle["GPU"] == asked["GPU"] == 1, (index, bundle)
        assert bundle[hint] == pytest.approx(ACCELERATOR_HINT), (index, bundle)
    # The LLMServer replica's own CPU goes into the first bundle, beside its GPU.
    assert placed["bundles"][0]["CPU"] == 1
    assert all("CPU" not in bundle for bundle in placed["bundles"][1:])

    actors = report["bundle_actors"]
    assert [actor["bundle_index"] for actor in actors] == list(range(gpus))
    for actor, node in zip(actors, placed["bundle_nodes"], strict=True):
        assert len(actor["gpu_ids"]) == 1, actor
        assert actor["cuda_visible_devices"] == actor["gpu_ids"][0], actor
        assert actor["node_id"] == node, actor  # each actor in the bundle it was given
    # The replica itself runs in the first bundle's node.
    assert report["replica"]["node_id"] == placed["bundle_nodes"][0]


def actors_by_pod(report: Body) -> dict[str, list[str]]:
    """The GPU ids the bundle actors hold, by the pod (hostname) they run in."""
    pods: dict[str, list[str]] = {}
    for actor in report["bundle_actors"]:
        pods.setdefault(actor["hostname"], []).extend(actor["gpu_ids"])
    return pods


# --- the tests -----------------------------------------------------------------------
class Layout(NamedTuple):
    tensor_parallel: int
    pipeline_parallel: int
    gpus_per_node: int | None  # None: the quick start's
    worker_pods: int  # what the operator's rendering needs for one replica


LAYOUTS = [
    pytest.param(Layout(1, 1, None, 1), id="quick-start-tp1"),
    pytest.param(Layout(2, 1, None, 1), id="tp2-one-worker-pod"),
    pytest.param(Layout(2, 2, 2, 2), id="tp2-pp2-two-worker-pods"),
]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_ray_serve_llm_serves_the_rendered_layout(
    kube: Kube,
    ray_namespace: str,
    settings: dict[str, str],
    layout: Layout,
) -> None:
    ns = ray_namespace
    tp, pp = layout.tensor_parallel, layout.pipeline_parallel
    body = vllm_deployment(
        ns, tensor_parallel=tp, pipeline_parallel=pp, gpus_per_node=layout.gpus_per_node
    )
    url, timings = serve_and_answer(kube, ns, body)
    llmd = kube.get_llmd(ns, NAME)
    assert llmd["status"]["phase"] == "Ready"
    assert llmd["status"]["replicas"] == {"desired": 1, "ready": 1}

    cluster = serving_cluster_name(kube, ns, NAME)
    workers = worker_pods(kube, ns, cluster)
    assert len(workers) == layout.worker_pods
    assert all(pod.spec.node_name == settings["REAL_NODE_NAME"] for pod in workers)

    check_openai_api(url)

    rendered = rendered_llm_config(kube, ns)
    report = engine_report(url)
    check_report(report, rendered, tp, pp)
    # Every bundle actor runs in a worker pod, spread as the layout needs: all in one pod
    # up to a node's GPUs, else packed pod by pod; distinct logical GPUs within a pod.
    pods = actors_by_pod(report)
    assert set(pods) <= {pod.metadata.name for pod in workers}, pods
    assert len(pods) == layout.worker_pods, pods
    for gpu_ids in pods.values():
        assert len(gpu_ids) == tp * pp // layout.worker_pods == len(set(gpu_ids)), pods
    record(
        f"vllm tp{tp} pp{pp}",
        **timings,
        engine_start_s=report["start_seconds"],
        bundles=report["placement_group"]["bundles"],
        strategy=report["placement_group"]["strategy"],
        gpus_by_pod=pods,
    )


# --- serving patterns and autoscaling with Ray Serve LLM's own deployments -----------
def reports_by_replica(url: str, replicas: int) -> dict[str, Body]:
    """The engine report of each of `replicas` distinct replicas (Serve's router spreads
    the report requests; a few dozen reach every replica of a small deployment)."""
    reports: dict[str, Body] = {}
    for _ in range(12 * replicas):
        report = engine_report(url)
        reports.setdefault(report["replica"]["id"], report)
        if len(reports) == replicas:
            break
    return reports


def serve_deployment_configs(kube: Kube, namespace: str) -> list[Body]:
    """The deployment configs Ray Serve itself runs, from the head's dashboard API."""
    cluster = serving_cluster_name(kube, namespace, NAME)
    # KubeRay's head Service is headless: the head pod's own address, reached from the
    # host over the node's pod network.
    head = kube.ray("rayclusters", namespace, cluster)
    assert head is not None
    address = head["status"]["head"]["podIP"]
    port = head["status"]["endpoints"]["dashboard"]
    details = http("GET", f"http://{address}:{port}/api/serve/applications/")
    return [
        deployment["deployment_config"]
        for application in details["applications"].values()
        for deployment in application["deployments"].values()
    ]


PREFIX_ROUTER = "ray.serve.llm.request_router:PrefixCacheAffinityRouter"


def test_prefix_cache_affinity_router_runs_in_serve(
    kube: Kube,
    ray_namespace: str,
) -> None:
    ns = ray_namespace
    body = vllm_deployment(ns)
    body["spec"].pop("replicas", None)  # autoscaling instead of the fixed count
    body["spec"]["autoscaling"] = {"minReplicas": 2, "maxReplicas": 2}
    body["spec"]["routing"] = {
        "policy": "PrefixCacheAffinity",
        "prefixCacheAffinity": {"imbalancedThreshold": 8, "matchRateThreshold": 0.2},
    }
    url, timings = serve_and_answer(kube, ns, body)
    check_openai_api(url)

    routers = [
        config["request_router_config"]
        for config in serve_deployment_configs(kube, ns)
        if "request_router_config" in config
    ]
    chosen = [router for router in routers if router["request_router_class"] == PREFIX_ROUTER]
    assert len(chosen) == 1, routers  # the LLMServer deployment, not the ingress
    assert chosen[0]["request_router_kwargs"] == {
        "imbalanced_threshold": 8,
        "match_rate_threshold": 0.2,
    }
    assert kube.get_llmd(ns, NAME)["status"]["replicas"] == {"desired": 2, "ready": 2}
    # The same prompt again and again: the router sends it where its prefix is cached,
    # one replica every time (Serve's default router would spread it over both).
    reports = reports_by_replica(url, 2)
    assert len(reports) == 1, f"an identical prompt went to {sorted(reports)}"
    record("vllm prefix-cache router", **timings, replicas=sorted(reports))


def test_fractional_gpus_pack_replicas_onto_one_gpu(
    kube: Kube,
    ray_namespace: str,
    settings: dict[str, str],
) -> None:
    ns = ray_namespace
    body = vllm_deployment(ns)
    body["spec"]["accelerator"]["gpuFraction"] = 0.5
    # Each replica's bundle holds one Ray CPU beside its GPU share: the worker pod
    # advertises two (Ray counts the CPU limit) while asking the scheduler for little.
    worker = body["spec"]["rayCluster"]["worker"]
    worker["resources"] = {"requests": WORKER_RESOURCES, "limits": {**WORKER_RESOURCES, "cpu": "2"}}
    body["spec"]["engine"]["gpuMemoryUtilization"] = 0.45
    body["spec"].pop("replicas", None)  # autoscaling instead of the fixed count
    body["spec"]["autoscaling"] = {"minReplicas": 2, "maxReplicas": 2}
    url, timings = serve_and_answer(kube, ns, body)

    cluster = serving_cluster_name(kube, ns, NAME)
    (worker,) = worker_pods(kube, ns, cluster)  # two half-GPU replicas: one pod
    assert worker.spec.node_name == settings["REAL_NODE_NAME"]
    reports = reports_by_replica(url, 2)
    assert len(reports) == 2, reports.keys()
    placed = []
    for report in reports.values():
        (bundle,) = report["placement_group"]["bundles"]
        assert bundle["GPU"] == pytest.approx(0.5), bundle
        (actor,) = report["bundle_actors"]
        placed.append((actor["hostname"], tuple(actor["gpu_ids"])))
    # Both replicas' engines hold the same logical GPU of the same worker pod.
    assert len(set(placed)) == 1, placed
    assert placed[0][0] == worker.metadata.name
    record("vllm fractional gpus", **timings, placed=placed)


HOLD_SECONDS = 4
SCALE_SECONDS = 600.0


def test_serve_llm_and_the_ray_autoscaler_scale_out_under_load(
    kube: Kube,
    ray_namespace: str,
) -> None:
    """Serve LLM's own autoscaler adds a replica under held requests; the Ray autoscaler
    adds the worker pod it needs. (Scale-down follows Serve's default 600 s downscale
    delay, which the LLMDeployment does not set; it is not waited for here.)"""
    ns = ray_namespace
    body = vllm_deployment(ns)
    body["spec"].pop("replicas", None)  # autoscaling instead of the fixed count
    body["spec"]["autoscaling"] = {
        "minReplicas": 1,
        "maxReplicas": 2,
        "targetOngoingRequests": 1,
        "maxOngoingRequests": 4,
    }
    url, timings = serve_and_answer(kube, ns, body)
    cluster = serving_cluster_name(kube, ns, NAME)
    assert len(worker_pods(kube, ns, cluster)) == 1

    stop = threading.Event()
    answered: list[float] = []

    def hold_loop() -> None:
        while not stop.is_set():
            with contextlib.suppress(OSError, json.JSONDecodeError):
                chat(url, f"{HOLD_PROMPT} {HOLD_SECONDS}")
                answered.append(time.monotonic())

    threads = [threading.Thread(target=hold_loop, daemon=True) for _ in range(4)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    try:
        wait_for(
            lambda: [p for p in worker_pods(kube, ns, cluster) if p.status.phase == "Running"][1:],
            "the Ray autoscaler to add a second worker pod",
            SCALE_SECONDS,
        )
        worker_added = time.monotonic() - started
        wait_for(
            lambda: len(reports_by_replica(url, 2)) == 2,
            "a second Serve LLM replica answering",
            SCALE_SECONDS,
        )
        replica_added = time.monotonic() - started
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=REQUEST_SECONDS + HOLD_SECONDS)
    assert answered, "no held request was answered"
    record(
        "vllm autoscale out",
        **timings,
        worker_added_s=round(worker_added, 1),
        replica_added_s=round(replica_added, 1),
        held_answers=len(answered),
    )
