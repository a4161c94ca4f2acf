"""The chart's RBAC is exactly what the operator uses, derived from what it does.

The Kubernetes client's transport is replaced by a small fake API server that records
every request, and the controller's handlers run their paths against it: start-up, a
first and a later reconcile in both modes, an existing claim, drift, a serving cluster
whose bounds move, a child's event, the metrics sweep. Each request is read the way the
API server's authorizer reads it (verb, API group, resource, namespace or cluster-wide).
A guard checks that every Kubernetes-client method the controller's source calls was
called, so a new call cannot go unrecorded.

kopf's own requests go through kopf's client. They follow from kopf's registry (it lists
and watches each resource that has handlers, and patches its annotations on a resource
with change handlers) and from what kopf does by itself (the notes above `kopf_needs`, below).

The chart must grant the union and nothing else: a verb more fails, as does one less.
"""

from __future__ import annotations

import ast
import copy
import importlib.util
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import kopf
import pytest
from kubernetes import client
from prometheus_client import CollectorRegistry

from conftest import ROOT, SAMPLES, load_one
from fakeapi import (
    NAMESPACE,
    Access,
    CallRecorder,
    FakeApiServer,
    RecordingApiClient,
    access_of,
    claim_path,
    gateway_path,
    llmd_path,
    ray_path,
)
from llm_operator.api.constants import GROUP, PLURAL
from llm_operator.controller import handlers, kube
from llm_operator.controller.metrics import OperatorMetrics, Record, sweep_metrics
from llm_operator.render import names
from llm_operator.settings import OperatorSettings
from test_chart import of_kind, scenario

CONTROLLER = ROOT / "operator" / "src" / "llm_operator" / "controller"
SETTINGS = OperatorSettings()
Body = dict[str, Any]


# --- the controller, through every path ------------------------------------------------
@dataclass
class Run:
    server: FakeApiServer
    clients: kube.Clients
    called: set[str]
    events: list[Access]


def stored_llmd(run: Run, sample: str) -> Body:
    body = load_one(SAMPLES / f"{sample}.yaml")
    body["metadata"]["namespace"] = NAMESPACE
    return run.server.put(llmd_path(body["metadata"]["name"]), body)


def converge(run: Run, memo: kopf.Memo, name: str) -> None:
    body = copy.deepcopy(run.server.objects[llmd_path(name)])
    handlers.converge(body=kopf.Body(body), memo=memo)


def drift(run: Run, path: str) -> None:
    """Someone edits the object: the next reconcile restores it."""
    live = run.server.objects[path]
    live["metadata"]["labels"] = {"edited": "by-hand"}
    if "spec" in live and "serveConfigV2" in live["spec"]:
        live["spec"]["serveConfigV2"] = "edited: by hand\n"
    live["spec"].pop("headGroupSpec", None)


def drive(run: Run, *, clusterwide: bool) -> None:
    memo = kopf.Memo(settings=SETTINGS, clusterwide=clusterwide)
    handlers.configure(settings=kopf.OperatorSettings(), memo=memo)
    handlers.stop_sweeping(memo=memo)

    # Service mode with a model cache: first the claim and the RayService are created.
    service = stored_llmd(run, "llama-8b-l4")["metadata"]["name"]
    converge(run, memo, service)
    # KubeRay made a serving cluster (with its own bounds) and says so in status; the
    # claim and the RayService drifted. A child's event reconciles all of it.
    cluster_name = f"{service}-raycluster-x1"
    made = copy.deepcopy(run.server.objects[ray_path("rayservices", service)])
    cluster = {
        "apiVersion": names.RAY_API_VERSION,
        "kind": "RayCluster",
        "metadata": {"name": cluster_name, "namespace": NAMESPACE,
                     "labels": made["metadata"]["labels"]},
        "spec": copy.deepcopy(made["spec"]["rayClusterConfig"]),
    }  # fmt: skip
    cluster["spec"]["workerGroupSpecs"][0]["maxReplicas"] = 99
    run.server.put(ray_path("rayclusters", cluster_name), cluster)
    run.server.objects[ray_path("rayservices", service)]["status"] = {
        "activeServiceStatus": {"rayClusterName": cluster_name}
    }
    drift(run, ray_path("rayservices", service))
    drift(run, claim_path(names.model_cache_claim(service)))
    event = {"type": "MODIFIED", "object": cluster}
    handlers.on_child_event(event=event, body=kopf.Body(cluster), memo=memo)

    # Cluster mode with two claims: created, then restored after drift on an update.
    batch = stored_llmd(run, "cluster-checkpoints")["metadata"]["name"]
    converge(run, memo, batch)
    drift(run, ray_path("rayclusters", names.ray_cluster_name(batch)))
    llmd = run.server.objects[llmd_path(batch)]
    llmd["metadata"]["generation"] = 2
    llmd["spec"]["engine"]["maxModelLen"] = 4096
    converge(run, memo, batch)

    # A route in: the HTTPRoute is created, its Gateway read; drift on it is restored on
    # its event; without exposure it is deleted.
    exposed = stored_llmd(run, "gateway-route")["metadata"]["name"]
    converge(run, memo, exposed)
    route_path = gateway_path(names.HTTP_ROUTES, names.http_route_name(exposed))
    route = run.server.objects[route_path]
    route["spec"]["hostnames"] = ["edited.example.com"]
    handlers.on_child_event(
        event={"type": "MODIFIED", "object": route}, body=kopf.Body(route), memo=memo
    )
    llmd = run.server.objects[llmd_path(exposed)]
    llmd["metadata"]["generation"] = 2
    del llmd["spec"]["exposure"]
    assert run.server.objects[route_path]["spec"]["hostnames"] == ["llm.example.com"]
    converge(run, memo, exposed)
    assert route_path not in run.server.objects

    # Mode Job: a RayJob created, read back and patched on a spec change while it runs.
    job = stored_llmd(run, "finetune-job")["metadata"]["name"]
    converge(run, memo, job)
    llmd = run.server.objects[llmd_path(job)]
    llmd["metadata"]["generation"] = 2
    llmd["spec"]["job"]["activeDeadlineSeconds"] = 3600
    converge(run, memo, job)

    drive_prefetch(run, memo)

    # The metrics sweep lists what exists.
    metrics = OperatorMetrics(CollectorRegistry())
    metrics.observe(NAMESPACE, service, "uid-gone", Record("Ready", 1, 1, invalid=False))
    assert sweep_metrics(run.clients, clusterwide, metrics) == 1


def drive_prefetch(run: Run, memo: kopf.Memo) -> None:
    """Prefetch: the download Job is created first; its completion (a child event) lets
    the RayService be made; a new revision makes a new Job and deletes the old one."""
    cached = load_one(SAMPLES / "llama-8b-l4.yaml")
    cached["metadata"].update(name="prefetched", namespace=NAMESPACE)
    cached["spec"]["storage"]["modelCache"]["prefetch"] = True
    run.server.put(llmd_path("prefetched"), cached)
    converge(run, memo, "prefetched")
    (first,) = [p for p in run.server.objects if "/jobs/" in p]
    job = run.server.objects[first]
    job["status"] = {"conditions": [{"type": "Complete", "status": "True"}]}
    handlers.on_child_event(
        event={"type": "MODIFIED", "object": job}, body=kopf.Body(job), memo=memo
    )
    assert ray_path("rayservices", "prefetched") in run.server.objects
    llmd = run.server.objects[llmd_path("prefetched")]
    llmd["metadata"]["generation"] = 2
    llmd["spec"]["model"]["revision"] = "v2"
    converge(run, memo, "prefetched")
    assert first not in run.server.objects


def recorded_run(monkeypatch: pytest.MonkeyPatch, *, clusterwide: bool) -> Run:
    server = FakeApiServer()
    api = RecordingApiClient(server)
    called: set[str] = set()
    clients = kube.Clients(
        CallRecorder(client.CustomObjectsApi(api), called),  # type: ignore[arg-type]
        CallRecorder(client.CoreV1Api(api), called),  # type: ignore[arg-type]
        CallRecorder(client.BatchV1Api(api), called),  # type: ignore[arg-type]
    )
    events: list[Access] = []

    def post(*args: Any, **kwargs: Any) -> None:
        # kopf.event and kopf.warn: kopf posts a core v1 Event in the object's namespace.
        events.append(Access("", "events", "create", namespaced=True))

    monkeypatch.setattr(kube, "connect", lambda: clients)
    monkeypatch.setattr(kopf, "event", post)
    monkeypatch.setattr(kopf, "warn", post)
    run = Run(server, clients, called, events)
    drive(run, clusterwide=clusterwide)
    return run


@pytest.fixture(scope="module")
def runs() -> Iterator[dict[bool, Run]]:
    with pytest.MonkeyPatch.context() as monkeypatch:
        yield {mode: recorded_run(monkeypatch, clusterwide=mode) for mode in (True, False)}


def controller_client_calls() -> set[str]:
    """Every method the controller's source calls on the client's API classes."""
    found = set()
    for source in CONTROLLER.glob("*.py"):
        for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Attribute)
                and node.func.value.attr in ("custom", "core", "batch")
            ):
                found.add(node.func.attr)
    return found


def test_every_client_call_of_the_controller_was_made(runs: dict[bool, Run]) -> None:
    """Guard: the run reaches every call site's method, so nothing is left unrecorded."""
    in_source = controller_client_calls()
    assert len(in_source) >= 10
    called = runs[True].called | runs[False].called
    assert in_source - called == set()


def test_the_fake_reads_requests_as_the_api_server_does() -> None:
    """Guard: literal requests and the authorizer's reading of each."""
    base = "https://api.test"
    assert access_of("GET", f"{base}/apis/ray.io/v1/namespaces/a/rayservices/x") == Access(
        "ray.io", "rayservices", "get", True
    )
    assert access_of("GET", f"{base}/apis/ray.io/v1/rayclusters?limit=5") == Access(
        "ray.io", "rayclusters", "list", False
    )
    assert access_of("GET", f"{base}/api/v1/namespaces/a/events?watch=true") == Access(
        "", "events", "watch", True
    )
    assert access_of("PATCH", f"{base}/apis/llmops.dev/v1alpha1/namespaces/a/x/y/status") == (
        Access("llmops.dev", "x/status", "patch", True)
    )
    assert access_of("PUT", f"{base}/api/v1/namespaces/a/persistentvolumeclaims/c") == Access(
        "", "persistentvolumeclaims", "update", True
    )
    assert access_of("DELETE", f"{base}/api/v1/namespaces/a/pods") == Access(
        "", "pods", "deletecollection", True
    )
    assert access_of("GET", f"{base}/apis/ray.io/v1") is None


# --- what kopf needs -------------------------------------------------------------------
# What kopf does by itself, whatever the handlers (kopf 1.45):
# - it watches CustomResourceDefinitions (list, watch) to serve resources whose CRDs
#   come and go (kopf/_core/reactor/observation.py, resource_observer);
# - it posts core v1 Events (create) for kopf.event/kopf.warn and handler failures
#   (kopf/_cogs/clients/events.py; never events.k8s.io, never a patch);
# - with peering, it watches its peering objects and patches them (keep-alives)
#   (kopf/_core/engines/peering.py);
# - a namespaced operator also tries to list and watch Namespaces (for namespace
#   patterns); without the grant it falls back to the exact names it was given, which are
#   all the chart passes, so the chart does not grant it.
CRDS = ("apiextensions.k8s.io", "customresourcedefinitions")


def kopf_needs(*, clusterwide: bool, peering: bool) -> set[Access]:
    registry = kopf.get_default_registry()
    needs = {Access(*CRDS, verb, False) for verb in ("list", "watch")}
    needs.add(Access("", "events", "create", True))
    scope = not clusterwide
    for kind in (registry._watching, registry._changing):
        for handler in kind.get_all_handlers():
            selector = handler.selector
            assert selector is not None
            plural = selector.plural or selector.any_name
            assert selector.group and plural, selector
            needs |= {Access(selector.group, plural, verb, scope) for verb in ("list", "watch")}
            if kind is registry._changing:  # progress annotations (and finalizers, if any)
                needs.add(Access(selector.group, plural, "patch", scope))
    if peering:
        plural = "clusterkopfpeerings" if clusterwide else "kopfpeerings"
        needs |= {Access("kopf.dev", plural, verb, scope) for verb in ("list", "watch", "patch")}
    return needs


def needed(run: Run, *, clusterwide: bool, peering: bool) -> set[Access]:
    return (
        set(run.server.accesses)
        | set(run.events)
        | kopf_needs(clusterwide=clusterwide, peering=peering)
    )


def granted(role: Body) -> set[tuple[str, str, str]]:
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def plain(accesses: set[Access]) -> set[tuple[str, str, str]]:
    return {(a.group, a.resource, a.verb) for a in accesses}


@pytest.mark.parametrize(
    ("values", "peering"),
    [
        ("default-values.yaml", False),
        ("monitoring-values.yaml", False),
        ("peering-values.yaml", True),
    ],
)
def test_cluster_wide_rbac_is_exactly_what_the_operator_uses(
    runs: dict[bool, Run], values: str, peering: bool
) -> None:
    docs = scenario(values)
    assert of_kind(docs, "Role") == []
    (role,) = of_kind(docs, "ClusterRole")
    # A ClusterRole grants its verbs in every namespace and cluster-wide alike.
    assert granted(role) == plain(needed(runs[True], clusterwide=True, peering=peering))


def test_namespaced_rbac_is_exactly_what_the_operator_uses(runs: dict[bool, Run]) -> None:
    docs = scenario("namespaced-values.yaml")
    accesses = needed(runs[False], clusterwide=False, peering=False)
    in_namespace = plain({a for a in accesses if a.namespaced})
    cluster_wide = plain({a for a in accesses if not a.namespaced})
    roles = of_kind(docs, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    for role in roles:
        assert granted(role) == in_namespace, role["metadata"]["namespace"]
    (cluster_role,) = of_kind(docs, "ClusterRole")
    assert granted(cluster_role) == cluster_wide
    assert cluster_wide == {(*CRDS, "list"), (*CRDS, "watch")}


def test_the_operator_reads_no_secrets_and_writes_no_pods(runs: dict[bool, Run]) -> None:
    everything = plain(needed(runs[True], clusterwide=True, peering=True))
    assert {resource for _, resource, _ in everything} & {"secrets", "pods", "services"} == set()
    assert {verb for _, _, verb in everything} <= {
        "get", "list", "watch", "create", "patch", "delete"
    }  # fmt: skip
    # It deletes only the HTTPRoute a spec no longer asks for and the prefetch Jobs of an
    # earlier model source (the rest goes by ownerRefs).
    deleted = {(group, resource) for group, resource, verb in everything if verb == "delete"}
    assert deleted == {(names.GATEWAY_GROUP, names.HTTP_ROUTES), ("batch", "jobs")}
    # Of Gateways it only reads the one its route attaches to (for the external URL).
    gateways = {verb for _, resource, verb in everything if resource == names.GATEWAYS}
    assert gateways == {"get"}


def test_the_fake_api_server_sees_the_guarded_update_conflict(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The fake answers a stale resourceVersion with 409, as the API server does, and the
    operator retries instead of overwriting (see test_merge for the fields it keeps)."""
    run = recorded_run(monkeypatch, clusterwide=True)
    service = ray_path("rayservices", "llama-8b")
    live = run.server.objects[service]
    stale = {"metadata": {"resourceVersion": "0"}, "spec": {}}
    assert run.server.patch(service, live, kube.APPLY_PATCH, stale) == 409


def load_e2e_audit() -> ModuleType:
    spec = importlib.util.spec_from_file_location("e2e_audit_for_rbac", ROOT / "e2e" / "audit.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_the_audit_log_helper_reads_the_operators_accesses(tmp_path: Path) -> None:
    """e2e/audit.py's `accesses`: what the lead's e2e check compares with the chart."""
    audit = load_e2e_audit()
    lines = [
        {"user": {"username": audit.OPERATOR_USER}, "verb": "patch",
         "objectRef": {"apiGroup": GROUP, "resource": PLURAL, "subresource": "status"}},
        {"user": {"username": audit.OPERATOR_USER}, "verb": "create",
         "objectRef": {"resource": "events"}},
        {"user": {"username": "someone-else"}, "verb": "update",
         "objectRef": {"apiGroup": "ray.io", "resource": "rayclusters"}},
        {"user": {"username": audit.OPERATOR_USER}, "verb": "get", "objectRef": {}},
    ]  # fmt: skip
    log = tmp_path / "audit.log"
    log.write_text(
        "".join(
            json.dumps({**line, "requestReceivedTimestamp": "2026-01-01T00:00:00Z"}) + "\n"
            for line in lines
        ),
        encoding="utf-8",
    )
    assert audit.accesses(log=log) == {
        (GROUP, f"{PLURAL}/status", "patch"),
        ("", "events", "create"),
    }
