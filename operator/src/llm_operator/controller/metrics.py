"""The operator's Prometheus metrics: reconciles, their duration, and per namespace the
LLMDeployments by phase, the GPUs they request and the invalid specs.

Gauges are recomputed from a small record per LLMDeployment, so a phase change, a spec
that turns invalid or a deletion moves every series at once. The names are a contract:
the chart's ServiceMonitor, the dashboard and the README use them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import get_args
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    start_http_server,
)

from llm_operator.api.models import LLMDeployment, Phase
from llm_operator.api.validation import SpecError
from llm_operator.render import layout_of

PREFIX = "llmop"
PHASES: tuple[str, ...] = get_args(Phase)
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


def valid_record(llmd: LLMDeployment, phase: str | None) -> Record:
    gpus = layout_of(llmd).gpus_per_replica
    spec = llmd.spec
    return Record(phase, gpus * spec.min_replicas, gpus * spec.max_replicas, invalid=False)


def invalid_record(phase: str | None) -> Record:
    """An invalid spec requests nothing new; its applied children keep their phase."""
    return Record(phase, 0, 0, invalid=True)


class OperatorMetrics:
    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
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
        self._records: dict[tuple[str, str], Record] = {}
        self._namespaces: set[str] = set()
        # kopf runs sync handlers in a thread pool.
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

    def observe(self, namespace: str, name: str, record: Record) -> None:
        with self._lock:
            self._records[(namespace, name)] = record
            self._namespaces.add(namespace)
            self._refresh(namespace)

    def forget(self, namespace: str, name: str) -> None:
        with self._lock:
            if self._records.pop((namespace, name), None) is not None:
                self._refresh(namespace)

    def _refresh(self, namespace: str) -> None:
        records = [r for (ns, _), r in self._records.items() if ns == namespace]
        for phase in PHASES:
            self.deployments.labels(namespace, phase).set(
                sum(1 for r in records if r.phase == phase)
            )
        self.gpus.labels(namespace, "min").set(sum(r.gpus_min for r in records))
        self.gpus.labels(namespace, "max").set(sum(r.gpus_max for r in records))
        self.invalid.labels(namespace).set(sum(1 for r in records if r.invalid))


METRICS = OperatorMetrics()


def listen_address(value: str) -> tuple[str, int] | None:
    """`HOST:PORT` (or `[IPv6]:PORT`, or `:PORT` for every interface) as (host, port);
    None for an empty value, which turns the metrics endpoint off.
    """
    if not value:
        return None
    host, colon, port = value.rpartition(":")
    if not colon or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected HOST:PORT with a port in 1-65535, got {value!r}")
    # start_http_server takes a bare IPv6 address, without the URL brackets.
    return host.removeprefix("[").removesuffix("]") or "0.0.0.0", int(port)


def serve(address: str, registry: CollectorRegistry = REGISTRY) -> WSGIServer | None:
    """Serve `registry` at http://address/metrics from a daemon thread; None if disabled."""
    listen = listen_address(address)
    if listen is None:
        return None
    host, port = listen
    server, _ = start_http_server(port, addr=host, registry=registry)
    return server
