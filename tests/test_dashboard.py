"""The Grafana dashboard: valid JSON, every query parses as PromQL, and every metric it
reads is one the operator, Ray Serve or vLLM (through Ray) really exports.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import promql_parser
import pytest

from conftest import ROOT, require_or_skip
from llm_operator.controller.metrics import METRIC_NAMES

DASHBOARD = ROOT / "charts" / "llm-operator" / "dashboards" / "llm-operator.json"

# Ray prefixes every metric it exports with `ray_` (NAMESPACE in Ray's
# python/ray/_private/telemetry/open_telemetry_metric_recorder.py) and Prometheus adds
# `_total` to counters and `_bucket` to histograms. Checked against ray 2.60.0
# (ray-project/ray), where each name is defined and used by Ray's own Grafana panels:
RAY_SERVE = {
    # python/ray/serve/_private/replica.py ("serve_deployment_request_counter"), labels
    # application/deployment/replica/route; used in .../dashboards/serve_dashboard_panels.py
    "ray_serve_deployment_request_counter_total",
    # python/ray/serve/_private/replica.py ("serve_deployment_processing_latency_ms")
    "ray_serve_deployment_processing_latency_ms_bucket",
    # python/ray/serve/_private/replica.py ("serve_replica_processing_queries"); used in
    # .../dashboards/serve_deployment_dashboard_panels.py by (application, deployment)
    "ray_serve_replica_processing_queries",
    # python/ray/serve/_private/request_ingress_metrics.py
    # (f"serve_num_{protocol}_error_requests", labels route/error_code/method/application)
    "ray_serve_num_http_error_requests_total",
}
# vLLM's engine metrics, re-exported through Ray when LLMConfig.log_engine_metrics is on
# (python/ray/llm/_internal/serve/engines/vllm/vllm_engine.py installs vLLM's
# RayPrometheusStatLogger). vLLM names them `vllm:<name>`; its ray_wrappers
# (vllm-project/vllm vllm/v1/metrics/ray_wrappers.py) turn `:` into `_`, and Ray adds
# `ray_`, so `vllm:num_requests_running` is scraped as `ray_vllm_num_requests_running`.
# Every name below appears in ray 2.60.0's
# python/ray/dashboard/modules/metrics/dashboards/serve_llm_dashboard_panels.py.
VLLM_THROUGH_RAY = {
    "ray_vllm_num_requests_running",
    "ray_vllm_num_requests_waiting",
    "ray_vllm_kv_cache_usage_perc",
    "ray_vllm_prompt_tokens_total",
    "ray_vllm_generation_tokens_total",
    "ray_vllm_time_to_first_token_seconds_bucket",
    "ray_vllm_request_time_per_output_token_seconds_bucket",
}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def operator_series() -> set[str]:
    names = set(METRIC_NAMES)
    histograms = {n for n in METRIC_NAMES if n.endswith("_seconds")}
    return names | {h + suffix for h in histograms for suffix in HISTOGRAM_SUFFIXES}


KNOWN = operator_series() | RAY_SERVE | VLLM_THROUGH_RAY


def load() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return loaded


def expressions(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            yield panel["title"], target["expr"]
    for variable in dashboard["templating"]["list"]:
        query = variable.get("query")
        if isinstance(query, dict) and query["query"].startswith("label_values("):
            # label_values(<selector>, <label>) is Grafana's, not PromQL: check the selector.
            inner = query["query"].removeprefix("label_values(").rsplit(",", 1)[0]
            yield f"variable {variable['name']}", inner


def metric_names(node: Any) -> Iterator[str]:
    """Every metric a parsed PromQL expression selects."""
    if isinstance(node, promql_parser.VectorSelector):
        yield node.name
        return
    if isinstance(node, promql_parser.MatrixSelector):
        yield from metric_names(node.vector_selector)
        return
    for attribute in ("expr", "lhs", "rhs", "param"):
        child = getattr(node, attribute, None)
        if child is not None:
            yield from metric_names(child)
    for argument in getattr(node, "args", None) or []:
        yield from metric_names(argument)


def unknown_metrics(expression: str) -> set[str]:
    return set(metric_names(promql_parser.parse(expression))) - KNOWN


def test_dashboard_is_importable_json() -> None:
    dashboard = load()
    assert dashboard["uid"] and dashboard["title"]
    names = [v["name"] for v in dashboard["templating"]["list"]]
    assert names[:2] == ["datasource", "namespace"]
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize(("where", "expression"), list(expressions(load())))
def test_every_query_parses_and_reads_known_metrics(where: str, expression: str) -> None:
    assert unknown_metrics(expression) == set(), where


def test_dashboard_covers_what_the_issue_asks() -> None:
    used = {name for _, e in expressions(load()) for name in metric_names(promql_parser.parse(e))}
    assert {"llmop_llmdeployments", "llmop_gpus_requested"} <= used
    assert used & RAY_SERVE == RAY_SERVE
    assert len(used & VLLM_THROUGH_RAY) >= 5


def test_checker_catches_unknown_names_and_bad_syntax() -> None:
    assert unknown_metrics('sum(rate(ray_serve_made_up_total{a="b"}[5m]))') == {
        "ray_serve_made_up_total"
    }
    with pytest.raises(ValueError):
        promql_parser.parse("sum(rate(llmop_reconciles_total[5m])")


def test_ray_names_are_the_ones_ray_own_dashboards_read() -> None:
    """With Ray installed (the `ray` extra), re-check the lists against its source."""
    ray = require_or_skip("ray", "the metric names are checked against Ray's own panels")
    assert ray.__file__ is not None
    panels = Path(ray.__file__).parent / "dashboard" / "modules" / "metrics" / "dashboards"
    text = "".join(path.read_text(encoding="utf-8") for path in panels.glob("serve*_panels.py"))
    # Ray's LLM panels build histogram queries from the base name.
    missing = {n for n in RAY_SERVE | VLLM_THROUGH_RAY if n.removesuffix("_bucket") not in text}
    assert missing == set()


def test_ray_queries_filter_on_the_label_the_pod_monitors_add() -> None:
    templates = ROOT / "charts" / "llm-operator" / "templates"
    for monitor in ("podmonitor-ray-head.yaml", "podmonitor-ray-worker.yaml"):
        assert "targetLabel: llm_deployment" in (templates / monitor).read_text(encoding="utf-8")
    ray_queries = [
        e for where, e in expressions(load()) if "ray_" in e and not where.startswith("variable")
    ]
    assert ray_queries
    assert all('llm_deployment=~"$deployment"' in e for e in ray_queries)
