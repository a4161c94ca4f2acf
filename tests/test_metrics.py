"""The operator's metrics, fed the records a reconcile produces (no cluster, no kopf)."""

from __future__ import annotations

import socket
import urllib.request

import pytest
from prometheus_client import CollectorRegistry

from conftest import sample
from llm_operator.api.validation import FieldError, SpecError
from llm_operator.cli import build_parser
from llm_operator.controller.metrics import (
    METRIC_NAMES,
    OperatorMetrics,
    Record,
    invalid_record,
    listen_address,
    serve,
    valid_record,
)


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def metrics(registry: CollectorRegistry) -> OperatorMetrics:
    return OperatorMetrics(registry)


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def test_phase_change_moves_the_gauge(
    metrics: OperatorMetrics, registry: CollectorRegistry
) -> None:
    metrics.observe("a", "m", Record("Progressing", 1, 1, invalid=False))
    assert value(registry, "llmop_llmdeployments", namespace="a", phase="Progressing") == 1
    metrics.observe("a", "m", Record("Ready", 1, 1, invalid=False))
    assert value(registry, "llmop_llmdeployments", namespace="a", phase="Progressing") == 0
    assert value(registry, "llmop_llmdeployments", namespace="a", phase="Ready") == 1


def test_gpus_sum_per_namespace_from_the_layout(
    metrics: OperatorMetrics, registry: CollectorRegistry
) -> None:
    # llama-405b-h100: 16 GPUs per replica, 1 replica; llama-8b-l4: 1 GPU, 1..4 replicas.
    metrics.observe("a", "big", valid_record(sample("llama-405b-h100"), "Progressing"))
    metrics.observe("a", "small", valid_record(sample("llama-8b-l4"), "Ready"))
    metrics.observe("b", "other", valid_record(sample("llama-8b-l4"), "Ready"))
    assert value(registry, "llmop_gpus_requested", namespace="a", bound="min") == 17
    assert value(registry, "llmop_gpus_requested", namespace="a", bound="max") == 20
    assert value(registry, "llmop_gpus_requested", namespace="b", bound="max") == 4


def test_invalid_specs_count_and_request_nothing(
    metrics: OperatorMetrics, registry: CollectorRegistry
) -> None:
    metrics.observe("a", "m", valid_record(sample("llama-8b-l4"), "Ready"))
    metrics.observe("a", "m", invalid_record("Ready"))
    assert value(registry, "llmop_invalid_specs", namespace="a") == 1
    assert value(registry, "llmop_gpus_requested", namespace="a", bound="max") == 0
    # The running children keep their phase while the spec is invalid.
    assert value(registry, "llmop_llmdeployments", namespace="a", phase="Ready") == 1


def test_deleted_deployments_are_forgotten(
    metrics: OperatorMetrics, registry: CollectorRegistry
) -> None:
    metrics.observe("a", "m", invalid_record("Failed"))
    metrics.forget("a", "m")
    metrics.forget("a", "never-seen")
    assert value(registry, "llmop_llmdeployments", namespace="a", phase="Failed") == 0
    assert value(registry, "llmop_invalid_specs", namespace="a") == 0


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
    metrics.observe("a", "m", Record("Ready", 2, 4, invalid=False))
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
