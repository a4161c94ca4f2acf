"""Ray runs for real: LLMDeployments on the local cluster's real kubelet node (e2e/node.sh).

KubeRay creates real pods from what the operator renders, Ray starts in them, KubeRay
submits the Serve config to the head's dashboard and reports the RayService Ready, and
the endpoint answers. The only stand-in is the inference engine: with no GPU here, the
Serve application is the small OpenAI-compatible app in images/ray-local/standin
(`engine.type: custom`), which asks Ray for the GPU bundles of the rendered layout and
answers with deterministic tokens. Ray sees logical GPUs (the node advertises
nvidia.com/gpu; KubeRay passes num-gpus to `ray start`).

Each test's namespace pins its pods to the real node (PodNodeSelector and
PodTolerationRestriction annotations) and nothing else lands there.
"""

from __future__ import annotations

import contextlib
import json
import re
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException
from standin import quickstart, standin_deployment
from support import Body, Kube, condition, head_pods, serving_cluster_name, wait_for, worker_pods
from support import scrape as support_scrape

from llm_operator.render import names

pytestmark = pytest.mark.ray

MODEL = quickstart()["spec"]["model"]["name"]
NAME = quickstart()["metadata"]["name"]
# Nothing is pulled, but a 2-core node starts a head, a worker and Serve's replicas one
# after another; KubeRay's own probes and retries add to it.
READY_SECONDS = 420.0
SCALE_SECONDS = 300.0
REQUEST_SECONDS = 30.0
# The stand-in answers with the prompt's words, cut at max_tokens: a long prompt shows it.
LONG_PROMPT = " ".join(f"word{index}" for index in range(20))


# --- deployments ---------------------------------------------------------------------
def ray_service(kube: Kube, namespace: str, name: str) -> Body:
    return kube.ray("rayservices", namespace, names.ray_service_name(name)) or {}


def kuberay_ready(kube: Kube, namespace: str, name: str) -> Body | None:
    """The RayService once KubeRay itself marks it Ready (no simulation here)."""
    service = ray_service(kube, namespace, name)
    ready = condition(service, "Ready")
    return service if ready and ready.get("status") == "True" else None


def wait_ready(kube: Kube, namespace: str, name: str) -> Body:
    wait_for(
        lambda: kuberay_ready(kube, namespace, name),
        f"KubeRay to report RayService {namespace}/{name} Ready",
        READY_SECONDS,
    )

    seen: dict[str, Any] = {}

    def llmd_ready() -> Body | None:
        body = kube.get_llmd(namespace, name)
        status = body.get("status") or {}
        replicas = status.get("replicas") or {}
        ready = status.get("phase") == "Ready" and status.get("endpoint")
        # KubeRay counts the ready workers in a later status update than Ready itself.
        if ready and replicas.get("ready") == replicas.get("desired"):
            return body
        seen.update(llmd=status, rayservice=ray_service(kube, namespace, name).get("status"))
        return None

    try:
        return wait_for(llmd_ready, f"LLMDeployment {namespace}/{name} Ready, every replica", 120)
    except AssertionError as timeout:
        # What both sides last said: the message CI keeps when this wait times out.
        raise AssertionError(f"{timeout}\nlast seen: {json.dumps(seen, default=str)}") from None


def serve_service(kube: Kube, namespace: str, name: str) -> Any:
    return kube.core.read_namespaced_service(names.serve_service_name(name), namespace)


def base_url(kube: Kube, namespace: str, name: str) -> str:
    """The serve Service's ClusterIP, reached from the host through kube-proxy."""
    service = serve_service(kube, namespace, name)
    port = next(p.port for p in service.spec.ports if p.name == "serve")
    return f"http://{service.spec.cluster_ip}:{port}"


def answering_url(kube: Kube, namespace: str, name: str = NAME) -> str:
    """The endpoint of a deployment once it is Ready and its Serve app answers."""
    wait_ready(kube, namespace, name)
    url = base_url(kube, namespace, name)
    wait_for(lambda: answers(url), "the endpoint to answer", 120)
    return url


# --- HTTP ----------------------------------------------------------------------------
def http(method: str, url: str, body: Body | None = None, timeout: float = REQUEST_SECONDS) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        raw = response.read().decode()
    return json.loads(raw)


def chat(url: str, content: str = "Hello", **extra: Any) -> Body:
    body = {"model": MODEL, "messages": [{"role": "user", "content": content}], **extra}
    answer: Body = http("POST", f"{url}/v1/chat/completions", body)
    return answer


def answers(url: str, content: str = "Hello") -> Body | None:
    """A chat completion, or None while the endpoint does not answer yet."""
    try:
        return chat(url, content)
    except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError):
        return None


def through_api_server(
    kube: Kube, namespace: str, service: str, path: str, body: Body | None = None
) -> Any:
    """The same endpoint through the API server's service proxy, with the suite's own
    credentials (kubectl's `--raw` sends no JSON content type, which the app refuses)."""
    settings = kube.api.configuration
    context = ssl.create_default_context(cafile=settings.ssl_ca_cert)
    if settings.cert_file:
        context.load_cert_chain(settings.cert_file, settings.key_file)
    headers = {"Content-Type": "application/json", **settings.api_key}
    url = f"{settings.host}/api/v1/namespaces/{namespace}/services/{service}:serve/proxy{path}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers=headers)
    with urllib.request.urlopen(request, context=context, timeout=REQUEST_SECONDS) as response:
        return json.loads(response.read().decode())


def unreachable_neighbours() -> str:
    """The addresses this host failed to resolve on its links: after "No route to host",
    whether the request went to a pod IP (DNAT to a gone backend) or to the ClusterIP
    itself (no DNAT: the Service range is routed to the pod bridge). Empty off the node."""
    try:
        shown = subprocess.run(
            ["ip", "neigh", "show", "nud", "failed"],
            check=False,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return " | ".join(line for line in shown.stdout.splitlines() if line)


@dataclass
class RequestLoop:
    """A bounded request loop in a thread: counts answers and failures with their times."""

    url: str
    concurrency: int = 1
    max_seconds: float = 600.0
    ok: int = 0
    failures: list[tuple[float, str]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _run(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                chat(self.url, max_tokens=4)
            except Exception as exc:  # every failure counts, whatever its kind
                reason = repr(exc)[:200]
                if "No route to host" in reason:
                    reason += f" neighbours: {unreachable_neighbours()}"
                with self._lock:
                    self.failures.append((time.monotonic(), reason))
                self._stop.wait(0.2)
            else:
                with self._lock:
                    self.ok += 1

    def __enter__(self) -> RequestLoop:
        for _ in range(self.concurrency):
            thread = threading.Thread(target=self._run, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=REQUEST_SECONDS + 5)


def record(name: str, **figures: Any) -> None:
    """Measured figures go to the test log (`pytest -s` or the junit/CI output)."""
    print(f"\n[ray-figures] {name}: " + json.dumps(figures, sort_keys=True))


# --- the tests -----------------------------------------------------------------------
def test_quick_start_answers_a_chat_completion(
    kube: Kube, ray_namespace: str, settings: dict[str, str]
) -> None:
    ns = ray_namespace
    started = time.monotonic()
    kube.create_llmd(standin_deployment(ns))
    llmd = wait_ready(kube, ns, NAME)
    ready_after = time.monotonic() - started
    status = llmd["status"]
    assert status["replicas"] == {"desired": 1, "ready": 1}
    assert status["endpoint"] == (
        f"http://{names.ray_service_name(NAME)}-serve-svc.{ns}.svc.cluster.local:8000/v1"
    )
    # The pods run on the real node, the worker with the GPU the layout gives it.
    cluster = serving_cluster_name(kube, ns, NAME)
    for pod in head_pods(kube, ns, cluster) + worker_pods(kube, ns, cluster):
        assert pod.spec.node_name == settings["REAL_NODE_NAME"], pod.metadata.name
        assert pod.status.phase == "Running", pod.metadata.name

    url = base_url(kube, ns, NAME)
    answer = wait_for(lambda: answers(url), "the endpoint to answer", 120)
    first_answer_after = time.monotonic() - started
    assert answer["object"] == "chat.completion"
    assert answer["model"] == MODEL
    text = answer["choices"][0]["message"]["content"]
    assert text and answer["choices"][0]["message"]["role"] == "assistant"
    assert chat(url)["choices"][0]["message"]["content"] == text  # deterministic stand-in
    assert chat(url, LONG_PROMPT, max_tokens=3)["usage"]["completion_tokens"] == 3

    models = http("GET", f"{url}/v1/models")
    assert [m["id"] for m in models["data"]] == [MODEL]

    # The same through the API server's service proxy.
    service = names.serve_service_name(NAME)
    proxied = through_api_server(kube, ns, service, "/v1/models")
    assert [m["id"] for m in proxied["data"]] == [MODEL]
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Hello"}]}
    proxied_chat = through_api_server(kube, ns, service, "/v1/chat/completions", body)
    assert proxied_chat["choices"][0]["message"]["content"] == text

    # kubectl shows it as a user sees it.
    table = subprocess.run(
        ["kubectl", "get", "llmd", "-n", ns, NAME, "--no-headers"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    assert table[:7] == [NAME, MODEL, "L4", "1", "1", "1", "Ready"], table
    assert table[7] == status["endpoint"]
    record("quick start", ready_s=round(ready_after, 1), answer_s=round(first_answer_after, 1))


def test_streaming_chat_ends_with_done(kube: Kube, ray_namespace: str) -> None:
    ns = ray_namespace
    kube.create_llmd(standin_deployment(ns))
    url = answering_url(kube, ns)
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "stream": True}
    request = urllib.request.Request(
        f"{url}/v1/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=REQUEST_SECONDS) as response:
        assert response.headers["Content-Type"].startswith("text/event-stream")
        events = [line for line in response.read().decode().split("\n\n") if line]
    assert events[-1] == "data: [DONE]"
    chunks = [json.loads(event.removeprefix("data: ")) for event in events[:-1]]
    assert chunks and all(c["object"] == "chat.completion.chunk" for c in chunks)
    streamed = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert streamed == chat(url, content="Hi")["choices"][0]["message"]["content"]


def test_serve_change_in_place_and_cluster_change_by_new_cluster(
    kube: Kube, ray_namespace: str
) -> None:
    ns = ray_namespace
    kube.create_llmd(standin_deployment(ns, app_args={"max_tokens": 5}))
    url = answering_url(kube, ns)
    assert chat(url, LONG_PROMPT)["usage"]["completion_tokens"] == 5
    before = serving_cluster_name(kube, ns, NAME)

    # A Serve-only change: KubeRay applies it to the running cluster.
    kube.patch_llmd(ns, NAME, {"spec": {"engine": {"args": {"max_tokens": 9}}}})
    wait_for(
        lambda: (a := answers(url, LONG_PROMPT)) and a["usage"]["completion_tokens"] == 9,
        "the new Serve config to answer",
        SCALE_SECONDS,
    )
    assert serving_cluster_name(kube, ns, NAME) == before
    assert kube.rays("rayclusters", ns) and len(kube.rays("rayclusters", ns)) == 1

    # A cluster change (an env var): KubeRay builds a new cluster, switches, drops the old.
    env = [{"name": "LLMOP_E2E_GENERATION", "value": "2"}]
    with RequestLoop(url) as loop:
        started = time.monotonic()
        kube.patch_llmd(ns, NAME, {"spec": {"rayCluster": {"env": env}}})

        def switched() -> str | None:
            active = (ray_service(kube, ns, NAME).get("status") or {}).get(
                "activeServiceStatus"
            ) or {}
            name = active.get("rayClusterName")
            return name if name and name != before else None

        after = wait_for(switched, "KubeRay to switch to a new cluster", READY_SECONDS)
        switch_seconds = time.monotonic() - started
        wait_for(
            lambda: (
                [c for c in kube.rays("rayclusters", ns) if c["metadata"]["name"] == before] == []
            ),
            "the old cluster to go",
            READY_SECONDS,
        )
        wait_ready(kube, ns, NAME)
    record(
        "upgrade",
        switch_s=round(switch_seconds, 1),
        requests_ok=loop.ok,
        requests_failed=len(loop.failures),
        failures=loop.failures[:5],
    )
    assert after != before
    assert loop.ok > 0
    assert loop.failures == [], loop.failures[:5]


def test_layout_spanning_two_worker_pods_is_placed_across_both(
    kube: Kube, ray_namespace: str, settings: dict[str, str]
) -> None:
    """TP 2 x PP 2 on nodes of 2 GPUs: one replica, two hosts, four bundles packed on both."""
    ns = ray_namespace
    kube.create_llmd(
        standin_deployment(ns, tensor_parallel=2, pipeline_parallel=2, gpus_per_node=2)
    )
    wait_ready(kube, ns, NAME)
    cluster = serving_cluster_name(kube, ns, NAME)
    workers = worker_pods(kube, ns, cluster)
    assert len(workers) == 2
    assert all(pod.spec.node_name == settings["REAL_NODE_NAME"] for pod in workers)
    url = base_url(kube, ns, NAME)
    wait_for(lambda: answers(url), "the endpoint to answer", 120)

    placement = http("GET", f"{url}/debug/placement")
    assert placement["strategy"] == "PACK"
    assert len(placement["bundles"]) == 4
    assert all(bundle.get("GPU") == 1 for bundle in placement["bundles"])
    actors = placement["bundle_actors"]
    assert len(actors) == 4
    # Each engine worker holds one logical GPU; two per pod, on both pods.
    assert all(len(actor["gpu_ids"]) == 1 for actor in actors)
    assert {actor["hostname"] for actor in actors} == {pod.metadata.name for pod in workers}
    for pod in workers:
        on_pod = [a for a in actors if a["hostname"] == pod.metadata.name]
        assert len(on_pod) == 2
        assert len({str(a["gpu_ids"]) for a in on_pod}) == 2


DASHBOARD = Path(__file__).resolve().parent.parent / "charts/llm-operator/dashboards"


def dashboard_serve_metrics() -> set[str]:
    """The Serve series the shipped dashboard queries (vLLM's need the real engine)."""
    text = "".join(path.read_text(encoding="utf-8") for path in DASHBOARD.glob("*.json"))
    return set(re.findall(r"\bray_serve_[a-z_]+", text))


def scrape(url: str) -> set[str]:
    """The sample names (with _total, _bucket) a metrics endpoint serves."""
    return {name for name, _ in support_scrape(url, REQUEST_SECONDS)}


def annotated_target(pod: Any) -> str:
    annotations = pod.metadata.annotations
    assert annotations["prometheus.io/scrape"] == "true", pod.metadata.name
    port, path = annotations["prometheus.io/port"], annotations["prometheus.io/path"]
    return f"http://{pod.status.pod_ip}:{port}{path}"


def test_prometheus_annotations_point_at_ray_and_serve_metrics(
    kube: Kube, ray_namespace: str
) -> None:
    ns = ray_namespace
    kube.create_llmd(standin_deployment(ns))
    url = answering_url(kube, ns)
    cluster = serving_cluster_name(kube, ns, NAME)
    (head,) = head_pods(kube, ns, cluster)
    (worker,) = worker_pods(kube, ns, cluster)
    wanted = dashboard_serve_metrics()
    assert wanted, "the dashboard queries no Serve series"

    def every_dashboard_series() -> set[str] | None:
        # Ray exports a replica's series after it served requests, every few seconds.
        for _ in range(3):
            chat(url)
        seen = scrape(annotated_target(head)) | scrape(annotated_target(worker))
        return seen if wanted <= seen else None

    seen = wait_for(every_dashboard_series, f"the dashboard's Serve series {wanted}", 120)
    # Each pod's own Ray node series, on the port its annotations name.
    assert any(n.startswith("ray_node_") for n in scrape(annotated_target(head)))
    assert any(n.startswith("ray_node_") for n in scrape(annotated_target(worker)))
    assert "ray_serve_num_http_requests_total" in seen


def phase_events(kube: Kube, namespace: str, name: str) -> list[str]:
    events = kube.core.list_namespaced_event(
        namespace, field_selector=f"involvedObject.name={name},involvedObject.kind=LLMDeployment"
    ).items
    return [event.reason for event in events]


@contextlib.contextmanager
def under_load(url: str) -> Iterator[RequestLoop]:
    with RequestLoop(url, concurrency=2) as loop:
        yield loop
    record("load", requests_ok=loop.ok, requests_failed=len(loop.failures))


@pytest.mark.parametrize("node_type", ["worker", "head"])
def test_a_deleted_pod_is_replaced_and_the_deployment_is_ready_again(
    kube: Kube, ray_namespace: str, node_type: str
) -> None:
    ns = ray_namespace
    kube.create_llmd(standin_deployment(ns))
    url = answering_url(kube, ns)
    cluster = serving_cluster_name(kube, ns, NAME)
    pick: Callable[[], list[Any]] = {
        "worker": lambda: worker_pods(kube, ns, cluster),
        "head": lambda: head_pods(kube, ns, cluster),
    }[node_type]
    (victim,) = pick()
    with under_load(url) as loop:
        started = time.monotonic()
        kube.core.delete_namespaced_pod(victim.metadata.name, ns, grace_period_seconds=0)

        def replaced() -> bool:
            fresh = [p for p in pick() if p.metadata.uid != victim.metadata.uid]
            return bool(fresh) and all(
                p.status.phase == "Running"
                and all(c.ready for c in (p.status.container_statuses or []))
                for p in fresh
            )

        wait_for(replaced, f"a new {node_type} pod", READY_SECONDS)
        # The deployment leaves Ready while Ray recovers, then comes back.
        wait_for(
            lambda: (
                "Ready" in phase_events(kube, ns, NAME)
                and kube.get_llmd(ns, NAME)["status"]["phase"] == "Ready"
                and answers(url)
            ),
            "the deployment to be Ready and answer again",
            READY_SECONDS,
        )
        recovered = time.monotonic() - started
    reasons = phase_events(kube, ns, NAME)
    record(f"{node_type} deleted", recovered_s=round(recovered, 1), phase_events=reasons)
    assert {"Progressing", "Ready"} <= set(reasons) or {"Degraded", "Ready"} <= set(reasons)
    assert loop.ok > 0


def serve_replicas(url: str) -> int:
    """Distinct Serve replicas that answered a few placement probes."""
    seen = set()
    for _ in range(8):
        with contextlib.suppress(urllib.error.URLError, TimeoutError, ConnectionError):
            seen.add(http("GET", f"{url}/debug/placement")["replica_id"])
    return len(seen)


def test_serve_and_the_ray_autoscaler_scale_the_worker_group(
    kube: Kube, ray_namespace: str
) -> None:
    ns = ray_namespace
    app_args = {
        "autoscaling_config": {
            "min_replicas": 1,
            "max_replicas": 2,
            "target_ongoing_requests": 1,
            "upscale_delay_s": 1,
            "downscale_delay_s": 10,
        },
        "max_ongoing_requests": 4,
        "response_delay_s": 0.5,
    }
    kube.create_llmd(
        standin_deployment(
            ns, autoscaling={"minReplicas": 1, "maxReplicas": 2}, app_args=app_args, replicas=None
        )
    )
    url = answering_url(kube, ns)
    cluster = serving_cluster_name(kube, ns, NAME)
    assert len(worker_pods(kube, ns, cluster)) == 1

    with RequestLoop(url, concurrency=6, max_seconds=SCALE_SECONDS) as loop:
        started = time.monotonic()
        wait_for(
            lambda: (
                len([p for p in worker_pods(kube, ns, cluster) if p.status.phase == "Running"]) == 2
            ),
            "the Ray autoscaler to add a second worker pod",
            SCALE_SECONDS,
        )
        scaled_up = time.monotonic() - started
        wait_for(lambda: serve_replicas(url) == 2, "two Serve replicas answering", SCALE_SECONDS)
    record("scale up", worker_added_s=round(scaled_up, 1), requests_ok=loop.ok)
    assert loop.ok > 0

    started = time.monotonic()
    wait_for(
        lambda: len(worker_pods(kube, ns, cluster)) == 1,
        "the worker group to scale back down",
        SCALE_SECONDS,
    )
    record("scale down", worker_removed_s=round(time.monotonic() - started, 1))
    assert answers(url)


def test_scale_to_zero_and_back_on_the_next_request(kube: Kube, ray_namespace: str) -> None:
    ns = ray_namespace
    app_args = {
        "autoscaling_config": {
            "min_replicas": 0,
            "max_replicas": 1,
            "target_ongoing_requests": 1,
            "downscale_delay_s": 5,
            "upscale_delay_s": 0,
        },
    }
    kube.create_llmd(
        standin_deployment(
            ns, autoscaling={"minReplicas": 0, "maxReplicas": 1}, app_args=app_args, replicas=None
        )
    )
    wait_for(
        lambda: kuberay_ready(kube, ns, NAME),
        "KubeRay to report the RayService Ready with no replica",
        READY_SECONDS,
    )
    cluster = serving_cluster_name(kube, ns, NAME)
    wait_for(lambda: worker_pods(kube, ns, cluster) == [], "no worker pod", SCALE_SECONDS)
    url = base_url(kube, ns, NAME)
    started = time.monotonic()
    # The proxy on the head holds the request while Serve and the autoscaler bring a
    # worker and a replica up.
    answer: Body | None = None
    deadline = started + SCALE_SECONDS
    while answer is None and time.monotonic() < deadline:
        try:
            answer = http(
                "POST",
                f"{url}/v1/chat/completions",
                {"model": MODEL, "messages": [{"role": "user", "content": "wake"}]},
                timeout=SCALE_SECONDS,
            )
        except (urllib.error.URLError, ConnectionError, TimeoutError, ApiException):
            time.sleep(0.5)
    cold_start = time.monotonic() - started
    assert answer is not None, "no answer from zero replicas"
    assert answer["choices"][0]["message"]["content"]
    assert len(worker_pods(kube, ns, cluster)) == 1
    record("scale from zero", cold_start_s=round(cold_start, 1))
