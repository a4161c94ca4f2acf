"""Losing the Ray head on the real node (e2e/node.sh), with and without GCS fault tolerance.

Without it, Ray's cluster state lives in the head's GCS only: when a new head comes up,
the workers' raylets cannot rejoin, restart, and Serve has no replica for a while. With
`spec.rayCluster.gcsFaultTolerance`, KubeRay points the head's GCS at a Redis (here a
Redis pod of the test's namespace, from the image `images/ray-local/build.sh redis`
builds), the new head reloads the state, the workers stay, and their Serve proxies and
replicas keep answering.

Each test records what it measured (`[ray-figures]` lines, `pytest -s`): failed requests
of a bounded request loop, the time to a new head and to Ready, worker restarts (the
worker pods' restartCount) and whether Ray kept the workers' node ids. Fault tolerance is
asserted (no failed request, no worker restart); the run without it records today's
outage for comparison. A third test deletes the Redis pod and records what the operator
and KubeRay report.

The head is pinned to the real node by `spec.rayCluster.head.nodeSelector` and tolerates
its taint by `tolerations`, and the autoscaler sidecar runs with the operator's default
size: the placement and sizing fields on a real kubelet.

KubeRay's GCS fault tolerance adds a finalizer to each RayCluster: its deletion runs a
Job that empties the cluster's keys in Redis. That Job cannot be created in a namespace
being deleted, so the fixture deletes the LLMDeployment and waits for its RayClusters
to go, with Redis still up, before the namespace goes.
"""

from __future__ import annotations

import contextlib
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from standin import NODE_ENV, real_node_annotations, standin_deployment
from support import (
    RAY_TEST_SECONDS,
    Body,
    Kube,
    condition,
    head_pods,
    serving_cluster_name,
    wait_for,
    worker_pods,
)
from test_ray import (
    NAME,
    READY_SECONDS,
    RequestLoop,
    answering_url,
    answers,
    kuberay_ready,
    ray_service,
    record,
)

from conftest import pool_namespace
from llm_operator.api.constants import GROUP, PLURAL, VERSION
from llm_operator.render import names
from llm_operator.settings import DEFAULT_AUTOSCALER_RESOURCES

pytestmark = pytest.mark.ray

REDIS = "redis"
REDIS_SECRET = "redis-auth"
REDIS_PASSWORD = "e2e-not-a-secret"
REDIS_PORT = 6379
REDIS_LABELS = {"app.kubernetes.io/name": "redis", "app.kubernetes.io/part-of": "llmop-e2e"}
REDIS_READY_SECONDS = 120.0
# After the new head is Ready: long enough for a raylet that cannot rejoin to give up
# (Ray's GCS reconnect timeout is 60 s without fault tolerance) and for its restart.
SETTLE_SECONDS = 90.0
# How long the test watches after the Redis pod is deleted, before waiting for recovery.
REDIS_LOSS_WATCH_SECONDS = 240.0
# KubeRay's Redis cleanup Job runs at most 300 s (activeDeadlineSeconds) before the
# finalizer goes anyway; the head pod's termination comes first.
CLEANUP_SECONDS = 420.0
SAMPLE_SECONDS = 1.0


def node_image(key: str) -> str:
    """An image e2e/node.sh built and imported into the node's containerd."""
    assert NODE_ENV.exists(), f"{NODE_ENV} is missing: the real node is not up (e2e/node.sh up)"
    lines = NODE_ENV.read_text(encoding="utf-8").split()
    images = dict(line.split("=", 1) for line in lines if "=" in line)
    if key not in images:
        pytest.fail(
            f"{key} is not in {NODE_ENV}: e2e/node.sh up must build the image "
            "(images/ray-local/build.sh redis), import it and write the line"
        )
    return images[key]


# --- the namespace, Redis, the deployment ---------------------------------------------------
def _delete_deployments_first(kube: Kube, namespace: str) -> None:
    """LLMDeployments go, then KubeRay's RayClusters (and their Redis cleanup Jobs), while
    the namespace and Redis are still there."""
    for llmd in kube.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)[
        "items"
    ]:
        with contextlib.suppress(ApiException):
            kube.delete_llmd(namespace, llmd["metadata"]["name"])
    wait_for(
        lambda: not kube.rays("rayclusters", namespace) and not kube.rays("rayservices", namespace),
        f"the RayClusters of {namespace} (and KubeRay's Redis cleanup) to finish",
        CLEANUP_SECONDS,
    )


@pytest.fixture
def gcs_namespace(kube: Kube, settings: dict[str, str]) -> Iterator[str]:
    """A pool namespace whose pods all go to the real node; its deployments are deleted
    before the namespace (see the module's docstring)."""
    with pool_namespace(kube) as name:
        annotations = real_node_annotations(settings["REAL_NODE_TAINT"])
        kube.core.patch_namespace(name, {"metadata": {"annotations": annotations}})
        try:
            yield name
        finally:
            _delete_deployments_first(kube, name)


def redis_objects(namespace: str, image: str) -> tuple[Body, Body, Body]:
    """A password Secret, a one-replica Redis Deployment (nothing persisted: a new pod
    starts empty) and its Service."""
    meta = {"namespace": namespace, "labels": REDIS_LABELS}
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": REDIS_SECRET, **meta},
        "stringData": {"password": REDIS_PASSWORD},
    }
    password = {"secretKeyRef": {"name": REDIS_SECRET, "key": "password"}}
    container = {
        "name": "redis",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "args": [
            *("redis-server", "--port", str(REDIS_PORT), "--protected-mode", "no"),
            *("--save", "", "--appendonly", "no", "--dir", "/data"),
            *("--requirepass", "$(REDIS_PASSWORD)"),
        ],
        # REDISCLI_AUTH: redis-cli's password, for the probe.
        "env": [
            {"name": "REDIS_PASSWORD", "valueFrom": password},
            {"name": "REDISCLI_AUTH", "valueFrom": password},
        ],
        "ports": [{"name": "redis", "containerPort": REDIS_PORT}],
        "readinessProbe": {
            "exec": {"command": ["redis-cli", "-p", str(REDIS_PORT), "ping"]},
            "periodSeconds": 2,
        },
        "resources": {
            "requests": {"cpu": "50m", "memory": "64Mi"},
            "limits": {"cpu": "500m", "memory": "256Mi"},
        },
        "securityContext": {
            "runAsNonRoot": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [{"name": "data", "mountPath": "/data"}],
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": REDIS, **meta},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": REDIS_LABELS},
            "template": {
                "metadata": {"labels": REDIS_LABELS},
                "spec": {
                    "containers": [container],
                    "volumes": [{"name": "data", "emptyDir": {}}],
                    "terminationGracePeriodSeconds": 5,
                },
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": REDIS, **meta},
        "spec": {
            "selector": REDIS_LABELS,
            "ports": [{"name": "redis", "port": REDIS_PORT, "targetPort": "redis"}],
        },
    }
    return secret, deployment, service


def redis_pods(kube: Kube, namespace: str) -> list[client.V1Pod]:
    selector = ",".join(f"{k}={v}" for k, v in REDIS_LABELS.items())
    return kube.pods(namespace, selector)


def ready(pod: client.V1Pod) -> bool:
    return pod.metadata.deletion_timestamp is None and any(
        c.type == "Ready" and c.status == "True" for c in (pod.status.conditions or [])
    )


def start_redis(kube: Kube, namespace: str) -> client.V1Pod:
    secret, deployment, service = redis_objects(namespace, node_image("REDIS_LOCAL_IMAGE"))
    kube.core.create_namespaced_secret(namespace, secret)
    client.AppsV1Api(kube.api).create_namespaced_deployment(namespace, deployment)
    kube.core.create_namespaced_service(namespace, service)
    (pod,) = wait_for(
        lambda: [p for p in redis_pods(kube, namespace) if ready(p)] or None,
        "the Redis pod to be Ready",
        REDIS_READY_SECONDS,
    )
    return pod


def gcs_deployment(namespace: str, settings: dict[str, str], *, fault_tolerant: bool) -> Body:
    """The stood-in quick start with its head pinned to the real node; with fault
    tolerance, the namespace's Redis and its password by Secret."""
    body = standin_deployment(namespace)
    cluster = body["spec"]["rayCluster"]
    cluster["head"]["nodeSelector"] = {"kubernetes.io/hostname": settings["REAL_NODE_NAME"]}
    taint = settings["REAL_NODE_TAINT"]
    cluster["head"]["tolerations"] = [{"key": taint, "operator": "Exists", "effect": "NoSchedule"}]
    if fault_tolerant:
        cluster["gcsFaultTolerance"] = {
            "redisAddress": f"{REDIS}.{namespace}.svc.cluster.local:{REDIS_PORT}",
            "redisPasswordSecretRef": {"name": REDIS_SECRET, "key": "password"},
        }
    return body


# --- what to observe -------------------------------------------------------------------------
def _container(pod: client.V1Pod, name: str) -> client.V1Container:
    (found,) = [c for c in pod.spec.containers if c.name == name]
    return found


def env_names(container: client.V1Container) -> dict[str, client.V1EnvVar]:
    return {e.name: e for e in container.env or []}


def restarts(pods: list[client.V1Pod]) -> dict[str, int]:
    """restartCount of every container, by pod/container."""
    return {
        f"{pod.metadata.name}/{status.name}": status.restart_count
        for pod in pods
        for status in pod.status.container_statuses or []
    }


def ray_nodes(kube: Kube, namespace: str) -> list[Body] | None:
    """Ray's own node table (the state API on the head's dashboard, through the RayService's
    head Service), or None while it does not answer."""
    try:
        service = kube.core.read_namespaced_service(
            f"{names.ray_service_name(NAME)}-head-svc", namespace
        )
        port = next(p.port for p in service.spec.ports if p.name == "dashboard")
        url = f"http://{service.spec.cluster_ip}:{port}/api/v0/nodes?limit=100"
        with urllib.request.urlopen(url, timeout=10) as response:
            reply = json.loads(response.read().decode())
    except (ApiException, StopIteration, urllib.error.URLError, TimeoutError, ValueError, OSError):
        return None

    def rows(node: Any) -> list[Body] | None:
        if (
            isinstance(node, list)
            and node
            and all(isinstance(r, dict) and "node_id" in r for r in node)
        ):
            return node
        children = (
            node.values() if isinstance(node, dict) else node if isinstance(node, list) else []
        )
        for child in children:
            if (found := rows(child)) is not None:
                return found
        return None

    return rows(reply)


def alive_worker_node_ids(nodes: list[Body] | None) -> set[str] | None:
    if nodes is None:
        return None
    return {
        str(n["node_id"]) for n in nodes if n.get("state") == "ALIVE" and not n.get("is_head_node")
    }


def container_usage(kube: Kube, node: str, namespace: str, pod: str) -> dict[str, Body] | None:
    """CPU (millicores) and working-set memory (MiB) per container, from the kubelet's
    summary API through the API server; None when the kubelet cannot be reached."""
    try:
        response = kube.core.connect_get_node_proxy_with_path(
            node, "stats/summary", _preload_content=False
        )
        summary = json.loads(response.data.decode())
    except (ApiException, ValueError, OSError):
        return None
    for entry in summary.get("pods", []):
        ref = entry.get("podRef", {})
        if (ref.get("namespace"), ref.get("name")) == (namespace, pod):
            return {
                c["name"]: {
                    "cpu_m": round((c.get("cpu") or {}).get("usageNanoCores", 0) / 1e6),
                    "memory_mib": round((c.get("memory") or {}).get("workingSetBytes", 0) / 2**20),
                }
                for c in entry.get("containers", [])
            }
    return None


def serve_addresses(kube: Kube, namespace: str) -> list[str]:
    """`pod=IP` of every endpoint of the serve Service, as kube-proxy is told them: which
    backend a failed request could have gone to."""
    service = names.serve_service_name(NAME)
    slices = client.DiscoveryV1Api(kube.api).list_namespaced_endpoint_slice(
        namespace, label_selector=f"kubernetes.io/service-name={service}"
    )
    return sorted(
        f"{endpoint.target_ref.name if endpoint.target_ref else '-'}="
        f"{','.join(endpoint.addresses)}"
        f"{'' if endpoint.conditions and endpoint.conditions.ready else ' (not ready)'}"
        for piece in slices.items
        for endpoint in piece.endpoints or []
    )


@dataclass
class Timeline:
    """What the operator and KubeRay report, sampled; a line whenever it changes."""

    kube: Kube
    namespace: str
    started: float = field(default_factory=time.monotonic)
    changes: list[tuple[float, Body]] = field(default_factory=list)

    def state(self) -> Body:
        llmd = self.kube.get_llmd(self.namespace, NAME)
        st = llmd.get("status") or {}
        ready_cond = condition(llmd, "Ready") or {}
        service = ray_service(self.kube, self.namespace, NAME)
        service_ready = condition(service, "Ready") or {}
        return {
            "phase": st.get("phase"),
            "ready": f"{ready_cond.get('status')}/{ready_cond.get('reason')}",
            "gcsFaultTolerance": st.get("gcsFaultTolerance"),
            "replicasReady": (st.get("replicas") or {}).get("ready"),
            "rayService": f"{service_ready.get('status')}/{service_ready.get('reason')}",
            "serveEndpoints": (service.get("status") or {}).get("numServeEndpoints"),
            "serveAddresses": serve_addresses(self.kube, self.namespace),
        }

    def sample(self) -> None:
        with contextlib.suppress(ApiException):
            now = self.state()
            if not self.changes or self.changes[-1][1] != now:
                self.changes.append((round(time.monotonic() - self.started, 1), now))

    def watch(self, probe: Callable[[], Any], what: str, timeout: float) -> Any:
        """wait_for, sampling the timeline on every poll."""

        def sampled() -> Any:
            self.sample()
            return probe()

        return wait_for(sampled, what, timeout)


def warning_events(kube: Kube, namespace: str) -> dict[str, int]:
    """Warning Events of the namespace, counted by kind of object and reason."""
    counted: dict[str, int] = {}
    for event in kube.core.list_namespaced_event(namespace).items:
        if event.type == "Warning":
            key = f"{event.involved_object.kind}/{event.reason}"
            counted[key] = counted.get(key, 0) + (event.count or 1)
    return counted


def failure_window(loop: RequestLoop, started: float) -> Body:
    times = [round(t - started, 1) for t, _ in loop.failures]
    return {
        "requests_ok": loop.ok,
        "requests_failed": len(loop.failures),
        "first_failure_s": times[0] if times else None,
        "last_failure_s": times[-1] if times else None,
        "failures": [reason for _, reason in loop.failures[:3]],
    }


# --- the tests -----------------------------------------------------------------------------
def assert_head_as_asked(
    kube: Kube, ns: str, settings: dict[str, str], head: client.V1Pod, *, fault_tolerant: bool
) -> None:
    """The head as placed and sized, and as KubeRay built it for GCS fault tolerance."""
    assert head.spec.node_name == settings["REAL_NODE_NAME"]
    assert head.spec.node_selector["kubernetes.io/hostname"] == settings["REAL_NODE_NAME"]
    assert any(t.key == settings["REAL_NODE_TAINT"] for t in head.spec.tolerations)
    # No GPU toleration as rendered (the namespace's default tolerations add one to its pods).
    template = ray_service(kube, ns, NAME)["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]
    assert [t["key"] for t in template["spec"]["tolerations"]] == [settings["REAL_NODE_TAINT"]]
    autoscaler = _container(head, "autoscaler")
    assert autoscaler.resources.requests == DEFAULT_AUTOSCALER_RESOURCES["requests"]
    assert autoscaler.resources.limits == DEFAULT_AUTOSCALER_RESOURCES["limits"]
    ray_head = env_names(_container(head, names.HEAD_CONTAINER))
    annotations = head.metadata.annotations or {}
    status = kube.get_llmd(ns, NAME)["status"]
    if fault_tolerant:
        assert status["gcsFaultTolerance"] == "Enabled"
        assert annotations.get("ray.io/ft-enabled") == "true"
        assert ray_head["RAY_REDIS_ADDRESS"].value.startswith(f"{REDIS}.{ns}.svc")
        assert ray_head["REDIS_PASSWORD"].value_from.secret_key_ref.name == REDIS_SECRET
    else:
        assert status["gcsFaultTolerance"] == "Disabled"
        assert annotations.get("ray.io/ft-enabled") == "false"
        assert "RAY_REDIS_ADDRESS" not in ray_head


def lose_the_head(
    kube: Kube, ns: str, cluster: str, *, url: str, head: client.V1Pod, timeline: Timeline
) -> Body:
    """Delete the head pod as `kubectl delete` does (its grace period) and time the way
    back: the old pod gone, a new one created and Ready, the deployment Ready and
    answering, then a settle period for late worker restarts. Seconds since the delete."""
    started = timeline.started = time.monotonic()
    kube.core.delete_namespaced_pod(head.metadata.name, ns)

    def heads(old: bool) -> list[client.V1Pod]:
        uid = head.metadata.uid
        return [p for p in head_pods(kube, ns, cluster) if (p.metadata.uid == uid) == old]

    figures: Body = {}
    steps: list[tuple[str, Callable[[], Any]]] = [
        ("old_head_gone_s", lambda: not heads(old=True)),
        ("new_head_created_s", lambda: heads(old=False)),
        ("new_head_ready_s", lambda: [p for p in heads(old=False) if ready(p)]),
        (
            "ready_again_s",
            lambda: (
                kuberay_ready(kube, ns, NAME)
                and kube.get_llmd(ns, NAME)["status"].get("phase") == "Ready"
                and answers(url)
            ),
        ),
    ]
    for key, probe in steps:
        timeline.watch(probe, key.removesuffix("_s").replace("_", " "), READY_SECONDS)
        figures[key] = round(time.monotonic() - started, 1)
    settle_until = time.monotonic() + SETTLE_SECONDS
    timeline.watch(
        lambda: time.monotonic() > settle_until, "the settle period", SETTLE_SECONDS + 30
    )
    return figures


def serve(
    kube: Kube, ns: str, settings: dict[str, str], *, fault_tolerant: bool
) -> tuple[str, str, client.V1Pod]:
    """Creates the deployment and waits until it answers: its RayCluster's name, its
    endpoint and its head pod."""
    kube.create_llmd(gcs_deployment(ns, settings, fault_tolerant=fault_tolerant))
    url = answering_url(kube, ns)
    cluster = serving_cluster_name(kube, ns, NAME)
    (head,) = head_pods(kube, ns, cluster)
    return cluster, url, head


@pytest.mark.parametrize("fault_tolerant", [True, False], ids=["gcs-ft", "no-gcs-ft"])
def test_the_head_is_lost_and_replaced(
    kube: Kube, gcs_namespace: str, settings: dict[str, str], fault_tolerant: bool
) -> None:
    ns = gcs_namespace
    if fault_tolerant:
        start_redis(kube, ns)
    cluster, url, head = serve(kube, ns, settings, fault_tolerant=fault_tolerant)
    assert_head_as_asked(kube, ns, settings, head, fault_tolerant=fault_tolerant)
    usage = container_usage(kube, settings["REAL_NODE_NAME"], ns, head.metadata.name)

    workers_before = worker_pods(kube, ns, cluster)
    restarts_before = restarts(workers_before)
    nodes_before = alive_worker_node_ids(ray_nodes(kube, ns))
    timeline = Timeline(kube, ns)
    with RequestLoop(url, concurrency=2, max_seconds=4 * READY_SECONDS + SETTLE_SECONDS) as loop:
        wait_for(lambda: loop.ok >= 10, "the request loop's first answers", 60)
        figures = lose_the_head(kube, ns, cluster, url=url, head=head, timeline=timeline)

    workers_after = worker_pods(kube, ns, cluster)
    restarts_after = restarts(workers_after)
    nodes_after = alive_worker_node_ids(ray_nodes(kube, ns))
    worker_restarts = sum(restarts_after.get(k, 0) - v for k, v in restarts_before.items())
    replaced = {p.metadata.uid for p in workers_before} != {p.metadata.uid for p in workers_after}
    kept_node_ids = (
        None if nodes_before is None or nodes_after is None else nodes_before <= nodes_after
    )
    record(
        f"head deleted ({'GCS fault tolerance' if fault_tolerant else 'no GCS fault tolerance'})",
        **figures,
        worker_restarts=worker_restarts,
        worker_pods_replaced=replaced,
        ray_worker_node_ids_kept=kept_node_ids,
        head_usage_before=usage,
        timeline=timeline.changes,
        warnings=warning_events(kube, ns),
        **failure_window(loop, timeline.started),
    )
    assert loop.ok > 0
    if fault_tolerant:
        assert loop.failures == [], failure_window(loop, timeline.started)
        assert worker_restarts == 0, restarts_after
        assert not replaced
        assert kept_node_ids in (True, None), (nodes_before, nodes_after)
        assert kube.get_llmd(ns, NAME)["status"]["gcsFaultTolerance"] == "Enabled"


@pytest.mark.timeout(RAY_TEST_SECONDS + REDIS_LOSS_WATCH_SECONDS + CLEANUP_SECONDS)
def test_the_redis_pod_is_lost(kube: Kube, gcs_namespace: str, settings: dict[str, str]) -> None:
    """Redis goes (and comes back empty, as a Deployment without storage does): recorded,
    not judged, apart from the deployment recovering."""
    ns = gcs_namespace
    redis = start_redis(kube, ns)
    cluster, url, head = serve(kube, ns, settings, fault_tolerant=True)
    before = restarts([head, *worker_pods(kube, ns, cluster)])

    timeline = Timeline(kube, ns)
    with RequestLoop(
        url, concurrency=2, max_seconds=REDIS_LOSS_WATCH_SECONDS + READY_SECONDS
    ) as loop:
        wait_for(lambda: loop.ok >= 10, "the request loop's first answers", 60)
        started = time.monotonic()
        timeline.started = started
        kube.core.delete_namespaced_pod(redis.metadata.name, ns)
        timeline.watch(
            lambda: [
                p for p in redis_pods(kube, ns) if ready(p) and p.metadata.uid != redis.metadata.uid
            ],
            "a new Redis pod to be Ready",
            REDIS_READY_SECONDS,
        )
        redis_back = time.monotonic() - started
        watch_until = started + REDIS_LOSS_WATCH_SECONDS
        timeline.watch(
            lambda: time.monotonic() > watch_until,
            "the watch period",
            REDIS_LOSS_WATCH_SECONDS + 30,
        )
        recovered = timeline.watch(
            lambda: (
                kuberay_ready(kube, ns, NAME)
                and kube.get_llmd(ns, NAME)["status"].get("phase") == "Ready"
                and answers(url)
            ),
            "the deployment to be Ready and answer after Redis came back",
            READY_SECONDS,
        )
        recovered_after = time.monotonic() - started
    pods_now = head_pods(kube, ns, cluster) + worker_pods(kube, ns, cluster)
    after = restarts(pods_now)
    record(
        "redis deleted",
        redis_back_s=round(redis_back, 1),
        recovered_s=round(recovered_after, 1),
        container_restarts={k: after.get(k, 0) - v for k, v in before.items()},
        pods_replaced=sorted(set(after) - set(before)),
        timeline=timeline.changes,
        warnings=warning_events(kube, ns),
        **failure_window(loop, started),
    )
    assert recovered
