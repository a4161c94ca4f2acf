"""The operator's /metrics, scraped while it handles real LLMDeployments."""

from __future__ import annotations

import os
import urllib.request

from prometheus_client.parser import text_string_to_metric_families
from support import Body, Kube, converged, sample, wait_for

# e2e/cluster.sh binds the operator's metrics here; elsewhere point E2E_OPERATOR_METRICS
# at a port-forward of the chart's metrics Service.
OPERATOR_METRICS_URL = os.environ.get("E2E_OPERATOR_METRICS", "http://127.0.0.1:18083/metrics")
Series = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape() -> Series:
    with urllib.request.urlopen(OPERATOR_METRICS_URL, timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(series: Series, name: str, **labels: str) -> float | None:
    return series.get((name, frozenset(labels.items())))


def test_metrics_report_phase_gpus_and_reconciles(kube: Kube, namespace: str) -> None:
    def tp2(body: Body) -> None:
        body["spec"]["engine"]["tensorParallelSize"] = 2
        body["spec"]["replicas"] = 3

    llmd = kube.create_llmd(sample("quickstart", namespace, tp2))
    wait_for(
        lambda: (b := kube.get_llmd(namespace, llmd["metadata"]["name"])) and converged(b),
        "the operator to converge",
    )

    def progressing() -> Series | None:
        series = scrape()
        found = value(series, "llmop_llmdeployments", namespace=namespace, phase="Progressing")
        return series if found == 1 else None

    series = wait_for(progressing, "llmop_llmdeployments{phase=Progressing} == 1")
    # 2 GPUs per replica, 3 replicas, fixed count: min and max alike.
    assert value(series, "llmop_gpus_requested", namespace=namespace, bound="min") == 6
    assert value(series, "llmop_gpus_requested", namespace=namespace, bound="max") == 6
    assert (value(series, "llmop_reconciles_total", result="success") or 0) >= 1
    assert (value(series, "llmop_reconcile_duration_seconds_count") or 0) >= 1

    # An invalid update is counted as an invalid spec.
    kube.patch_llmd(
        namespace,
        llmd["metadata"]["name"],
        {"spec": {"engine": {"args": {"tensor_parallel_size": 4}}}},
    )
    wait_for(
        lambda: value(scrape(), "llmop_invalid_specs", namespace=namespace) == 1,
        "llmop_invalid_specs == 1",
    )
