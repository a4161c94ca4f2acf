"""The floor for bench/scale.py: an ideal controller that makes the operator's writes and
nothing else.

For each new LLMDeployment a watch delivers, it creates the RayService and patches the
status, as the operator's first reconcile does (`create rayservices`, `patch
llmdeployments/status`, field manager `llm-operator`), with both bodies rendered by the
operator's own functions before the clock starts. Only the owner reference (the uid the
watch event brings) is filled in per object.

It runs on aiohttp, the HTTP client kopf itself uses for its watches and patches (a
dependency of kopf, so nothing new to install; `kubernetes_asyncio` is not in kopf's
environment), with the credentials of a kubeconfig as the Kubernetes client reads them.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from kubernetes import client

from llm_operator.api.constants import GROUP, PLURAL, VERSION
from llm_operator.api.validation import resolve
from llm_operator.controller import kube, reconciler, status
from llm_operator.render import names, render_children
from llm_operator.settings import OperatorSettings

Body = dict[str, Any]


@dataclass(frozen=True)
class Request:
    """One write: method, path, content type, body (as the operator sends it)."""

    method: str
    path: str
    content_type: str
    body: Any


@dataclass(frozen=True)
class Prepared:
    """An LLMDeployment's two writes, rendered ahead; `requests` adds its uid."""

    namespace: str
    name: str
    ray_service: Body
    status_patch: Body

    def requests(self, uid: str) -> list[Request]:
        owner = reconciler.owner_of(
            {"metadata": {"name": self.name, "namespace": self.namespace, "uid": uid}}
        )
        service = {**self.ray_service, "metadata": dict(self.ray_service["metadata"])}
        reconciler._adopt(service, owner)
        plural = kube.RAY_PLURALS[service["kind"]]
        ray_base = f"/apis/{names.RAY_GROUP}/{names.RAY_VERSION}/namespaces/{self.namespace}"
        llmd = f"/apis/{GROUP}/{VERSION}/namespaces/{self.namespace}/{PLURAL}/{self.name}"
        return [
            Request("POST", f"{ray_base}/{plural}", "application/json", service),
            Request("PATCH", f"{llmd}/status", kube.MERGE_PATCH, {"status": self.status_patch}),
        ]


def prepare(body: Mapping[str, Any], settings: OperatorSettings, now: str) -> Prepared:
    """What the operator's first reconcile of `body` writes, for a RayService child that
    KubeRay has not touched yet (the create's answer carries no status)."""
    # A new object's generation, as the API server sets it on create.
    body = {**body, "metadata": {"generation": 1, **body["metadata"]}}
    plan = resolve(body, settings.gpu_memory_gib)
    children = render_children(plan, settings)
    if children.claims:
        raise ValueError("the ideal controller makes no claims: use a sample without storage")
    observed = status.observe(plan, children.ray)
    after = status.reconciled_status(plan, observed, {}, now)
    patch = status.status_patch({}, after)
    assert patch is not None  # a first status always differs from none
    meta = body["metadata"]
    return Prepared(meta["namespace"], meta["name"], children.ray, patch)


def session_parts(
    configuration: client.Configuration,
) -> tuple[str, ssl.SSLContext, dict[str, str]]:
    """Host, TLS context and headers from a kubeconfig as the Kubernetes client loaded it."""
    context = ssl.create_default_context(cafile=configuration.ssl_ca_cert)
    if configuration.cert_file:
        context.load_cert_chain(configuration.cert_file, configuration.key_file)
    if not configuration.verify_ssl:
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    headers = {}
    token = configuration.api_key.get("authorization") or configuration.api_key.get("BearerToken")
    if token:
        headers["Authorization"] = token if token.startswith("Bearer ") else f"Bearer {token}"
    return configuration.host, context, headers


async def _send(session: aiohttp.ClientSession, host: str, request: Request) -> None:
    async with session.request(
        request.method,
        host + request.path,
        params={"fieldManager": kube.FIELD_MANAGER},
        data=json.dumps(request.body),
        headers={"Content-Type": request.content_type},
    ) as response:
        if response.status >= 300:
            raise RuntimeError(f"{request.method} {request.path}: HTTP {response.status}")


async def run(
    configuration: client.Configuration,
    namespace: str,
    prepared: Mapping[str, Prepared],
    started: asyncio.Event | None = None,
) -> None:
    """Watch `namespace`'s LLMDeployments; for each new one in `prepared`, its two writes.
    Returns once every prepared one is written."""
    host, context, headers = session_parts(configuration)
    pending = set(prepared)
    url = f"{host}/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}"
    connector = aiohttp.TCPConnector(ssl=context, limit=8)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:
        tasks: set[asyncio.Task[None]] = set()

        async def converge(item: Prepared, uid: str) -> None:
            for request in item.requests(uid):
                await _send(session, host, request)

        params = {"watch": "true", "timeoutSeconds": "1800"}
        async with session.get(url, params=params, timeout=aiohttp.ClientTimeout(None)) as watch:
            if started is not None:
                started.set()
            async for line in watch.content:
                event = json.loads(line)
                meta = event["object"]["metadata"]
                if event["type"] == "ADDED" and meta["name"] in pending:
                    pending.discard(meta["name"])
                    task = asyncio.create_task(converge(prepared[meta["name"]], meta["uid"]))
                    tasks.add(task)
                if not pending:
                    break
        await asyncio.gather(*tasks)
