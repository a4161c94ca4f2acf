"""Kubernetes API calls: read, create or patch children, write LLMDeployment status.

Every write names the field manager `llm-operator`. API failures become kopf's
`TemporaryError` (retried with backoff) with a message that says what to do, or
`PermanentError` when retrying cannot help.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final, Literal, cast

import kopf
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from llm_operator.api.constants import GROUP, PLURAL, VERSION
from llm_operator.api.vocabulary import RayKind
from llm_operator.controller.merge import (
    WorkerBounds,
    bounds_patch,
    claim_metadata_patch,
    contains,
    keep_autoscaler_fields,
)
from llm_operator.render.names import (
    GATEWAY_API_VERSION,
    GATEWAY_GROUP,
    GATEWAY_VERSION,
    GATEWAYS,
    HTTP_ROUTES,
    RAY_GROUP,
    RAY_VERSION,
)
from llm_operator.yamlio import Manifest

LOG = logging.getLogger(__name__)
FIELD_MANAGER: Final = "llm-operator"
RAY_PLURALS: Final = {
    RayKind.RAY_SERVICE: "rayservices",
    RayKind.RAY_CLUSTER: "rayclusters",
    RayKind.RAY_JOB: "rayjobs",
}
APPLY_PATCH: Final = "application/apply-patch+yaml"
MERGE_PATCH: Final = "application/merge-patch+json"
JSON_PATCH: Final = "application/json-patch+json"
RETRY_SECONDS: Final = 5
FORBIDDEN_RETRY_SECONDS: Final = 60
# Short, so an LLMDeployment waiting for KubeRay's CRDs goes ahead soon after they appear.
NOT_SERVED_RETRY_SECONDS: Final = 10
LIST_PAGE: Final = 500

Outcome = Literal["created", "updated", "unchanged"]


@dataclass(frozen=True)
class Clients:
    custom: client.CustomObjectsApi
    core: client.CoreV1Api
    # batch/v1 Jobs: the model-cache prefetch (spec.storage.modelCache.prefetch).
    batch: client.BatchV1Api


def connect() -> Clients:
    """In-cluster credentials when running in a pod, else the current kubeconfig."""
    config.load_config()  # type: ignore[no-untyped-call]
    api = client.ApiClient()
    return Clients(client.CustomObjectsApi(api), client.CoreV1Api(api), client.BatchV1Api(api))


def served_plurals(clients: Clients, group: str, version: str) -> set[str]:
    """The resources the API server serves in a group version (none before its CRDs are
    installed and established), in one discovery request."""
    try:
        listing = clients.custom.get_api_resources(group, version)
    except ApiException as exc:
        if exc.status == 404:
            return set()
        raise
    return {resource.name for resource in listing.resources}


def served(clients: Clients, group: str, version: str, plural: str) -> bool:
    """Whether the API server serves this resource yet (its CRD is installed and established)."""
    return plural in served_plurals(clients, group, version)


class NotServed(kopf.TemporaryError):
    """The API server does not serve a kind the operator writes (its CRD is missing)."""


class ChildRefused(kopf.PermanentError):
    """The API server refused a child as the spec rendered it (HTTP 400 or 422)."""


def _message(exc: ApiException) -> str:
    """The API server's own message (it names the child's field), else the raw body."""
    try:
        return str(json.loads(exc.body or "")["message"])[:1000]
    except (TypeError, ValueError, KeyError):
        return str(exc.body)[:1000]


def _explain(exc: ApiException, what: str) -> str:
    reason = exc.reason or "error"
    detail = (exc.body or "")[:500] if isinstance(exc.body, str) else ""
    return f"{what}: HTTP {exc.status} {reason} {detail}".strip()


@contextmanager
def api_errors(what: str, missing_crd_hint: str | None = None) -> Iterator[None]:
    """Turn API failures into kopf retries or permanent errors, with the next step."""
    try:
        yield
    except ApiException as exc:
        if exc.status == 404 and missing_crd_hint:
            raise NotServed(
                f"{what}: the API server does not serve it; {missing_crd_hint}",
                delay=NOT_SERVED_RETRY_SECONDS,
            ) from exc
        if exc.status == 403:
            # A namespace being deleted refuses new objects with 403 too; that is not RBAC,
            # and the retry ends when the namespace's LLMDeployment goes.
            terminating = "NamespaceTerminating" in str(exc.body)
            hint = (
                " (the namespace is being deleted)"
                if terminating
                else " (check the operator's RBAC)"
            )
            raise kopf.TemporaryError(
                _explain(exc, what) + hint, delay=FORBIDDEN_RETRY_SECONDS
            ) from exc
        if exc.status in (400, 422):
            # The API server refused what the spec rendered: retrying cannot help.
            raise ChildRefused(f"the API server refused {what}: {_message(exc)}") from exc
        raise kopf.TemporaryError(_explain(exc, what), delay=RETRY_SECONDS) from exc


@dataclass(frozen=True)
class CustomKind:
    """Where the API server serves a kind of custom object."""

    group: str
    version: str
    plural: str

    @property
    def served_as(self) -> str:
        return f"{self.plural}.{self.group}/{self.version}"


RAY_KINDS: Final = {
    kind: CustomKind(RAY_GROUP, RAY_VERSION, plural) for kind, plural in RAY_PLURALS.items()
}
HTTP_ROUTE: Final = CustomKind(GATEWAY_GROUP, GATEWAY_VERSION, HTTP_ROUTES)
GATEWAY: Final = CustomKind(GATEWAY_GROUP, GATEWAY_VERSION, GATEWAYS)


def _ray_plural(kind: str) -> str:
    """The plural of a Ray kind, as a manifest's `kind` names it."""
    return RAY_PLURALS[RayKind(kind)]


def _get(clients: Clients, kind: CustomKind, namespace: str, name: str) -> Manifest | None:
    try:
        found = cast(
            Manifest,
            clients.custom.get_namespaced_custom_object(
                kind.group, kind.version, namespace, kind.plural, name
            ),
        )
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return found


def get_ray_resource(clients: Clients, kind: str, namespace: str, name: str) -> Manifest | None:
    return _get(clients, RAY_KINDS[RayKind(kind)], namespace, name)


def _create(clients: Clients, kind: CustomKind, desired: Manifest) -> Manifest | None:
    """Create the object; None when one of that name exists already."""
    meta = desired["metadata"]
    try:
        created = clients.custom.create_namespaced_custom_object(
            kind.group,
            kind.version,
            meta["namespace"],
            kind.plural,
            desired,
            field_manager=FIELD_MANAGER,
        )
    except ApiException as exc:
        if exc.status == 409:
            return None
        raise
    return cast(Manifest, created)


def _apply(
    clients: Clients,
    kind: CustomKind,
    desired: Manifest,
    *,
    likely_absent: bool,
    wanted_of: Callable[[Manifest, Manifest], Manifest],
    frozen: Callable[[Manifest], bool] | None = None,
) -> tuple[Outcome, Manifest]:
    """Create the object, or server-side apply the difference (inside `api_errors`).

    With `likely_absent` (a first reconcile) the create goes first and a read follows
    only if the name is taken, which saves a read per new LLMDeployment. `wanted_of`
    makes what to apply of the desired and the live object. The update carries the live
    resourceVersion, so a concurrent writer makes it fail with 409 and retry. A live
    object that `frozen` holds for is left as it is."""
    meta = desired["metadata"]
    what = f"{desired['kind']} {meta['namespace']}/{meta['name']}"
    if likely_absent and (created := _create(clients, kind, desired)) is not None:
        return "created", created
    live = _get(clients, kind, meta["namespace"], meta["name"])
    if live is None:
        created = _create(clients, kind, desired)
        if created is None:
            raise kopf.TemporaryError(f"{what}: created meanwhile by another writer", delay=1)
        return "created", created
    wanted = wanted_of(desired, live)
    if contains(wanted, live) or (frozen is not None and frozen(live)):
        return "unchanged", live
    wanted["metadata"] = {
        **wanted["metadata"],
        "resourceVersion": live["metadata"]["resourceVersion"],
    }
    updated = cast(
        Manifest,
        clients.custom.patch_namespaced_custom_object(
            kind.group,
            kind.version,
            meta["namespace"],
            kind.plural,
            meta["name"],
            wanted,
            field_manager=FIELD_MANAGER,
            force=True,
            _content_type=APPLY_PATCH,
        ),
    )
    return "updated", updated


def apply_ray_resource(
    clients: Clients,
    desired: Manifest,
    *,
    likely_absent: bool = False,
    frozen: Callable[[Manifest], bool] | None = None,
) -> tuple[Outcome, Manifest]:
    """Create the RayService, RayCluster or RayJob, or server-side apply the difference.

    Updates carry the autoscaler's live fields, so a concurrent scale by the autoscaler
    makes the apply fail with 409 and retry instead of overwriting it. A live object that
    `frozen` holds for (a finished RayJob) is left as it is.
    """
    kind = desired["kind"]
    meta = desired["metadata"]
    plural = _ray_plural(kind)
    what = f"{kind} {meta['namespace']}/{meta['name']}"
    hint = f"install KubeRay's CRDs ({plural}.{RAY_GROUP}) and operator"
    with api_errors(what, hint):
        return _apply(
            clients,
            RAY_KINDS[RayKind(kind)],
            desired,
            likely_absent=likely_absent,
            wanted_of=keep_autoscaler_fields,
            frozen=frozen,
        )


class RouteNotServed(kopf.TemporaryError):
    """The API server does not serve Gateway API HTTPRoutes, and a spec asks for one."""


def _whole(desired: Manifest, live: Manifest) -> Manifest:
    return copy.deepcopy(desired)


def apply_http_route(
    clients: Clients, desired: Manifest, *, likely_absent: bool = False
) -> tuple[Outcome, Manifest]:
    """Create the HTTPRoute, or server-side apply the difference; `RouteNotServed` while
    the Gateway API's CRDs are missing."""
    meta = desired["metadata"]
    what = f"HTTPRoute {meta['namespace']}/{meta['name']}"
    try:
        with api_errors(what, "install the Gateway API's CRDs"):
            return _apply(
                clients, HTTP_ROUTE, desired, likely_absent=likely_absent, wanted_of=_whole
            )
    except NotServed as exc:
        raise RouteNotServed(
            f"spec.exposure.gateway: the API server does not serve {HTTP_ROUTE.served_as}: "
            "install the Gateway API's CRDs (standard channel, v1.0 or later) or remove "
            "spec.exposure.gateway",
            delay=NOT_SERVED_RETRY_SECONDS,
        ) from exc


class UpgradeNotServed(RouteNotServed):
    """The API server does not serve the Gateway API, and a spec's upgradeStrategy
    (NewClusterWithIncrementalUpgrade) needs it: KubeRay shifts traffic with a Gateway
    and an HTTPRoute it makes itself."""


def gateway_api_served(clients: Clients) -> bool:
    """Whether the API server serves both Gateway API kinds KubeRay's incremental upgrade
    writes (ray-operator v1.6.1 rayservice_controller.go: reconcileGateway and
    reconcileHTTPRoute), in one discovery request."""
    with api_errors(f"discovery of {GATEWAY_API_VERSION}"):
        plurals = served_plurals(clients, GATEWAY_GROUP, GATEWAY_VERSION)
    return {HTTP_ROUTE.plural, GATEWAY.plural} <= plurals


def delete_http_route(clients: Clients, namespace: str, name: str) -> bool:
    """Delete the HTTPRoute a spec no longer asks for; False when it is gone already (or
    the Gateway API is not served: then there is none either)."""
    with api_errors(f"HTTPRoute {namespace}/{name}"):
        try:
            clients.custom.delete_namespaced_custom_object(
                HTTP_ROUTE.group, HTTP_ROUTE.version, namespace, HTTP_ROUTE.plural, name
            )
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
    return True


def get_gateway(clients: Clients, namespace: str, name: str) -> Manifest | None:
    """A Gateway the route attaches to; None when there is none (or no Gateway API), or
    when the operator may not read it: a namespaced install's Roles do not reach a
    Gateway in another namespace, which costs only the external URL, not the reconcile."""
    with api_errors(f"Gateway {namespace}/{name}"):
        try:
            return _get(clients, GATEWAY, namespace, name)
        except ApiException as exc:
            if exc.status != 403:
                raise
            LOG.info("Gateway %s/%s is not readable (403): no external URL", namespace, name)
            return None


def sync_worker_bounds(clients: Clients, bounds: WorkerBounds) -> Manifest | None:
    """Move the bounds of a RayService's serving cluster (a patch only when they differ).

    Returns the cluster as read before any patch (the reconcile reads its spec too), or
    None when it does not exist.
    """
    namespace, cluster_name = bounds.namespace, bounds.cluster_name
    with api_errors(f"RayCluster {namespace}/{cluster_name}"):
        cluster = get_ray_resource(clients, RayKind.RAY_CLUSTER, namespace, cluster_name)
        if cluster is None:
            return None
        patch = bounds_patch(cluster, bounds.group_name, bounds.min_replicas, bounds.max_replicas)
        if patch is None:
            return cluster
        clients.custom.patch_namespaced_custom_object(
            RAY_GROUP,
            RAY_VERSION,
            namespace,
            RAY_PLURALS[RayKind.RAY_CLUSTER],
            cluster_name,
            patch,
            field_manager=FIELD_MANAGER,
            _content_type=JSON_PATCH,
        )
        return cluster


def ensure_claim(clients: Clients, desired: Manifest, owner_uid: str) -> Outcome:
    """Create a PersistentVolumeClaim if absent; else align only its metadata.

    An existing claim of the same name (say, retained from an earlier deployment) is
    reused as is, which is how a re-created deployment finds its model cache again.
    """
    meta = desired["metadata"]
    what = f"PersistentVolumeClaim {meta['namespace']}/{meta['name']}"
    with api_errors(what):
        try:
            live = clients.core.read_namespaced_persistent_volume_claim(
                meta["name"], meta["namespace"]
            )
        except ApiException as exc:
            if exc.status != 404:
                raise
            clients.core.create_namespaced_persistent_volume_claim(
                meta["namespace"], cast(Any, desired), field_manager=FIELD_MANAGER
            )
            return "created"
        live_dict = clients.core.api_client.sanitize_for_serialization(live)
        patch = claim_metadata_patch(desired, live_dict, owner_uid)
        if patch is None:
            return "unchanged"
        clients.core.patch_namespaced_persistent_volume_claim(
            meta["name"],
            meta["namespace"],
            patch,
            field_manager=FIELD_MANAGER,
            _content_type=MERGE_PATCH,
        )
        return "updated"


def _plain_job(clients: Clients, job: Any) -> Manifest:
    return cast(Manifest, clients.batch.api_client.sanitize_for_serialization(job))


def ensure_job(clients: Clients, desired: Manifest) -> tuple[Outcome, Manifest]:
    """Create the Job if absent; else leave it as it is (a Job's pod template is
    immutable, and a new source or revision is a Job of another name). Returns the live
    Job."""
    meta = desired["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    with api_errors(f"Job {namespace}/{name}"):
        try:
            return "unchanged", _plain_job(
                clients, clients.batch.read_namespaced_job(name, namespace)
            )
        except ApiException as exc:
            if exc.status != 404:
                raise
        created = clients.batch.create_namespaced_job(
            namespace, cast(Any, desired), field_manager=FIELD_MANAGER
        )
        return "created", _plain_job(clients, created)


def delete_jobs(
    clients: Clients, namespace: str, selector: Mapping[str, str], keep: str
) -> list[str]:
    """Delete the Jobs carrying all of `selector`'s labels but the one named `keep` (with
    their pods, in the background); returns the names deleted."""
    label_selector = ",".join(f"{key}={value}" for key, value in selector.items())
    deleted: list[str] = []
    with api_errors(f"Jobs {label_selector} in {namespace}"):
        listing = clients.batch.list_namespaced_job(namespace, label_selector=label_selector)
        for job in _plain_job(clients, listing).get("items") or []:
            meta = job["metadata"]
            labels = meta.get("labels") or {}
            if meta["name"] == keep or any(labels.get(k) != v for k, v in selector.items()):
                continue
            try:
                clients.batch.delete_namespaced_job(
                    meta["name"], namespace, propagation_policy="Background"
                )
            except ApiException as exc:
                if exc.status != 404:
                    raise
                continue
            deleted.append(meta["name"])
    return deleted


def get_llm_deployment(clients: Clients, namespace: str, name: str) -> Manifest | None:
    try:
        found = cast(
            Manifest,
            clients.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name),
        )
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return found


def llm_deployment_keys(clients: Clients, namespace: str | None) -> set[tuple[str, str, str]]:
    """(namespace, name, uid) of every LLMDeployment in `namespace`, or in every namespace
    for None: one consistent listing, read in pages.

    One namespace the operator may not list (a namespaced operator's Role goes with its
    namespace) or a CRD that is gone (404) holds none it can see.
    """
    keys: set[tuple[str, str, str]] = set()
    token: str | None = None
    while True:
        try:
            if namespace is None:
                found = clients.custom.list_cluster_custom_object(
                    GROUP, VERSION, PLURAL, limit=LIST_PAGE, _continue=token
                )
            else:
                found = clients.custom.list_namespaced_custom_object(
                    GROUP, VERSION, namespace, PLURAL, limit=LIST_PAGE, _continue=token
                )
        except ApiException as exc:
            if namespace is not None and exc.status in (403, 404):
                return set()
            raise
        listing = cast(Manifest, found)
        for item in listing.get("items") or []:
            meta = item["metadata"]
            keys.add((meta["namespace"], meta["name"], meta["uid"]))
        token = (listing.get("metadata") or {}).get("continue")
        if not token:
            return keys


def patch_status(clients: Clients, namespace: str, name: str, patch: Mapping[str, Any]) -> None:
    with api_errors(f"status of LLMDeployment {namespace}/{name}"):
        clients.custom.patch_namespaced_custom_object_status(
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            name,
            {"status": dict(patch)},
            field_manager=FIELD_MANAGER,
            _content_type=MERGE_PATCH,
        )


@dataclass(frozen=True)
class KubeApi:
    """The reconciler's `ClusterApi` on the Kubernetes client, with kopf's Events."""

    clients: Clients

    def ensure_claim(self, desired: Manifest, owner_uid: str) -> Outcome:
        return ensure_claim(self.clients, desired, owner_uid)

    def apply_ray_resource(
        self,
        desired: Manifest,
        *,
        likely_absent: bool,
        frozen: Callable[[Manifest], bool] | None = None,
    ) -> tuple[Outcome, Manifest]:
        return apply_ray_resource(self.clients, desired, likely_absent=likely_absent, frozen=frozen)

    def get_ray_resource(self, kind: str, namespace: str, name: str) -> Manifest | None:
        with api_errors(f"{kind} {namespace}/{name}"):
            return get_ray_resource(self.clients, kind, namespace, name)

    def sync_worker_bounds(self, bounds: WorkerBounds) -> Manifest | None:
        return sync_worker_bounds(self.clients, bounds)

    def apply_http_route(
        self, desired: Manifest, *, likely_absent: bool
    ) -> tuple[Outcome, Manifest]:
        return apply_http_route(self.clients, desired, likely_absent=likely_absent)

    def delete_http_route(self, namespace: str, name: str) -> bool:
        return delete_http_route(self.clients, namespace, name)

    def get_gateway(self, namespace: str, name: str) -> Manifest | None:
        return get_gateway(self.clients, namespace, name)

    def ensure_job(self, desired: Manifest) -> tuple[Outcome, Manifest]:
        return ensure_job(self.clients, desired)

    def delete_jobs(self, namespace: str, selector: Mapping[str, str], keep: str) -> list[str]:
        return delete_jobs(self.clients, namespace, selector, keep)

    def gateway_api_served(self) -> bool:
        return gateway_api_served(self.clients)

    def patch_status(self, namespace: str, name: str, patch: Mapping[str, Any]) -> None:
        patch_status(self.clients, namespace, name, patch)

    def post_event(self, owner: Manifest, *, type_: str, reason: str, message: str) -> None:
        # kopf.event, not kopf.info: kopf's posting level (WARNING) filters kopf.info.
        kopf.event(kopf.Body(cast(kopf.RawBody, owner)), type=type_, reason=reason, message=message)
