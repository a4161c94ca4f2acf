"""A fake Kubernetes API server behind the real Kubernetes client, for unit tests.

The client builds and sends its HTTP requests as it would to a cluster; `RecordingApiClient`
hands each to a `FakeApiServer`, which keeps objects by URL path, answers as the API
server would (404 for a missing object or a kind whose CRD is not served, 409 for a
taken name, a stale resourceVersion or an unforced apply over another field manager's,
422 for a failed JSON-patch test) and records every request as the API server's
authorizer reads it, with the field manager it names. `fail` makes the next matching
requests fail with a status of the test's choosing (403, 409, 422, ...).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, NamedTuple
from urllib.parse import parse_qs, unquote, urlsplit

from kubernetes import client
from kubernetes.client import rest

from llm_operator.api.constants import GROUP, PLURAL, VERSION
from llm_operator.controller import kube
from llm_operator.render import names

NAMESPACE = "team-a"
Body = dict[str, Any]


class Access(NamedTuple):
    """One request as the authorizer sees it; `namespaced` False is cluster-wide."""

    group: str
    resource: str  # with its subresource: "llmdeployments/status"
    verb: str
    namespaced: bool


def access_of(method: str, url: str) -> Access | None:
    """The API server's reading of a request (its RequestInfo): None for discovery,
    which every authenticated user may do."""
    parts = urlsplit(url)
    path = [unquote(p) for p in parts.path.strip("/").split("/")]
    group, rest_ = ("", path[2:]) if path[0] == "api" else (path[1], path[3:])
    if not rest_:
        return None
    namespaced = rest_[0] == "namespaces" and len(rest_) > 2
    if namespaced:
        rest_ = rest_[2:]
    resource, name, sub = [*rest_, "", ""][:3]
    if method == "GET":
        watch = parse_qs(parts.query).get("watch") == ["true"]
        verb = "get" if name else ("watch" if watch else "list")
    else:
        verb = {"POST": "create", "PUT": "update", "PATCH": "patch"}.get(method, "")
        verb = verb or ("delete" if name else "deletecollection")
    return Access(group, f"{resource}/{sub}" if sub else resource, verb, namespaced)


SERVED = {
    f"{GROUP}/{VERSION}": [(PLURAL, "LLMDeployment")],
    f"{names.RAY_GROUP}/{names.RAY_VERSION}": [
        ("rayservices", "RayService"),
        ("rayclusters", "RayCluster"),
        ("rayjobs", "RayJob"),
    ],
    names.GATEWAY_API_VERSION: [
        (names.HTTP_ROUTES, "HTTPRoute"),
        (names.GATEWAYS, "Gateway"),
    ],
    "batch/v1": [("jobs", "Job")],
}


def _merge(target: Any, patch: Any) -> Any:
    """A JSON merge patch (RFC 7386); also how this fake applies server-side apply."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = _merge(out.get(key), value)
    return out


def _json_patch(target: Body, ops: list[Body]) -> Body | None:
    """A JSON patch of `test`, `add` and `replace` ops; None when a test fails."""
    out = copy.deepcopy(target)
    for op in ops:
        *parents, last = op["path"].strip("/").split("/")
        node: Any = out
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        key: Any = int(last) if isinstance(node, list) else last
        if op["op"] == "test":
            if node[key] != op["value"]:
                return None
        else:
            node[key] = op["value"]
    return out


class Failure(NamedTuple):
    """Requests to fail: those of `verb` on `resource` (as in `Access`)."""

    verb: str
    resource: str
    status: int
    message: str


class Write(NamedTuple):
    """A write as the API server saw it: what, how, by which field manager, and its body."""

    access: Access
    path: str
    content_type: str
    field_manager: str | None
    body: Any


class FakeApiServer:
    """Objects by URL path; answers the requests the client sends, records each."""

    def __init__(self, served: dict[str, list[tuple[str, str]]] | None = None) -> None:
        self.objects: dict[str, Body] = {}
        self.accesses: list[Access] = []
        self.writes: list[Write] = []
        self.version = 0
        self.served = dict(SERVED if served is None else served)
        # path -> the field manager of the last server-side apply to it
        self.appliers: dict[str, str] = {}
        self._failures: list[Failure] = []

    def fail(
        self, verb: str, resource: str, status: int, message: str = "", times: int = 1
    ) -> None:
        """The next `times` requests of `verb` on `resource` get `status`."""
        self._failures += [Failure(verb, resource, status, message)] * times

    def _failure(self, access: Access) -> Failure | None:
        for failure in self._failures:
            if (failure.verb, failure.resource) == (access.verb, access.resource):
                self._failures.remove(failure)
                return failure
        return None

    def _served(self, path: str) -> bool:
        """Whether the path's group/version serves its resource (core always does)."""
        parts = path.strip("/").split("/")
        if parts[0] == "api":
            return True
        resource = parts[5] if len(parts) > 5 and parts[3] == "namespaces" else parts[3]
        return any(
            plural == resource for plural, _ in self.served.get(f"{parts[1]}/{parts[2]}", [])
        )

    def put(self, path: str, body: Body) -> Body:
        self.version += 1
        meta = body.setdefault("metadata", {})
        meta["resourceVersion"] = str(self.version)
        meta.setdefault("uid", f"uid-{self.version}")
        meta.setdefault("generation", 1)
        self.objects[path] = body
        return body

    def handle(self, method: str, url: str, headers: dict[str, str], body: Any) -> Any:
        """The response body, or an int status for an error."""
        access = access_of(method, url)
        parts = urlsplit(url)
        path = parts.path
        if access is None:
            group_version = path.removeprefix("/apis/")
            if group_version not in self.served:
                return 404
            return {
                "kind": "APIResourceList",
                "groupVersion": group_version,
                "resources": [
                    {"name": plural, "kind": kind, "namespaced": True, "singularName": "",
                     "verbs": ["get"]}
                    for plural, kind in self.served[group_version]
                ],
            }  # fmt: skip
        self.accesses.append(access)
        failure = self._failure(access)
        if failure is not None:
            return failure.status, failure.message
        if not self._served(path):
            return 404
        query = parse_qs(parts.query)
        if access.verb not in ("get", "list", "watch"):
            manager = (query.get("fieldManager") or [None])[0]
            content_type = headers.get("Content-Type", "")
            self.writes.append(Write(access, path, content_type, manager, copy.deepcopy(body)))
        if access.verb == "list":
            found = [o for p, o in sorted(self.objects.items()) if p.startswith(path + "/")]
            return {"items": found, "metadata": {}}
        if access.verb == "create":
            target = f"{path}/{body['metadata']['name']}"
            if target in self.objects:
                return 409
            return self.put(target, copy.deepcopy(body))
        target = path.removesuffix("/status")
        if target not in self.objects:
            return 404
        live = self.objects[target]
        if access.verb == "get":
            return live
        if access.verb == "delete":
            return self.objects.pop(target)
        return self.patch(target, live, headers.get("Content-Type", ""), body, query)

    def patch(
        self,
        target: str,
        live: Body,
        content_type: str,
        patch: Any,
        query: dict[str, list[str]] | None = None,
    ) -> Any:
        if content_type == kube.JSON_PATCH:
            patched = _json_patch(live, patch)
            return 422 if patched is None else self.put(target, patched)
        wanted = patch.get("metadata", {}).get("resourceVersion")
        if wanted is not None and wanted != live["metadata"]["resourceVersion"]:
            return 409
        if content_type == kube.APPLY_PATCH:
            # Server-side apply: another manager's fields move only with force.
            query = query or {}
            manager = (query.get("fieldManager") or [""])[0]
            previous = self.appliers.get(target)
            if previous not in (None, manager) and query.get("force") != ["true"]:
                return 409, f"Apply failed with conflicts: fields of {previous}"
            self.appliers[target] = manager
        return self.put(target, _merge(live, patch))


class RecordingApiClient(client.ApiClient):
    """The real client down to the HTTP request, answered by a FakeApiServer."""

    def __init__(self, server: FakeApiServer) -> None:
        configuration = client.Configuration()
        configuration.host = "https://api.test"
        super().__init__(configuration)
        self.server = server

    def call_api(  # type: ignore[override]
        self,
        method: str,
        url: str,
        header_params: dict[str, str] | None = None,
        body: Any = None,
        post_params: Any = None,
        _request_timeout: Any = None,
    ) -> rest.RESTResponse:
        answer = self.server.handle(method, url, header_params or {}, body)
        message = ""
        if isinstance(answer, tuple):
            answer, message = answer
        # A create answers 201 Created, as the API server does: the client reads a
        # created object's body only under 201 (its response types map).
        ok = 201 if method == "POST" else 200
        status = answer if isinstance(answer, int) else ok
        error = {"message": message or f"HTTP {status}"}
        data = json.dumps(error if status >= 300 else answer)
        response = SimpleNamespace(
            status=status,
            reason="OK" if status < 300 else "Error",
            data=data.encode(),
            headers={"content-type": "application/json"},
        )
        return rest.RESTResponse(response)


class CallRecorder:
    """An API class of the client, recording the names of the methods called on it."""

    def __init__(self, api: Any, called: set[str]) -> None:
        self._api = api
        self._called = called

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._api, name)
        if name.startswith("_") or not callable(attribute):
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            self._called.add(name)
            return attribute(*args, **kwargs)

        return call


def llmd_path(name: str) -> str:
    return f"/apis/{GROUP}/{VERSION}/namespaces/{NAMESPACE}/{PLURAL}/{name}"


def ray_path(plural: str, name: str) -> str:
    return f"/apis/{names.RAY_GROUP}/{names.RAY_VERSION}/namespaces/{NAMESPACE}/{plural}/{name}"


def gateway_path(plural: str, name: str, namespace: str = NAMESPACE) -> str:
    return f"/apis/{names.GATEWAY_API_VERSION}/namespaces/{namespace}/{plural}/{name}"


def job_path(name: str) -> str:
    return f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs/{name}"


def claim_path(name: str) -> str:
    return f"/api/v1/namespaces/{NAMESPACE}/persistentvolumeclaims/{name}"


class Event(NamedTuple):
    type: str
    reason: str
    message: str


@dataclass(frozen=True)
class RecordingKubeApi(kube.KubeApi):
    """The operator's own `ClusterApi`, with its Events recorded instead of posted
    through kopf (which needs a running operator)."""

    events: list[Event] = field(default_factory=list)

    def post_event(self, owner: Body, *, type_: str, reason: str, message: str) -> None:
        self.events.append(Event(type_, reason, message))


def clients_of(server: FakeApiServer) -> kube.Clients:
    """The operator's clients, talking to `server`."""
    api = RecordingApiClient(server)
    return kube.Clients(client.CustomObjectsApi(api), client.CoreV1Api(api), client.BatchV1Api(api))


def cluster_api(server: FakeApiServer) -> RecordingKubeApi:
    return RecordingKubeApi(clients_of(server))
