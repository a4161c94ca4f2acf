"""The operator's Prometheus metrics: reconciles, their duration, and per namespace the
LLMDeployments by phase, the GPUs they request and the invalid specs.

The gauges count the LLMDeployments that exist, and nothing else. Each one's small record
is read off the object itself (its spec, and the status the reconcile wrote) on every
watch event of that object, a start-up listing's included, and leaves with its DELETED
event; a periodic listing (`sweep`) drops any whose deletion the watch never delivered.
Records are keyed by uid, so a deployment deleted and created again under its name is
counted once. Reconciles never write records: one that ends after its LLMDeployment was
deleted cannot bring it back. The names are a contract: the chart's ServiceMonitor, the
dashboard and the README use them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    start_http_server,
)

from llm_operator.api.plan import Plan
from llm_operator.api.validation import SpecError, resolve
from llm_operator.api.vocabulary import ConditionStatus, ConditionType, Phase
from llm_operator.controller import kube
from llm_operator.listen import listen_address

LOG = logging.getLogger(__name__)
PREFIX = "llmop"
# How often the gauges are checked against a listing of the LLMDeployments, for deletions
# the watch never delivered (a re-list after a lost watch reports no DELETED events).
METRICS_SWEEP_SECONDS = 60.0
PHASES: tuple[str, ...] = tuple(Phase)
RESULTS = ("success", "invalid", "error")
# From a no-op reconcile (a few ms) to one waiting on slow API calls.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
METRIC_NAMES = (
    f"{PREFIX}_reconciles_total",
    f"{PREFIX}_reconcile_duration_seconds",
    f"{PREFIX}_llmdeployments",
    f"{PREFIX}_gpus_requested",
    f"{PREFIX}_invalid_specs",
)


@dataclass(frozen=True)
class Record:
    """What the metrics need of one LLMDeployment after a reconcile."""

    phase: str | None
    gpus_min: int
    gpus_max: int
    invalid: bool


def valid_record(plan: Plan, phase: str | None) -> Record:
    return Record(phase, plan.gpus_at_min, plan.gpus_at_max, invalid=False)


def invalid_record(phase: str | None) -> Record:
    """An invalid spec requests nothing new; its applied children keep their phase."""
    return Record(phase, 0, 0, invalid=True)


def _refused(body: Mapping[str, Any], status: Mapping[str, Any]) -> bool:
    """Status says this generation's spec is invalid though it validates: a value only a
    child's own schema refuses (the reconcile reports it as an invalid spec too)."""
    generation = (body.get("metadata") or {}).get("generation")
    return any(
        isinstance(c, Mapping)
        and c.get("type") == ConditionType.SPEC_VALID
        and c.get("status") == ConditionStatus.FALSE
        and c.get("observedGeneration") == generation
        for c in status.get("conditions") or []
    )


def record_of(body: Mapping[str, Any], gpu_memory_gib: Mapping[str, float]) -> Record:
    """What the gauges count of one LLMDeployment, read off the object alone.

    The phase is the one its status reports (None before the first reconcile); the GPUs
    are its spec's, unless the spec is invalid, which requests none.
    """
    status = body.get("status")
    status = status if isinstance(status, Mapping) else {}
    phase = status.get("phase")
    phase = phase if isinstance(phase, str) else None
    try:
        plan = resolve(body, gpu_memory_gib)
    except SpecError:
        return invalid_record(phase)
    if _refused(body, status):
        return invalid_record(phase)
    return valid_record(plan, phase)


Key = tuple[str, str, str]  # namespace, name, uid


@dataclass
class _Tally:
    """A namespace's gauges, kept as records come and go: recounting every record of the
    namespace on each change cost O(N) per event, O(N^2) for N LLMDeployments."""

    phases: dict[str | None, int] = field(default_factory=dict)
    gpus_min: int = 0
    gpus_max: int = 0
    invalid: int = 0

    def add(self, record: Record, sign: int) -> None:
        self.phases[record.phase] = self.phases.get(record.phase, 0) + sign
        self.gpus_min += sign * record.gpus_min
        self.gpus_max += sign * record.gpus_max
        self.invalid += sign * record.invalid


@dataclass(frozen=True)
class _Seen:
    record: Record
    at: float  # the metrics' clock when the object's last event was handled


class OperatorMetrics:
    def __init__(
        self,
        registry: CollectorRegistry = REGISTRY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.reconciles = Counter(
            f"{PREFIX}_reconciles",
            "Reconciles of LLMDeployments by result.",
            ["result"],
            registry=registry,
        )
        self.duration = Histogram(
            f"{PREFIX}_reconcile_duration_seconds",
            "Time one reconcile of an LLMDeployment took.",
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.deployments = Gauge(
            f"{PREFIX}_llmdeployments",
            "LLMDeployments by phase.",
            ["namespace", "phase"],
            registry=registry,
        )
        self.gpus = Gauge(
            f"{PREFIX}_gpus_requested",
            "GPUs the namespace's valid LLMDeployments request at min and max replicas.",
            ["namespace", "bound"],
            registry=registry,
        )
        self.invalid = Gauge(
            f"{PREFIX}_invalid_specs",
            "LLMDeployments whose spec is invalid.",
            ["namespace"],
            registry=registry,
        )
        for result in RESULTS:
            self.reconciles.labels(result)  # exported at 0 before the first reconcile
        # namespace -> (name, uid) -> record; a namespace's gauges stay (at 0) once emptied.
        self._records: dict[str, dict[tuple[str, str], _Seen]] = {}
        self._tallies: dict[str, _Tally] = {}
        self._clock = clock
        # Event handlers run on kopf's loop, the sweep in its own thread.
        self._lock = threading.Lock()

    @contextmanager
    def reconcile(self) -> Iterator[None]:
        """Time and count one reconcile; `SpecError` counts as invalid, others as error."""
        started = time.perf_counter()
        result = "error"
        try:
            yield
            result = "success"
        except SpecError:
            result = "invalid"
            raise
        finally:
            self.duration.observe(time.perf_counter() - started)
            self.reconciles.labels(result).inc()

    def track(
        self,
        event_type: str | None,
        body: Mapping[str, Any],
        gpu_memory_gib: Mapping[str, float],
    ) -> None:
        """One watch event of an LLMDeployment: a listing's (type None), ADDED and
        MODIFIED set its record, DELETED removes it."""
        meta = body.get("metadata") or {}
        namespace, name, uid = meta.get("namespace"), meta.get("name"), meta.get("uid")
        if not (namespace and name and uid):
            return
        if event_type == "DELETED":
            self.forget(namespace, name, uid)
        else:
            self.observe(namespace, name, uid, record_of(body, gpu_memory_gib))

    def observe(self, namespace: str, name: str, uid: str, record: Record) -> None:
        with self._lock:
            records = self._records.setdefault(namespace, {})
            tally = self._tallies.setdefault(namespace, _Tally())
            previous = records.get((name, uid))
            records[(name, uid)] = _Seen(record, self._clock())
            if previous is None or previous.record != record:
                if previous is not None:
                    tally.add(previous.record, -1)
                tally.add(record, 1)
                self._refresh(namespace)

    def forget(self, namespace: str, name: str, uid: str) -> None:
        with self._lock:
            gone = self._records.get(namespace, {}).pop((name, uid), None)
            if gone is not None:
                self._tallies[namespace].add(gone.record, -1)
                self._refresh(namespace)

    def now(self) -> float:
        """The clock `sweep` compares with: read it before listing."""
        return self._clock()

    def namespaces(self) -> list[str]:
        """The namespaces that hold a counted LLMDeployment."""
        with self._lock:
            return sorted(ns for ns, records in self._records.items() if records)

    def sweep(
        self,
        existing: Collection[Key],
        listed_at: float,
        namespaces: Collection[str] | None = None,
    ) -> int:
        """Keep only what a listing that started at `listed_at` returned, in `namespaces`
        (None: every namespace); returns how many records went.

        A record whose event was handled after the listing started stays: its object
        may have been created after the listing's snapshot.
        """
        dropped = 0
        with self._lock:
            for namespace in list(self._records) if namespaces is None else namespaces:
                records = self._records.get(namespace, {})
                gone = [
                    key
                    for key, seen in records.items()
                    if seen.at < listed_at and (namespace, *key) not in existing
                ]
                for key in gone:
                    self._tallies[namespace].add(records.pop(key).record, -1)
                if gone:
                    dropped += len(gone)
                    self._refresh(namespace)
        return dropped

    def _refresh(self, namespace: str) -> None:
        tally = self._tallies.get(namespace, _Tally())
        for phase in PHASES:
            self.deployments.labels(namespace, phase).set(tally.phases.get(phase, 0))
        self.gpus.labels(namespace, "min").set(tally.gpus_min)
        self.gpus.labels(namespace, "max").set(tally.gpus_max)
        self.invalid.labels(namespace).set(tally.invalid)


METRICS = OperatorMetrics()


def sweep_metrics(
    clients: kube.Clients, clusterwide: bool, metrics: OperatorMetrics = METRICS
) -> int:
    """Drop from the gauges every LLMDeployment a fresh listing no longer returns.

    Clusterwide, one listing of every namespace; otherwise one per namespace that holds
    a counted LLMDeployment (the operator may list there). Reads only. Returns how many
    records went.
    """
    counted = metrics.namespaces()
    if not counted:
        return 0  # nothing to drop: skip the listing (a standby replica counts nothing)
    scope = None if clusterwide else counted
    listed_at = metrics.now()
    existing: set[tuple[str, str, str]] = set()
    for namespace in [None] if scope is None else scope:
        existing |= kube.llm_deployment_keys(clients, namespace)
    return metrics.sweep(existing, listed_at, scope)


def sweep_metrics_forever(clients: kube.Clients, clusterwide: bool, stop: threading.Event) -> None:
    """`sweep_metrics` every METRICS_SWEEP_SECONDS until `stop` is set (its own thread)."""
    while not stop.wait(METRICS_SWEEP_SECONDS):
        try:
            dropped = sweep_metrics(clients, clusterwide)
        except Exception:  # an API hiccup: the next round tries again
            LOG.warning("could not list LLMDeployments for the metrics", exc_info=True)
            continue
        if dropped:
            LOG.info("metrics: dropped %d LLMDeployment(s) deleted unseen by the watch", dropped)


def serve(address: str, registry: CollectorRegistry = REGISTRY) -> WSGIServer | None:
    """Serve `registry` at http://address/metrics from a daemon thread; None if disabled."""
    listen = listen_address(address)
    if listen is None:
        return None
    host, port = listen
    server, _ = start_http_server(port, addr=host, registry=registry)
    return server
