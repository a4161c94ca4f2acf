"""The operator's /metrics, scraped while it handles real LLMDeployments."""

from __future__ import annotations

import os
from functools import partial

import pytest
from support import (
    NAMESPACE_GONE_SECONDS,
    Body,
    Kube,
    Series,
    cluster,
    converged,
    operator_metrics_url,
    sample,
    wait_for,
)
from support import scrape as scrape_url

from llm_operator.api.models import Phase

PHASES: tuple[str, ...] = tuple(Phase)
BOUNDS = ("min", "max")


def scrape() -> Series:
    return scrape_url(operator_metrics_url())


def value(series: Series, name: str, **labels: str) -> float | None:
    return series.get((name, frozenset(labels.items())))


def counted(series: Series, name: str, **labels: str) -> float:
    return value(series, name, **labels) or 0


def test_metrics_report_phase_gpus_and_reconciles(kube: Kube, namespace: str) -> None:
    def tp2(body: Body) -> None:
        body["spec"]["engine"]["tensorParallelSize"] = 2
        body["spec"]["replicas"] = 3

    # The counters are the operator's, for every test so far: only their growth from
    # here on is this LLMDeployment's.
    before = scrape()
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
    # A reconcile is counted as it ends, a moment after its status write.
    for name, labels in (
        ("llmop_reconciles_total", {"result": "success"}),
        ("llmop_reconcile_duration_seconds_count", {}),
    ):
        wait_for(
            lambda name=name, labels=labels: (
                counted(scrape(), name, **labels) > counted(before, name, **labels)
            ),
            f"{name}{labels or ''} to count this LLMDeployment's reconcile",
        )
    invalid_before = counted(scrape(), "llmop_reconciles_total", result="invalid")

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
    wait_for(
        lambda: counted(scrape(), "llmop_reconciles_total", result="invalid") > invalid_before,
        "llmop_reconciles_total{result=invalid} to count the invalid update",
    )


# --- what exists, and only that ------------------------------------------------------
def scraped() -> Series | None:
    """A scrape, or None while the endpoint does not answer."""
    try:
        return scrape()
    except OSError:
        return None


def deployments(series: Series, namespace: str) -> float:
    """The namespace's LLMDeployments over every phase; 0 when it has no series."""
    return sum(
        value(series, "llmop_llmdeployments", namespace=namespace, phase=phase) or 0
        for phase in PHASES
    )


def gpus(series: Series, namespace: str, bound: str) -> float:
    return value(series, "llmop_gpus_requested", namespace=namespace, bound=bound) or 0


def converged_llmd(kube: Kube, namespace: str, name: str) -> bool:
    return converged(kube.get_llmd(namespace, name))


@pytest.mark.faults
@pytest.mark.skipif(
    bool(os.environ.get("E2E_KUBECONFIG")), reason="stops and starts the local operator"
)
def test_namespace_deleted_while_the_operator_is_down_leaves_the_gauges(
    kube: Kube, namespace: str, module_namespace: str
) -> None:
    """The gauges count what exists: after a restart, nothing of a namespace deleted
    meanwhile (its deletion events never reached this operator), and again everything
    that is still there."""

    def four_gpus(body: Body) -> None:
        body["spec"]["engine"]["tensorParallelSize"] = 2
        body["spec"]["replicas"] = 2

    gone = kube.create_llmd(sample("quickstart", namespace, four_gpus))["metadata"]["name"]
    kept = kube.create_llmd(sample("quickstart", module_namespace))["metadata"]["name"]
    try:
        for where, name in ((namespace, gone), (module_namespace, kept)):
            wait_for(
                partial(converged_llmd, kube, where, name),
                f"the operator to converge {where}/{name}",
            )

        def both_counted() -> Series | None:
            series = scraped()
            if series is None or deployments(series, namespace) != 1:
                return None
            return series if deployments(series, module_namespace) == 1 else None

        before = wait_for(both_counted, "both LLMDeployments in llmop_llmdeployments")
        # 2 GPUs per replica, 2 replicas; the quick start's 1 GPU, 1 replica.
        assert [gpus(before, namespace, bound) for bound in BOUNDS] == [4, 4]
        assert [gpus(before, module_namespace, bound) for bound in BOUNDS] == [1, 1]

        cluster("stop", "llm-operator")
        try:
            kube.core.delete_namespace(namespace)
            wait_for(
                lambda: not kube.namespace_exists(namespace),
                f"namespace {namespace} to go",
                NAMESPACE_GONE_SECONDS,
            )
        finally:
            cluster("start", "llm-operator")

        def recounted() -> Series | None:
            series = scraped()
            if series is None or deployments(series, module_namespace) != 1:
                return None  # not listed yet
            return series if deployments(series, namespace) == 0 else None

        after = wait_for(recounted, f"the gauges to drop {namespace} and keep {module_namespace}")
        for bound in BOUNDS:
            assert gpus(after, namespace, bound) == gpus(before, namespace, bound) - 4
            assert gpus(after, module_namespace, bound) == gpus(before, module_namespace, bound)
        assert (value(after, "llmop_invalid_specs", namespace=namespace) or 0) == 0
    finally:
        kube.delete_llmd(module_namespace, kept)
