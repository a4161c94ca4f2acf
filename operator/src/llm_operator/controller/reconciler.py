"""The reconcile of one LLMDeployment, apart from kopf's wiring: resolve the spec once,
apply its children, mirror KubeRay's status.

It talks to the cluster only through `ClusterApi`, so unit tests run it against an
in-memory API server (`kube.KubeApi` over a fake client) and see every write it makes.
Reconciling is idempotent: an unchanged child or status is never written.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Protocol, cast

import kopf

from llm_operator.api.constants import API_VERSION, KIND
from llm_operator.api.plan import Plan
from llm_operator.api.validation import FieldError, SpecError, resolve
from llm_operator.api.vocabulary import WARNING_PHASES, ConditionType, RayKind
from llm_operator.controller import status
from llm_operator.controller.kube import (
    GATEWAY,
    HTTP_ROUTE,
    NOT_SERVED_RETRY_SECONDS,
    ChildRefused,
    NotServed,
    Outcome,
    RouteNotServed,
    UpgradeNotServed,
)
from llm_operator.controller.merge import WorkerBounds, worker_groups
from llm_operator.render import Children, is_retained, names, render_children
from llm_operator.render.prefetch import COMPONENT as PREFETCH_COMPONENT
from llm_operator.render.sources import prefetch_of
from llm_operator.settings import OperatorSettings
from llm_operator.yamlio import Manifest

LOG = logging.getLogger(__name__)
ROUTE_KIND = "HTTPRoute"
PREFETCH_JOB_KIND = "Job"
INCREMENTAL_UPGRADE = "NewClusterWithIncrementalUpgrade"


class ClusterApi(Protocol):
    """What a reconcile asks of the API server (`kube.KubeApi` is the real one)."""

    def ensure_claim(self, desired: Manifest, owner_uid: str) -> Outcome: ...

    def apply_ray_resource(
        self,
        desired: Manifest,
        *,
        likely_absent: bool,
        frozen: Callable[[Manifest], bool] | None = None,
    ) -> tuple[Outcome, Manifest]: ...

    def get_ray_resource(self, kind: str, namespace: str, name: str) -> Manifest | None: ...

    def sync_worker_bounds(self, bounds: WorkerBounds) -> Manifest | None: ...

    def apply_http_route(
        self, desired: Manifest, *, likely_absent: bool
    ) -> tuple[Outcome, Manifest]: ...

    def delete_http_route(self, namespace: str, name: str) -> bool: ...

    def get_gateway(self, namespace: str, name: str) -> Manifest | None: ...

    def ensure_job(self, desired: Manifest) -> tuple[Outcome, Manifest]: ...

    def delete_jobs(self, namespace: str, selector: Mapping[str, str], keep: str) -> list[str]: ...

    def gateway_api_served(self) -> bool: ...

    def patch_status(self, namespace: str, name: str, patch: Mapping[str, Any]) -> None: ...

    def post_event(self, owner: Manifest, *, type_: str, reason: str, message: str) -> None: ...


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _plain(body: Mapping[str, Any]) -> Manifest:
    """A deep plain-dict copy of a kopf body (its nested views are read-only mappings)."""
    copied: Manifest = json.loads(json.dumps(body, default=dict))
    return copied


def owner_of(body: Mapping[str, Any]) -> Manifest:
    """The parts of an LLMDeployment that owner references and Events need."""
    meta = body["metadata"]
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"]},
    }


def _adopt(child: Manifest, owner: Manifest) -> None:
    """Owned, unless retained: a claim kept after deletion carries no reference."""
    if not is_retained(child):
        kopf.append_owner_reference(child, owner=kopf.Body(cast(kopf.RawBody, owner)))


def _post_phase_event(
    api: ClusterApi, owner: Manifest, before: Mapping[str, Any], after: Mapping[str, Any]
) -> None:
    """An Event when the phase moves; the first status is no move (it costs no write)."""
    previous, phase = before.get("phase"), after.get("phase")
    if previous is None or phase is None or phase == previous:
        return
    ready: Mapping[str, Any] = next(
        (c for c in after.get("conditions", []) if c["type"] == ConditionType.READY), {}
    )
    message = f"phase {previous} -> {phase}: {ready.get('message', '')}"
    api.post_event(
        owner,
        type_="Warning" if phase in WARNING_PHASES else "Normal",
        reason=str(phase),
        message=message.strip().rstrip(":"),
    )


def _write_status(
    api: ClusterApi, owner: Manifest, before: Mapping[str, Any], after: Manifest
) -> None:
    patch = status.status_patch(before, after)
    if patch is None:
        return
    meta = owner["metadata"]
    api.patch_status(meta["namespace"], meta["name"], patch)
    _post_phase_event(api, owner, before, after)


def _log(child: Manifest, outcome: Outcome) -> None:
    if outcome != "unchanged":
        meta = child["metadata"]
        LOG.info("%s %s/%s %s", child["kind"], meta["namespace"], meta["name"], outcome)


def _apply_claims(api: ClusterApi, children: Children, owner: Manifest) -> None:
    for claim in children.claims:
        _adopt(claim, owner)
        _log(claim, api.ensure_claim(claim, owner["metadata"]["uid"]))


def _apply_ray(
    api: ClusterApi, plan: Plan, children: Children, owner: Manifest, *, first: bool, held: bool
) -> Manifest | None:
    """Apply the Ray resource; returns it as live.

    `first`: no status yet, so the children almost surely do not exist either.
    `held`: the Ray resource is only read, never applied or made (None when it does not
    exist): the status records a finished run (mode Job), or the model is not cached yet
    (prefetch; a Ray resource made for an earlier source keeps serving meanwhile). A run
    KubeRay finished meanwhile is left as it is too.
    """
    meta = children.ray["metadata"]
    if held:
        if first:
            return None  # nothing was made yet: spare the read
        return api.get_ray_resource(children.ray["kind"], meta["namespace"], meta["name"])
    _adopt(children.ray, owner)
    frozen = status.job_finished if plan.runs_to_completion else None
    outcome, live = api.apply_ray_resource(children.ray, likely_absent=first, frozen=frozen)
    _log(children.ray, outcome)
    return live


# The Ray resource waits for a prefetch Job that has not finished well.
def _prefetch(
    api: ClusterApi, plan: Plan, children: Children, owner: Manifest, before: Mapping[str, Any]
) -> status.PrefetchState | None:
    """Run the prefetch Job the spec asks for (None: it asks for none) and read where it
    is. A download the status records as cached stays cached: its Job is not needed
    again (it may be gone, deleted by hand). A new Job (a new source or revision)
    replaces the deployment's earlier ones; without prefetch, any left are deleted."""
    llmd = plan.llmd
    selector = {names.DEPLOYMENT_LABEL: llmd.name, names.COMPONENT_LABEL: PREFETCH_COMPONENT}
    prefetch = prefetch_of(llmd)
    job = children.prefetch
    if prefetch is None or job is None:
        if before.get("cachedModel"):
            api.delete_jobs(llmd.namespace, selector, keep="")
        return None
    if before.get("cachedModel") == prefetch.path:
        return status.cached(prefetch.path)
    _adopt(job, owner)
    outcome, live = api.ensure_job(job)
    _log(job, outcome)
    if outcome == "created":
        api.delete_jobs(llmd.namespace, selector, keep=job["metadata"]["name"])
    return status.prefetch_state(live, prefetch.path)


@dataclass(frozen=True)
class RouteState:
    """The HTTPRoute after a reconcile: its name when it exists, why the one the spec asks
    for does not, and the first parent Gateway as read (for the external URL)."""

    name: str | None = None
    problem: str | None = None
    gateway: Manifest | None = None


def _apply_route(
    api: ClusterApi, plan: Plan, children: Children, owner: Manifest, before: Mapping[str, Any]
) -> RouteState:
    """Apply the HTTPRoute the spec asks for, or delete the one it no longer does (known
    from status, so a spec without a route costs no request, Gateway API or not)."""
    namespace = plan.llmd.namespace
    previous = before.get("httpRoute")
    route = children.route
    if route is None:
        if previous:
            api.delete_http_route(namespace, previous)
        return RouteState()
    _adopt(route, owner)
    try:
        outcome, _ = api.apply_http_route(route, likely_absent=not previous)
    except RouteNotServed as exc:
        return RouteState(problem=str(exc))
    _log(route, outcome)
    exposure = plan.llmd.spec.exposure
    assert exposure is not None and exposure.gateway is not None
    ref = exposure.gateway.parent_refs[0]
    gateway = api.get_gateway(ref.namespace or namespace, ref.name)
    return RouteState(route["metadata"]["name"], None, gateway)


def _with_route(plan: Plan, observed: status.Observed, route: RouteState) -> status.Observed:
    exposure = plan.llmd.spec.exposure
    endpoint = None
    if route.gateway is not None and exposure is not None and exposure.gateway is not None:
        gateway, ref = exposure.gateway, exposure.gateway.parent_refs[0]
        endpoint = status.gateway_endpoint(
            route.gateway,
            hostnames=gateway.hostnames,
            path=gateway.path,
            section_name=ref.section_name,
            port=ref.port,
        )
    return replace(
        observed, http_route=route.name, route_problem=route.problem, external_endpoint=endpoint
    )


def _with_upgrade_gateway(
    api: ClusterApi, plan: Plan, observed: status.Observed
) -> status.Observed:
    """With an incremental upgrade KubeRay serves through a Gateway of its own: the
    endpoint is its address, once its controller reports one."""
    if not plan.serves or plan.llmd.spec.upgrade_strategy != INCREMENTAL_UPGRADE:
        return observed
    llmd = plan.llmd
    gateway = api.get_gateway(llmd.namespace, names.upgrade_gateway_name(llmd.name))
    endpoint = status.gateway_endpoint(
        gateway, hostnames=[], path="/", section_name=names.UPGRADE_GATEWAY_LISTENER
    )
    return replace(observed, external_endpoint=endpoint)


def _sync_serving_cluster_bounds(
    api: ClusterApi, ray_service: Manifest, namespace: str, cluster_name: str
) -> Manifest | None:
    """KubeRay keeps a serving cluster's worker bounds from creation time; move them along.

    Returns the cluster as read (None when it is gone).
    """
    cluster: Manifest | None = None
    for group in worker_groups(ray_service):
        bounds = WorkerBounds(
            namespace, cluster_name, group["groupName"], group["minReplicas"], group["maxReplicas"]
        )
        cluster = api.sync_worker_bounds(bounds)
    return cluster


def _observe(
    api: ClusterApi, plan: Plan, children: Children, live: Manifest | None
) -> status.Observed:
    """What the live Ray child says; for a RayService, after moving the bounds of every
    cluster it serves from, and with GCS fault tolerance as the active one was built."""
    observed = status.observe(plan, live)
    if not plan.serves:
        return observed
    serving = {
        name: _sync_serving_cluster_bounds(api, children.ray, plan.llmd.namespace, name)
        for name in observed.serving_clusters
    }
    active = serving.get(observed.ray_cluster or "")
    if active is not None:
        observed = status.observe(plan, live, serving_cluster=active)
    return replace(observed, gcs_fault_tolerance=status.has_gcs_fault_tolerance(active))


def upgrade_problem(api: ClusterApi, plan: Plan) -> str | None:
    """Why the RayService cannot take the spec's upgradeStrategy here, or None.

    KubeRay's NewClusterWithIncrementalUpgrade makes a Gateway and an HTTPRoute of its own
    (ray-operator v1.6.1 rayservice_controller.go); without the Gateway API it would fail
    on every reconcile of the RayService. One discovery request, and only for that strategy.
    """
    if not plan.serves or plan.llmd.spec.upgrade_strategy != INCREMENTAL_UPGRADE:
        return None
    if api.gateway_api_served():
        return None
    return (
        f"spec.upgradeStrategy: {INCREMENTAL_UPGRADE} needs the Gateway API, and the API "
        f"server does not serve both {HTTP_ROUTE.served_as} and {GATEWAY.served_as}: "
        "install the Gateway API's CRDs (standard channel, v1.0 or later) and a Gateway "
        "controller, or set upgradeStrategy NewCluster; meanwhile no Ray resource is "
        "created or changed"
    )


def _held_back(api: ClusterApi, plan: Plan, children: Children, problem: str) -> status.Observed:
    """What a deployment whose upgradeStrategy is refused reports: the live RayService as
    KubeRay reports it, read only (no child, no worker bound is written), or, before
    there is one, that it waits for the Gateway API."""
    meta = children.ray["metadata"]
    live = api.get_ray_resource(children.ray["kind"], meta["namespace"], meta["name"])
    if live is None:
        return status.waiting_for_gateway_api(problem)
    # The endpoint of the RayService as it runs: its Serve service unless it already has
    # the incremental strategy (then KubeRay's Gateway, which cannot be read without the
    # Gateway API).
    running = (live.get("spec") or {}).get("upgradeStrategy") or {}
    llmd = plan.llmd
    endpoint = None
    if running.get("type") != INCREMENTAL_UPGRADE:
        endpoint = names.endpoint(llmd.name, llmd.namespace)
    observed = status.observe(plan, live)
    return replace(observed, upgrade_problem=problem, external_endpoint=endpoint)


def reconcile(body: Mapping[str, Any], api: ClusterApi, settings: OperatorSettings) -> Plan:
    """Converge one LLMDeployment: resolve, apply children, mirror status; returns the plan.

    Raises `SpecError` (after recording it in status) when the spec is invalid; no child
    is touched then. A child the API server refuses counts as an invalid spec too, though
    the children before it have been applied by then. Raises `NotServed` (after recording
    it) while KubeRay's CRDs are missing.
    """
    plain = _plain(body)
    owner = owner_of(plain)
    before: Manifest = plain.get("status") or {}
    generation = plain["metadata"].get("generation")
    try:
        plan = resolve(plain, settings.gpu_memory_gib)
        children = render_children(plan, settings)
        finished_at = status.finished_generation(before) if plan.runs_to_completion else None
        refused = upgrade_problem(api, plan)
        if refused is not None:
            kept = _held_back(api, plan, children, refused)
            after = status.reconciled_status(plan, kept, before, _now())
            _write_status(api, owner, before, after)
            # Retried soon, so the deployment goes ahead once the Gateway API is installed.
            raise UpgradeNotServed(refused, delay=NOT_SERVED_RETRY_SECONDS)
        try:
            _apply_claims(api, children, owner)
            cache = _prefetch(api, plan, children, owner, before)
            held = finished_at is not None or (cache is not None and not cache.cached)
            live = _apply_ray(api, plan, children, owner, first=not before, held=held)
            # Mode Service only (render makes no route otherwise); a route left from an
            # earlier spec is deleted in every mode.
            route = _apply_route(api, plan, children, owner, before)
        except ChildRefused as exc:
            # Values the schema lets through but the child's own schema refuses (a storage
            # class name, a quantity): as invalid as a spec gets, and reported the same way.
            raise SpecError([FieldError("spec", str(exc))]) from exc
    except SpecError as exc:
        _write_status(
            api, owner, before, status.invalid_status(str(exc), generation, before, _now())
        )
        raise
    except NotServed as exc:
        _write_status(
            api, owner, before, status.not_served_status(str(exc), generation, before, _now())
        )
        raise
    if finished_at is None:
        observed = _observe(api, plan, children, live)
        if plan.runs_to_completion and live is not None and status.job_finished(live):
            finished_at = generation  # the run is over: from now on a record
    else:
        observed = _finished_run(
            api, owner, before, plan, live=live, finished_at=finished_at, generation=generation
        )
    observed = _with_route(plan, observed, route)
    if cache is not None:
        observed = status.with_prefetch(
            observed, cache, ray_exists=live is not None, previous=before
        )
    observed = _with_upgrade_gateway(api, plan, observed)
    after = status.reconciled_status(plan, observed, before, _now(), finished_at)
    _write_status(api, owner, before, after)
    if route.problem is not None:
        # Recorded in SpecValid; retried soon, so the route follows the Gateway API's CRDs.
        raise RouteNotServed(route.problem, delay=NOT_SERVED_RETRY_SECONDS)
    return plan


def _finished_run(
    api: ClusterApi,
    owner: Manifest,
    before: Mapping[str, Any],
    plan: Plan,
    *,
    live: Manifest | None,
    finished_at: int,
    generation: int | None,
) -> status.Observed:
    """What a finished run reports: its RayJob's last word (or, once that is gone, the
    recorded one); a later generation's spec change is refused, with a Warning Event
    the first time.

    Refused rather than re-run by a field: one LLMDeployment is one run, as a Kubernetes
    Job's template is immutable, and a finished run's record (status, times) is never
    replaced. A new run is a re-created LLMDeployment, which finds the retained
    checkpoints claim."""
    observed = status.kept_run(before) if live is None else status.observe(plan, live)
    if generation == finished_at:
        return observed
    refused = status.refused_change(observed, finished_at)
    if before.get("observedGeneration") != generation:  # once per refused generation
        api.post_event(
            owner,
            type_="Warning",
            reason=str(refused.progressing.reason),
            message=refused.progressing.message,
        )
    return refused


# --- child events ----------------------------------------------------------------------


def redundant_child_event(event_type: str | None, kind: str) -> bool:
    """Child events that cannot tell the reconcile anything new.

    A RayService's, RayJob's, HTTPRoute's or prefetch Job's creation: only the reconcile
    that just created it makes them.
    KubeRay's RayClusters do count from their creation on (a new serving cluster needs
    the current worker bounds), and so do listings (no type), which after a lost watch
    are the only sign of what changed meanwhile.
    """
    return event_type == "ADDED" and kind in (
        RayKind.RAY_SERVICE,
        RayKind.RAY_JOB,
        ROUTE_KIND,
        PREFETCH_JOB_KIND,
    )


def parent_of(child: Mapping[str, Any]) -> tuple[str, str] | None:
    """(namespace, name) of the LLMDeployment a child's label names.

    KubeRay copies a RayService's labels onto the RayCluster it makes, so the label
    names the LLMDeployment for both our own children and KubeRay's.
    """
    meta = child.get("metadata", {})
    parent = (meta.get("labels") or {}).get(names.DEPLOYMENT_LABEL)
    return (meta["namespace"], parent) if parent else None


def parent_needs_reconcile(parent: Mapping[str, Any] | None) -> bool:
    """Whether a child's event should re-run its parent's reconcile: not while garbage
    collection removes the children, nor before the converge handler has handled the
    parent's current generation (it reconciles after it anyway)."""
    if parent is None or parent["metadata"].get("deletionTimestamp"):
        return False
    observed = (parent.get("status") or {}).get("observedGeneration")
    return bool(observed == parent["metadata"].get("generation"))
