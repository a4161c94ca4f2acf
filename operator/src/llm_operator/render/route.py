"""The Gateway API HTTPRoute of spec.exposure.gateway: from the Gateways to the Serve
service KubeRay makes for the RayService."""

from __future__ import annotations

from llm_operator.api.models import GatewayExposureSpec, GatewayParentRef, LLMDeployment
from llm_operator.render import names
from llm_operator.yamlio import Manifest


def parent_ref(ref: GatewayParentRef) -> Manifest:
    """A Gateway API ParentReference: group and kind left to their defaults (Gateway)."""
    out: Manifest = {"name": ref.name}
    if ref.namespace is not None:
        out["namespace"] = ref.namespace
    if ref.section_name is not None:
        out["sectionName"] = ref.section_name
    if ref.port is not None:
        out["port"] = ref.port
    return out


def route_rule(llmd: LLMDeployment, gateway: GatewayExposureSpec) -> Manifest:
    """Everything under the path prefix to the Serve port of `<rayservice>-serve-svc`;
    below '/', the prefix is replaced by '/' (Serve's application answers at '/')."""
    rule: Manifest = {
        "matches": [{"path": {"type": "PathPrefix", "value": gateway.path}}],
        "backendRefs": [
            {"name": names.serve_service_name(llmd.name), "port": names.SERVE_PORT},
        ],
    }
    if gateway.path != "/":
        rule["filters"] = [
            {
                "type": "URLRewrite",
                "urlRewrite": {"path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/"}},
            }
        ]
    return rule


def http_route(llmd: LLMDeployment) -> Manifest | None:
    """The route, or None when the spec asks for none (or the mode serves nothing: the
    CRD allows exposure in mode Service only)."""
    exposure = llmd.spec.exposure
    if exposure is None or exposure.gateway is None or llmd.spec.mode != "Service":
        return None
    gateway = exposure.gateway
    spec: Manifest = {"parentRefs": [parent_ref(ref) for ref in gateway.parent_refs]}
    if gateway.hostnames:
        spec["hostnames"] = list(gateway.hostnames)
    spec["rules"] = [route_rule(llmd, gateway)]
    return {
        "apiVersion": names.GATEWAY_API_VERSION,
        "kind": "HTTPRoute",
        "metadata": {
            "name": names.http_route_name(llmd.name),
            "namespace": llmd.namespace,
            "labels": names.labels(llmd.name, "http-route"),
        },
        "spec": spec,
    }
