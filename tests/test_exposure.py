"""A route in: spec.exposure.gateway renders a Gateway API HTTPRoute to the Serve service,
which the operator owns, restores, deletes when dropped and reports through status."""

from __future__ import annotations

from typing import Any

import pytest

from conftest import BIN_DIR, SAMPLES, crd_schema, load_one, refusals, unknown_fields
from fakeapi import (
    NAMESPACE,
    SERVED,
    FakeApiServer,
    cluster_api,
    gateway_path,
    llmd_path,
    ray_path,
)
from llm_operator.api import rules
from llm_operator.api.validation import names_field, resolve
from llm_operator.api.vocabulary import ConditionType, Reason
from llm_operator.controller import kube, reconciler, status
from llm_operator.render import names, render
from test_reconciler import OWNER_UID, reconcile, stored_body

Body = dict[str, Any]
GATEWAY_API_CRDS = BIN_DIR / "gateway-api-crds"


def exposed(**gateway: Any) -> Body:
    """The gateway-route sample (Gateway gateways/public, listener https, host
    llm.example.com, path /qwen) with `gateway` keys replaced."""
    body = load_one(SAMPLES / "gateway-route.yaml")
    body["spec"]["exposure"]["gateway"].update(gateway)
    return body


def route_of(body: Body) -> Body:
    (route,) = [c for c in render(resolve(body)) if c["kind"] == "HTTPRoute"]
    return route


# --- render -------------------------------------------------------------------------------


def test_route_leads_from_the_gateway_to_the_serve_service() -> None:
    route = route_of(exposed())
    assert route["apiVersion"] == "gateway.networking.k8s.io/v1"
    assert route["metadata"]["name"] == "qwen-public"
    assert route["metadata"]["labels"][names.DEPLOYMENT_LABEL] == "qwen-public"
    spec = route["spec"]
    assert spec["parentRefs"] == [
        {"name": "public", "namespace": "gateways", "sectionName": "https"}
    ]
    assert spec["hostnames"] == ["llm.example.com"]
    (rule,) = spec["rules"]
    # KubeRay names the RayService's Serve service <rayservice>-serve-svc, port 8000.
    assert rule["backendRefs"] == [{"name": "qwen-public-serve-svc", "port": 8000}]
    assert rule["matches"] == [{"path": {"type": "PathPrefix", "value": "/qwen"}}]
    # Serve's application answers at '/': the prefix is cut before the request reaches it.
    assert rule["filters"] == [
        {
            "type": "URLRewrite",
            "urlRewrite": {"path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/"}},
        }
    ]


def test_route_at_the_root_needs_no_rewrite_and_hostnames_are_optional() -> None:
    body = exposed(path="/", parentRefs=[{"name": "public"}])
    del body["spec"]["exposure"]["gateway"]["hostnames"]
    spec = route_of(body)["spec"]
    assert "filters" not in spec["rules"][0] and "hostnames" not in spec
    assert spec["parentRefs"] == [{"name": "public"}]


def test_no_exposure_no_route() -> None:
    body = exposed()
    del body["spec"]["exposure"]
    assert [c["kind"] for c in render(resolve(body))] == ["RayService"]


def _schema(plural: str) -> Body:
    path = GATEWAY_API_CRDS / f"gateway.networking.k8s.io_{plural}.yaml"
    return crd_schema(path, "`e2e/tools.sh kuberay` links the Gateway API's CRDs")


def test_every_rendered_field_is_in_the_gateway_apis_crd() -> None:
    schema = _schema("httproutes")
    route = route_of(exposed(parentRefs=[{"name": "public", "port": 443}]))
    assert unknown_fields(route, schema, "") == []
    assert unknown_fields({"spec": {"rules": [{"backendRef": {}}]}}, schema, "") != []  # guard
    hostname = schema["properties"]["spec"]["properties"]["hostnames"]["items"]["pattern"]
    # Our host name format is the CRD's own.
    assert rules.GATEWAY_HOSTNAME.pattern == hostname


# --- admission and validation ------------------------------------------------------------


def test_only_in_mode_service() -> None:
    body = exposed()
    body["spec"]["mode"] = "Cluster"
    assert any(names_field(m, "spec.exposure.gateway") for m in refusals(body))


@pytest.mark.parametrize("path", ["qwen", "/qwen/", "/a//b", "/a/../b", "/a/./b", "/a%2fb"])
def test_path_must_be_absolute_and_normalised(path: str) -> None:
    assert any(names_field(m, "spec.exposure.gateway.path") for m in refusals(exposed(path=path)))


@pytest.mark.parametrize("host", ["10.0.0.1x_", "LLM.example.com", "a.*.example.com", ""])
def test_hostnames_are_gateway_api_hostnames(host: str) -> None:
    messages = refusals(exposed(hostnames=[host]))
    assert any(names_field(m, "spec.exposure.gateway.hostnames[0]") for m in messages), messages


def test_a_gateway_to_attach_to_is_required() -> None:
    messages = refusals(exposed(parentRefs=[]))
    assert any(names_field(m, "spec.exposure.gateway.parentRefs") for m in messages), messages


# --- the external URL ----------------------------------------------------------------------


def gateway(*addresses: str, listeners: list[Body] | None = None) -> Body:
    return {
        "spec": {"listeners": listeners or [{"name": "http", "port": 80, "protocol": "HTTP"}]},
        "status": {"addresses": [{"type": "IPAddress", "value": a} for a in addresses]},
    }


def test_no_address_no_external_url() -> None:
    assert status.gateway_endpoint(gateway(), hostnames=[], path="/") is None
    assert status.gateway_endpoint(None, hostnames=[], path="/") is None


def test_external_url_from_the_gateways_address_and_listener() -> None:
    assert (
        status.gateway_endpoint(gateway("203.0.113.7"), hostnames=[], path="/")
        == "http://203.0.113.7/v1"
    )
    listeners = [
        {"name": "http", "port": 8080, "protocol": "HTTP"},
        {"name": "https", "port": 443, "protocol": "HTTPS"},
    ]
    found = gateway("203.0.113.7", listeners=listeners)
    assert (
        status.gateway_endpoint(
            found,
            hostnames=["*.example.com", "llm.example.com"],
            path="/qwen",
            section_name="https",
        )
        == "https://llm.example.com/qwen/v1"
    )
    assert (
        status.gateway_endpoint(found, hostnames=[], path="/", port=8080)
        == "http://203.0.113.7:8080/v1"
    )
    assert status.gateway_endpoint(gateway("2001:db8::1"), hostnames=[], path="/") == (
        "http://[2001:db8::1]/v1"
    )


# --- the reconcile ---------------------------------------------------------------------------


def without_gateway_api() -> FakeApiServer:
    server = FakeApiServer()
    server.served = {k: v for k, v in SERVED.items() if k != names.GATEWAY_API_VERSION}
    return server


def test_no_gateway_api_and_no_route_asked_for_costs_nothing() -> None:
    server = without_gateway_api()
    body = exposed()
    del body["spec"]["exposure"]
    name = stored_body(server, body)
    result = reconcile(server, name, cluster_api(server))
    assert not any(a.group == names.GATEWAY_GROUP for a in server.accesses)
    spec_valid = {c["type"]: c for c in result["conditions"]}[ConditionType.SPEC_VALID]
    assert spec_valid["status"] == "True"


def test_a_route_asked_for_without_the_gateway_api_is_reported_and_retried() -> None:
    server = without_gateway_api()
    name = stored_body(server, exposed())
    with pytest.raises(kube.RouteNotServed) as caught:
        reconcile(server, name, cluster_api(server))
    assert caught.value.delay == kube.NOT_SERVED_RETRY_SECONDS
    result = server.objects[llmd_path(name)]["status"]
    spec_valid = {c["type"]: c for c in result["conditions"]}[ConditionType.SPEC_VALID]
    assert (spec_valid["status"], spec_valid["reason"]) == (
        "False",
        Reason.GATEWAY_API_NOT_INSTALLED,
    )
    assert names_field(spec_valid["message"], "spec.exposure.gateway")
    assert "httproutes.gateway.networking.k8s.io/v1" in spec_valid["message"]
    # The model is still served in the cluster.
    assert ray_path("rayservices", name) in server.objects
    assert result["endpoint"] == names.endpoint(name, NAMESPACE)
    assert "httpRoute" not in result


def test_route_created_owned_reported_then_deleted_when_dropped() -> None:
    server = FakeApiServer()
    api = cluster_api(server)
    name = stored_body(server, exposed())
    result = reconcile(server, name, api)
    route_path = gateway_path(names.HTTP_ROUTES, name)
    route = server.objects[route_path]
    (ref,) = route["metadata"]["ownerReferences"]
    assert (ref["uid"], ref["kind"], ref["controller"]) == (OWNER_UID, "LLMDeployment", True)
    assert result["httpRoute"] == name
    # No Gateway (or no address yet): the in-cluster URL.
    assert result["endpoint"] == names.endpoint(name, NAMESPACE)

    # The Gateway's controller gives it an address: the next reconcile reports the URL.
    listeners = [{"name": "https", "port": 443, "protocol": "HTTPS"}]
    server.put(
        gateway_path(names.GATEWAYS, "public", "gateways"),
        gateway("203.0.113.7", listeners=listeners),
    )
    result = reconcile(server, name, api)
    assert result["endpoint"] == "https://llm.example.com/qwen/v1"
    writes = len(server.writes)
    reconcile(server, name, api)
    assert len(server.writes) == writes, "an unchanged route and status write nothing"

    # Drift on the route is restored.
    server.objects[route_path]["spec"]["rules"][0]["backendRefs"][0]["name"] = "elsewhere"
    reconcile(server, name, api)
    assert server.objects[route_path]["spec"]["rules"][0]["backendRefs"][0]["name"] == (
        names.serve_service_name(name)
    )

    # Dropped from the spec: deleted, and status forgets it.
    llmd = server.objects[llmd_path(name)]
    del llmd["spec"]["exposure"]
    llmd["metadata"]["generation"] = 2
    result = reconcile(server, name, api)
    assert route_path not in server.objects
    assert "httpRoute" not in result
    assert result["endpoint"] == names.endpoint(name, NAMESPACE)


def test_the_routes_own_creation_event_reconciles_nothing() -> None:
    assert reconciler.redundant_child_event("ADDED", "HTTPRoute")
    assert not reconciler.redundant_child_event("MODIFIED", "HTTPRoute")
    assert not reconciler.redundant_child_event("DELETED", "HTTPRoute")


def test_a_gateway_the_operator_may_not_read_costs_only_the_external_url() -> None:
    """A namespaced install reads no Gateway outside its namespaces (403)."""
    server = FakeApiServer()
    name = stored_body(server, exposed())
    server.fail("get", names.GATEWAYS, 403, "forbidden")
    result = reconcile(server, name, cluster_api(server))
    assert result["httpRoute"] == name
    assert result["endpoint"] == names.endpoint(name, NAMESPACE)
