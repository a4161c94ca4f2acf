"""The operator's metrics: records read off LLMDeployment bodies as their watch events
arrive, deletions, listings that sweep out what is gone (no cluster, no running kopf)."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import itertools
import socket
import urllib.request
from typing import Any

import kopf
import pytest
from kubernetes.client.exceptions import ApiException
from prometheus_client import CollectorRegistry

from conftest import SAMPLES, load_one, sample_plan
from llm_operator.api.validation import FieldError, SpecError
from llm_operator.cli import build_parser
from llm_operator.controller import handlers, kube, reconciler
from llm_operator.controller.metrics import (
    METRIC_NAMES,
    PHASES,
    OperatorMetrics,
    Record,
    invalid_record,
    record_of,
    serve,
    sweep_metrics,
    valid_record,
)
from llm_operator.listen import listen_address
from llm_operator.settings import OperatorSettings

SETTINGS = OperatorSettings()
GPU_MEMORY = SETTINGS.gpu_memory_gib


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def metrics(registry: CollectorRegistry) -> OperatorMetrics:
    # A clock that moves on every reading, so "seen before the listing started" is exact.
    ticks = itertools.count()
    return OperatorMetrics(registry, clock=lambda: float(next(ticks)))


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def series(registry: CollectorRegistry, namespace: str) -> dict[str, float | None]:
    """Every gauge series of one namespace."""
    found = {
        f"phase={phase}": value(registry, "llmop_llmdeployments", namespace=namespace, phase=phase)
        for phase in PHASES
    }
    for bound in ("min", "max"):
        found[f"gpus={bound}"] = value(
            registry, "llmop_gpus_requested", namespace=namespace, bound=bound
        )
    found["invalid"] = value(registry, "llmop_invalid_specs", namespace=namespace)
    return found


def zeros(**nonzero: float) -> dict[str, float | None]:
    """A namespace's series: 0 but for `nonzero` (phase_Ready=1, gpus_min=4, invalid=1)."""
    expected: dict[str, float | None] = {f"phase={phase}": 0 for phase in PHASES}
    expected |= {"gpus=min": 0, "gpus=max": 0, "invalid": 0}
    for key, count in nonzero.items():
        expected[key.replace("_", "=", 1)] = count
    return expected


def live(
    name: str,
    namespace: str = "a",
    *,
    uid: str | None = None,
    phase: str | None = None,
    edit: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A sample as the API server returns it: namespaced, with a uid, a generation, and a
    status when `phase` is given."""
    body = load_one(SAMPLES / f"{name}.yaml")
    body["metadata"] |= {
        "namespace": namespace,
        "uid": uid or f"uid-{namespace}-{name}",
        "generation": 1,
        "resourceVersion": "1",
    }
    for key, part in (edit or {}).items():
        body["spec"][key] = part
    if phase is not None:
        body["status"] = {"phase": phase, "observedGeneration": 1}
    return body


def test_phase_change_moves_the_gauge(
    metrics: OperatorMetrics, registry: CollectorRegistry
) -> None:
    metrics.observe("a", "m", "u1", Record("Progressing", 1, 1, invalid=False))
    assert value(registry, "llmop_llmdeployments", namespace="a", phase="Progressing") == 1
    metrics.observe("a", "m", "u1", Record("Ready", 1, 1, invalid=False))
    assert value(registry, "llmop_llmdeployments", namespace="a", phase="Progressing") == 0
    assert value(registry, "llmop_llmdeployments", namespace="a", phase="Ready") == 1


def test_gpus_sum_per_namespace_from_the_layout(
    metrics: OperatorMetrics, registry: CollectorRegistry
) -> None:
    # llama-405b-h100: 16 GPUs per replica, 1 replica; llama-8b-l4: 1 GPU, 1..4 replicas.
    metrics.observe("a", "big", "u1", valid_record(sample_plan("llama-405b-h100"), "Progressing"))
    metrics.observe("a", "small", "u2", valid_record(sample_plan("llama-8b-l4"), "Ready"))
    metrics.observe("b", "other", "u3", valid_record(sample_plan("llama-8b-l4"), "Ready"))
    assert value(registry, "llmop_gpus_requested", namespace="a", bound="min") == 17
    assert value(registry, "llmop_gpus_requested", namespace="a", bound="max") == 20
    assert value(registry, "llmop_gpus_requested", namespace="b", bound="max") == 4


def test_invalid_specs_count_and_request_nothing(
    metrics: OperatorMetrics, registry: CollectorRegistry
) -> None:
    metrics.observe("a", "m", "u1", valid_record(sample_plan("llama-8b-l4"), "Ready"))
    metrics.observe("a", "m", "u1", invalid_record("Ready"))
    assert value(registry, "llmop_invalid_specs", namespace="a") == 1
    assert value(registry, "llmop_gpus_requested", namespace="a", bound="max") == 0
    # The running children keep their phase while the spec is invalid.
    assert value(registry, "llmop_llmdeployments", namespace="a", phase="Ready") == 1


# --- the record, read off the object ---------------------------------------------------
def test_record_of_reads_phase_and_gpus_off_the_object() -> None:
    # llama-8b-l4: 1 GPU per replica, autoscaling 1..4.
    assert record_of(live("llama-8b-l4", phase="Ready"), GPU_MEMORY) == Record(
        "Ready", 1, 4, invalid=False
    )
    # Not reconciled yet: no phase, but its spec already requests GPUs.
    assert record_of(live("llama-405b-h100"), GPU_MEMORY) == Record(None, 16, 16, invalid=False)


def test_record_of_an_invalid_spec_requests_nothing_and_keeps_the_phase() -> None:
    body = live("llama-8b-l4", phase="Ready", edit={"replicas": 2})  # replicas and autoscaling
    assert record_of(body, GPU_MEMORY) == invalid_record("Ready")


def test_record_of_a_spec_a_child_refused_is_invalid_for_that_generation_only() -> None:
    body = live("llama-8b-l4", phase="Ready")
    refused = {
        "type": "SpecValid",
        "status": "False",
        "reason": "InvalidSpec",
        "message": "spec: the API server refused PersistentVolumeClaim llama-8b-model-cache",
        "observedGeneration": 1,
    }
    body["status"]["conditions"] = [refused]
    assert record_of(body, GPU_MEMORY) == invalid_record("Ready")
    # A new generation that the reconcile has not judged yet counts as its spec says.
    body["metadata"]["generation"] = 2
    assert record_of(body, GPU_MEMORY) == Record("Ready", 1, 4, invalid=False)


# --- what exists, and only that --------------------------------------------------------
def test_deleted_deployment_drops_out_of_every_series(
    metrics: OperatorMetrics, registry: CollectorRegistry
) -> None:
    ready = live("llama-8b-l4", phase="Ready")
    invalid = live("llama-405b-h100", phase="Failed", edit={"replicas": 0})
    other = live("llama-8b-l4", "b", phase="Progressing")
    for body in (ready, invalid, other):
        metrics.track("ADDED", body, GPU_MEMORY)
    assert series(registry, "a") == zeros(
        phase_Ready=1, phase_Failed=1, gpus_min=1, gpus_max=4, invalid=1
    )

    metrics.track("DELETED", ready, GPU_MEMORY)
    assert series(registry, "a") == zeros(phase_Failed=1, invalid=1)
    metrics.track("DELETED", invalid, GPU_MEMORY)
    metrics.track("DELETED", invalid, GPU_MEMORY)  # a repeated event changes nothing
    assert series(registry, "a") == zeros()
    assert series(registry, "b") == zeros(phase_Progressing=1, gpus_min=1, gpus_max=4)


def test_deployment_gone_without_a_delete_event_is_swept_out(
    metrics: OperatorMetrics, registry: CollectorRegistry
) -> None:
    """The watch lost the DELETED event (a re-list after a broken watch reports none)."""
    gone = live("llama-405b-h100", phase="Ready")
    kept = live("llama-8b-l4", phase="Ready")
    elsewhere = live("llama-405b-h100", "b", phase="Ready")
    for body in (gone, kept, elsewhere):
        metrics.track(None, body, GPU_MEMORY)  # kopf's listing at start-up
    assert series(registry, "a") == zeros(phase_Ready=2, gpus_min=17, gpus_max=20)

    listed_at = metrics.now()
    # Created after the listing's snapshot: absent from it, but must stay.
    newer = live("llama-8b-l4", phase="Pending", uid="uid-newer")
    newer["metadata"]["name"] = "newer"
    metrics.track("ADDED", newer, GPU_MEMORY)
    dropped = metrics.sweep({("a", "llama-8b", "uid-a-llama-8b-l4")}, listed_at, ["a"])

    assert dropped == 1
    assert series(registry, "a") == zeros(phase_Ready=1, phase_Pending=1, gpus_min=2, gpus_max=8)
    # Namespace b was not listed: nothing there is judged.
    assert series(registry, "b") == zeros(phase_Ready=1, gpus_min=16, gpus_max=16)
    assert metrics.namespaces() == ["a", "b"]


@pytest.mark.parametrize("old_delete", ["before", "after", "missed"])
def test_recreation_with_another_gpu_count_is_counted_once(
    metrics: OperatorMetrics, registry: CollectorRegistry, old_delete: str
) -> None:
    """Same name, new uid, 4 GPUs then 6 (the e2e failure read 10). kopf handles each uid
    in its own worker, so the old DELETED may come before or after the new ADDED, or never."""

    def gpus(count: int, uid: str) -> dict[str, Any]:
        body = live("quickstart", uid=uid, phase="Progressing")
        body["spec"]["engine"]["tensorParallelSize"] = 2
        body["spec"]["replicas"] = count // 2
        return body

    old, new = gpus(4, "uid-old"), gpus(6, "uid-new")
    metrics.track("ADDED", old, GPU_MEMORY)
    assert value(registry, "llmop_gpus_requested", namespace="a", bound="min") == 4
    if old_delete == "before":
        metrics.track("DELETED", old, GPU_MEMORY)
    listed_at = metrics.now()
    metrics.track("ADDED", new, GPU_MEMORY)
    if old_delete == "after":
        metrics.track("DELETED", old, GPU_MEMORY)
    if old_delete == "missed":
        # Both uids counted, as the e2e run read, until a listing shows only the new one.
        assert value(registry, "llmop_gpus_requested", namespace="a", bound="min") == 10
        assert metrics.sweep({("a", "qwen-small", "uid-new")}, listed_at) == 1

    assert series(registry, "a") == zeros(phase_Progressing=1, gpus_min=6, gpus_max=6)


class StatusOnlyApi:
    """A `ClusterApi` whose children already exist (their status not reported yet) and
    that records the status patches; with `refuse_claims`, the claims' API refuses them."""

    def __init__(self) -> None:
        self.written: list[dict[str, Any]] = []
        self.refuse_claims = False

    def ensure_claim(self, desired: dict[str, Any], owner_uid: str) -> kube.Outcome:
        if self.refuse_claims:
            raise kube.ChildRefused("the API server refused PersistentVolumeClaim: storageClass")
        return "unchanged"

    def apply_ray_resource(
        self, desired: dict[str, Any], *, likely_absent: bool, frozen: Any = None
    ) -> tuple[kube.Outcome, dict[str, Any]]:
        return "unchanged", {"kind": desired["kind"], "metadata": desired["metadata"]}

    def get_ray_resource(self, kind: str, namespace: str, name: str) -> None:
        return None

    def sync_worker_bounds(self, bounds: Any) -> None:
        return None

    def patch_status(self, namespace: str, name: str, patch: Any) -> None:
        self.written.append(dict(patch))

    def post_event(self, owner: Any, **_: Any) -> None:
        raise AssertionError("no phase moves here")


def test_a_reconcile_that_ends_after_the_deletion_counts_nothing(
    monkeypatch: pytest.MonkeyPatch, metrics: OperatorMetrics, registry: CollectorRegistry
) -> None:
    """The e2e failure's cause: a child's event started a reconcile of its LLMDeployment
    just before that was deleted, and the reconcile ended after the DELETED event. It used
    to record the deployment again, for good."""
    monkeypatch.setattr(handlers, "METRICS", metrics)
    api = StatusOnlyApi()
    # 2 replicas of 2 GPUs, its RayCluster not made yet (the same phase: no Event to post).
    body = live("cluster-checkpoints", phase="Pending")
    memo = kopf.Memo(settings=SETTINGS)

    def event(kind: str) -> None:
        raw = {"type": kind, "object": copy.deepcopy(body)}
        asyncio.run(handlers.count_in_metrics(event=raw, memo=memo))

    event("ADDED")
    assert series(registry, "a") == zeros(phase_Pending=1, gpus_min=4, gpus_max=4)
    event("DELETED")
    reconciler.reconcile(body, api, SETTINGS)

    assert api.written, "the reconcile ran to its status write"
    assert series(registry, "a") == zeros()


def test_the_gauges_read_back_what_the_reconcile_wrote(
    monkeypatch: pytest.MonkeyPatch, metrics: OperatorMetrics, registry: CollectorRegistry
) -> None:
    """A valid spec, then a claim the API server refuses (a value only the child's schema
    checks): the reconcile reports it in status, and the gauges count it invalid."""
    api = StatusOnlyApi()
    body = live("llama-8b-l4")

    def reconcile_and_watch() -> None:
        with contextlib.suppress(SpecError):
            reconciler.reconcile(body, api, SETTINGS)
        body["status"] = {**body.get("status", {}), **api.written[-1]}  # the MODIFIED event
        metrics.track("MODIFIED", body, GPU_MEMORY)

    reconcile_and_watch()
    assert series(registry, "a") == zeros(phase_Pending=1, gpus_min=1, gpus_max=4)
    api.refuse_claims = True
    body["metadata"]["generation"] = 2
    # Admitted (a quantity, not negative), refused by the claim's own API: storage > 0.
    body["spec"]["storage"]["modelCache"]["size"] = "0"
    reconcile_and_watch()
    assert series(registry, "a") == zeros(phase_Pending=1, invalid=1)


# --- the sweep's listings --------------------------------------------------------------
class FakeCustom:
    """List calls of CustomObjectsApi: pages by continue token, per namespace or all."""

    def __init__(self, items: list[dict[str, Any]], forbidden: tuple[str, ...] = ()) -> None:
        self.items = items
        self.forbidden = forbidden
        self.calls: list[tuple[str | None, str | None]] = []

    def _page(self, namespace: str | None, token: str | None) -> dict[str, Any]:
        self.calls.append((namespace, token))
        if namespace in self.forbidden:
            raise ApiException(status=403, reason="Forbidden")
        items = [i for i in self.items if namespace in (None, i["metadata"]["namespace"])]
        start = int(token or 0)
        following = start + 1 if start + 1 < len(items) else None
        return {
            "items": items[start : start + 1],  # one item a page
            "metadata": {"continue": str(following) if following else None},
        }

    def list_cluster_custom_object(
        self, group: str, version: str, plural: str, limit: int, _continue: str | None
    ) -> dict[str, Any]:
        return self._page(None, _continue)

    def list_namespaced_custom_object(
        self,
        group: str,
        version: str,
        namespace: str,
        plural: str,
        limit: int,
        _continue: str | None,
    ) -> dict[str, Any]:
        return self._page(namespace, _continue)


def fake_clients(custom: FakeCustom) -> kube.Clients:
    return kube.Clients(custom=custom, core=None, batch=None)  # type: ignore[arg-type]


def test_sweep_lists_every_namespace_at_once_when_clusterwide(
    metrics: OperatorMetrics, registry: CollectorRegistry
) -> None:
    bodies = [live("llama-8b-l4"), live("quickstart"), live("quickstart", "b")]
    for body in bodies:
        metrics.track(None, body, GPU_MEMORY)
    custom = FakeCustom([bodies[1]])  # the other two went while the watch was down

    assert sweep_metrics(fake_clients(custom), True, metrics) == 2
    assert custom.calls == [(None, None)]
    assert series(registry, "a") == zeros(gpus_min=1, gpus_max=1)
    assert series(registry, "b") == zeros()


def test_sweep_lists_each_counted_namespace_in_pages_when_namespaced(
    metrics: OperatorMetrics, registry: CollectorRegistry
) -> None:
    kept = [live("llama-8b-l4"), live("quickstart")]
    for body in [*kept, live("llama-405b-h100"), live("quickstart", "gone")]:
        metrics.track("MODIFIED", body, GPU_MEMORY)
    # The namespace "gone" was deleted, and with it the operator's Role there.
    custom = FakeCustom(kept, forbidden=("gone",))

    assert sweep_metrics(fake_clients(custom), False, metrics) == 2
    assert custom.calls == [("a", None), ("a", "1"), ("gone", None)]
    assert series(registry, "a") == zeros(gpus_min=2, gpus_max=5)
    assert series(registry, "gone") == zeros()
    assert metrics.namespaces() == ["a"]


def test_sweep_does_not_list_when_nothing_is_counted(metrics: OperatorMetrics) -> None:
    custom = FakeCustom([])
    assert sweep_metrics(fake_clients(custom), True, metrics) == 0
    assert custom.calls == []


def test_sweep_fails_on_other_api_errors(metrics: OperatorMetrics) -> None:
    metrics.track(None, live("quickstart"), GPU_MEMORY)
    custom = FakeCustom([], forbidden=(None,))  # type: ignore[arg-type]
    with pytest.raises(ApiException):
        sweep_metrics(fake_clients(custom), True, metrics)


def test_reconciles_are_counted_by_result_and_timed(
    metrics: OperatorMetrics, registry: CollectorRegistry
) -> None:
    assert value(registry, "llmop_reconciles_total", result="error") == 0
    with metrics.reconcile():
        pass
    with pytest.raises(SpecError), metrics.reconcile():
        raise SpecError([FieldError("spec.engine", "bad")])
    with pytest.raises(RuntimeError), metrics.reconcile():
        raise RuntimeError("API down")
    for result in ("success", "invalid", "error"):
        assert value(registry, "llmop_reconciles_total", result=result) == 1
    assert value(registry, "llmop_reconcile_duration_seconds_count") == 3


def test_every_documented_name_is_registered(registry: CollectorRegistry) -> None:
    OperatorMetrics(registry)
    exported = {metric.name for metric in registry.collect()}
    # prometheus_client drops a counter's _total from the family name.
    assert {name.removesuffix("_total") for name in METRIC_NAMES} == exported


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("0.0.0.0:9090", ("0.0.0.0", 9090)),
        (":9090", ("0.0.0.0", 9090)),
        ("[::]:9090", ("::", 9090)),
        ("", None),
    ],
)
def test_listen_address(address: str, expected: tuple[str, int] | None) -> None:
    assert listen_address(address) == expected


@pytest.mark.parametrize("address", ["9090", "host:", "host:http", "host:0", "host:65536"])
def test_bad_listen_address_is_refused(address: str) -> None:
    with pytest.raises(ValueError):
        listen_address(address)


def test_run_flag_defaults_to_port_9090_and_rejects_typos(
    capsys: pytest.CaptureFixture[str],
) -> None:
    parser = build_parser()
    assert parser.parse_args(["run"]).metrics_address == "0.0.0.0:9090"
    assert parser.parse_args(["run", "--metrics-address", ""]).metrics_address == ""
    with pytest.raises(SystemExit) as exited:
        parser.parse_args(["run", "--metrics-address", "localhost"])
    assert exited.value.code == 2
    assert "HOST:PORT" in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def test_serve_exposes_the_registry_over_http(
    metrics: OperatorMetrics, registry: CollectorRegistry
) -> None:
    assert serve("", registry) is None
    metrics.observe("a", "m", "u1", Record("Ready", 2, 4, invalid=False))
    server = serve(f"127.0.0.1:{_free_port()}", registry)
    assert server is not None
    try:
        url = f"http://127.0.0.1:{server.server_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
    finally:
        server.shutdown()
        server.server_close()
    assert 'llmop_gpus_requested{bound="max",namespace="a"} 4.0' in text
