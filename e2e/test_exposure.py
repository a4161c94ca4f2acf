"""A route in: spec.exposure.gateway on the real API server with the Gateway API's CRDs,
the operator and KubeRay.

The local cluster installs the Gateway API's standard CRDs at the version KubeRay pins
(e2e/tools.sh links them as .e2e/bin/gateway-api-crds; e2e/cluster.sh applies them); on a
cluster without them this module applies them from that path first. No Gateway
controller runs here, so the test writes the Gateway's `status.addresses` as one would.
What this shows: the API server accepts the operator's HTTPRoute as rendered; the route is
owned by the LLMDeployment, leads to KubeRay's `<rayservice>-serve-svc` on port 8000, is
restored after an edit and re-made after a deletion; `status.endpoint` becomes the URL
through the Gateway once the Gateway has an address; a spec that drops the route gets it
deleted. What it does not show: traffic through a real Gateway.
"""

from __future__ import annotations

import os
import subprocess
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from support import CRD_SECONDS, ROOT, Kube, condition, sample, wait_for

from llm_operator.render import names

Body = dict[str, Any]
GATEWAY_API_CRDS = (
    os.environ.get("LLM_OPERATOR_BIN_DIR", str(ROOT / ".e2e" / "bin")) + "/gateway-api-crds"
)
ROUTE_CRDS = ("httproutes.gateway.networking.k8s.io", "gateways.gateway.networking.k8s.io")
GATEWAY = "public"


def _established(kube: Kube) -> bool:
    crds = client.ApiextensionsV1Api(kube.api).list_custom_resource_definition().items
    ready = {
        crd.metadata.name
        for crd in crds
        if any(c.type == "Established" and c.status == "True" for c in crd.status.conditions or [])
    }
    return all(name in ready for name in ROUTE_CRDS)


@pytest.fixture(scope="module", autouse=True)
def gateway_api(kube: Kube) -> None:
    install_gateway_api(kube)


def install_gateway_api(kube: Kube) -> None:
    """The Gateway API's CRDs, applied from the pinned path if the cluster lacks them
    (kind); e2e/cluster.sh installs them before KubeRay starts."""
    if _established(kube):
        return
    subprocess.run(
        ["kubectl", "apply", "--server-side", "--force-conflicts", "-f", f"{GATEWAY_API_CRDS}/"],
        check=True,
        capture_output=True,
    )
    wait_for(lambda: _established(kube), "the Gateway API's CRDs", CRD_SECONDS)


def _gw(kube: Kube, method: str, namespace: str, plural: str, *args: Any, **kwargs: Any) -> Any:
    call = getattr(kube.custom, f"{method}_namespaced_custom_object")
    return call(names.GATEWAY_GROUP, names.GATEWAY_VERSION, namespace, plural, *args, **kwargs)


def route(kube: Kube, namespace: str, name: str) -> Body | None:
    try:
        found: Body = _gw(kube, "get", namespace, names.HTTP_ROUTES, name)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return found


def patch_status(kube: Kube, namespace: str, plural: str, name: str, patch: Body) -> None:
    """Write an object's status as its controller would (merge patch)."""
    kube.custom.patch_namespaced_custom_object_status(
        names.GATEWAY_GROUP, names.GATEWAY_VERSION, namespace, plural, name, patch,
        _content_type="application/merge-patch+json",
    )  # fmt: skip


def create_gateway(kube: Kube, namespace: str) -> None:
    """A Gateway with an HTTP listener; its class has no controller here."""
    body = {
        "apiVersion": names.GATEWAY_API_VERSION,
        "kind": "Gateway",
        "metadata": {"name": GATEWAY, "namespace": namespace},
        "spec": {
            "gatewayClassName": "e2e-no-controller",
            "listeners": [
                {"name": "http", "port": 8080, "protocol": "HTTP",
                 "allowedRoutes": {"namespaces": {"from": "Same"}}},
            ],
        },
    }  # fmt: skip
    _gw(kube, "create", namespace, names.GATEWAYS, body)


def exposed(namespace: str) -> Body:
    def edit(body: Body) -> None:
        body["spec"]["exposure"]["gateway"] = {
            "parentRefs": [{"name": GATEWAY}],
            "hostnames": ["llm.e2e.example"],
            "path": "/qwen",
        }

    return sample("gateway-route", namespace, edit)


def test_route_is_owned_restored_reported_and_dropped(kube: Kube, namespace: str) -> None:
    create_gateway(kube, namespace)
    llmd = kube.create_llmd(exposed(namespace))
    name = llmd["metadata"]["name"]
    found = wait_for(lambda: route(kube, namespace, name), "the operator's HTTPRoute")
    (owner,) = found["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"]) == (
        "LLMDeployment",
        name,
        llmd["metadata"]["uid"],
    )
    (rule,) = found["spec"]["rules"]
    (backend,) = rule["backendRefs"]
    # KubeRay's name for the RayService's Serve service, and Serve's port.
    assert (backend["name"], backend["port"]) == (f"{name}-serve-svc", 8000)
    assert rule["matches"][0]["path"] == {"type": "PathPrefix", "value": "/qwen"}

    def status() -> Body:
        return kube.get_llmd(namespace, name).get("status") or {}

    wait_for(lambda: status().get("httpRoute") == name or None, "status.httpRoute")
    assert status()["endpoint"] == names.endpoint(name, namespace), "no address yet"
    spec_valid = condition(kube.get_llmd(namespace, name), "SpecValid") or {}
    assert spec_valid.get("status") == "True", spec_valid

    # Edited by hand: restored.
    edited = [{"op": "replace", "path": "/spec/rules/0/backendRefs/0/name", "value": "elsewhere"}]
    _gw(kube, "patch", namespace, names.HTTP_ROUTES, name, edited,
        _content_type="application/json-patch+json")  # fmt: skip
    wait_for(
        lambda: (
            (r := route(kube, namespace, name))
            and r["spec"]["rules"][0]["backendRefs"][0]["name"] == f"{name}-serve-svc"
        ),
        "the operator to restore the route",
    )
    # Deleted by hand: made again.
    uid = route(kube, namespace, name)["metadata"]["uid"]  # type: ignore[index]
    _gw(kube, "delete", namespace, names.HTTP_ROUTES, name)
    wait_for(
        lambda: (r := route(kube, namespace, name)) and r["metadata"]["uid"] != uid,
        "the operator to make the route again",
    )

    # The Gateway's controller would publish its address: status shows the external URL.
    patch_status(
        kube,
        namespace,
        names.GATEWAYS,
        GATEWAY,
        {"status": {"addresses": [{"type": "IPAddress", "value": "203.0.113.7"}]}},
    )
    # A change of the route (here: its status, as a Gateway controller writes it) makes
    # the operator reconcile and read the Gateway again.
    accepted = {
        "type": "Accepted",
        "status": "True",
        "reason": "Accepted",
        "message": "",
        "lastTransitionTime": "2026-01-01T00:00:00Z",
        "observedGeneration": 1,
    }
    patch_status(kube, namespace, names.HTTP_ROUTES, name, {"status": {"parents": [
        {"parentRef": {"name": GATEWAY}, "controllerName": "example.com/e2e",
         "conditions": [accepted]}]}})  # fmt: skip
    wait_for(
        lambda: status().get("endpoint") == "http://llm.e2e.example:8080/qwen/v1" or None,
        "status.endpoint through the Gateway",
    )

    # Dropped from the spec: deleted, and status forgets it.
    kube.patch_llmd(namespace, name, {"spec": {"exposure": None}})
    wait_for(lambda: route(kube, namespace, name) is None or None, "the route to be deleted")
    wait_for(lambda: "httpRoute" not in status() or None, "status.httpRoute to go")
    assert status()["endpoint"] == names.endpoint(name, namespace)
