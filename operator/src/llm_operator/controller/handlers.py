"""kopf handlers: one converge for create/update/resume, and a watch on the children.

The converge handler validates, renders and applies; the child watch re-runs the same
reconcile whenever KubeRay (or a person) changes or deletes a child, which both mirrors
KubeRay's status and restores drift. Reconciling is idempotent: an unchanged child or
status is never written. The gauges follow the LLMDeployments' own watch events (and a
periodic listing), not the reconciles: see `metrics`.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, cast

import kopf

from llm_operator.api.constants import API_VERSION, GROUP, KIND, PLURAL, VERSION
from llm_operator.api.models import LLMDeployment
from llm_operator.api.validation import FieldError, SpecError, validate
from llm_operator.controller import kube, status
from llm_operator.controller.merge import Manifest, worker_groups
from llm_operator.controller.metrics import METRICS, OperatorMetrics
from llm_operator.controller.metrics import serve as serve_metrics
from llm_operator.render import is_retained, layout_of, names, render
from llm_operator.settings import OperatorSettings

LOG = logging.getLogger(__name__)
CHILD_LABELS = {names.MANAGED_BY_LABEL: names.MANAGED_BY}
STARTUP_RETRY_SECONDS = 5
# How often the gauges are checked against a listing of the LLMDeployments, for deletions
# the watch never delivered (a re-list after a lost watch reports no DELETED events).
METRICS_SWEEP_SECONDS = 60.0
# Phases worth a Warning event rather than a Normal one.
WARNING_PHASES = frozenset({"Degraded", "Failed"})


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _plain(body: Mapping[str, Any]) -> Manifest:
    """A deep plain-dict copy of a kopf body (its nested views are read-only mappings)."""
    copied: Manifest = json.loads(json.dumps(body, default=dict))
    return copied


def _owner(body: Mapping[str, Any]) -> kopf.Body:
    """The parts of an LLMDeployment that owner references and Events need."""
    meta = body["metadata"]
    raw = {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"]},
    }
    return kopf.Body(cast(kopf.RawBody, raw))


def _adopt(child: Manifest, owner: kopf.Body) -> None:
    if not is_retained(child):
        kopf.append_owner_reference(child, owner=owner)


def _post_phase_event(
    owner: kopf.Body, before: Mapping[str, Any], after: Mapping[str, Any]
) -> None:
    """An Event when the phase moves; the first status is no move (it costs no write)."""
    previous, phase = before.get("phase"), after.get("phase")
    if previous is None or phase is None or phase == previous:
        return
    ready: Mapping[str, Any] = next(
        (c for c in after.get("conditions", []) if c["type"] == status.READY), {}
    )
    message = f"phase {previous} -> {phase}: {ready.get('message', '')}"
    # kopf.event, not kopf.info: kopf's posting level (WARNING) filters kopf.info.
    kopf.event(
        owner,
        type="Warning" if phase in WARNING_PHASES else "Normal",
        reason=phase,
        message=message.strip().rstrip(":"),
    )


def _write_status(
    clients: kube.Clients, owner: kopf.Body, before: Mapping[str, Any], after: Manifest
) -> None:
    patch = status.status_patch(before, after)
    if patch is None:
        return
    meta = owner["metadata"]
    kube.patch_status(clients, meta["namespace"], meta["name"], patch)
    _post_phase_event(owner, before, after)


def _apply_children(
    clients: kube.Clients, children: list[Manifest], owner: kopf.Body, *, first: bool
) -> Manifest | None:
    """Apply every child in order; returns the live Ray resource.

    `first`: no status yet, so the children almost surely do not exist either.
    """
    live: Manifest | None = None
    for child in children:
        _adopt(child, owner)
        meta = child["metadata"]
        if child["kind"] == "PersistentVolumeClaim":
            outcome = kube.ensure_claim(clients, child, owner["metadata"]["uid"])
        else:
            outcome, live = kube.apply_ray_resource(clients, child, likely_absent=first)
        if outcome != "unchanged":
            LOG.info("%s %s/%s %s", child["kind"], meta["namespace"], meta["name"], outcome)
    return live


def _observe(llmd: LLMDeployment, live: Manifest | None) -> status.Observed:
    hosts = layout_of(llmd).hosts_per_replica
    if live is None:
        return status.observe_missing("RayCluster" if llmd.spec.mode == "Cluster" else "RayService")
    if llmd.spec.mode == "Cluster":
        return status.observe_ray_cluster(live, hosts)
    return status.observe_ray_service(live, hosts)


def _sync_serving_cluster_bounds(
    clients: kube.Clients, ray_service: Manifest, namespace: str, cluster_name: str
) -> Manifest | None:
    """KubeRay keeps a serving cluster's worker bounds from creation time; move them along.

    Returns the cluster as read (None when it is gone).
    """
    cluster: Manifest | None = None
    for group in worker_groups(ray_service):
        cluster = kube.sync_worker_bounds(
            clients,
            namespace=namespace,
            cluster_name=cluster_name,
            group_name=group["groupName"],
            min_replicas=group["minReplicas"],
            max_replicas=group["maxReplicas"],
        )
    return cluster


def reconcile(body: Mapping[str, Any], clients: kube.Clients, settings: OperatorSettings) -> None:
    """Converge one LLMDeployment: validate, apply children, mirror status.

    Raises `SpecError` (after recording it in status) when the spec is invalid; no child
    is touched then. A child the API server refuses counts as an invalid spec too, though
    the children before it in the list have been applied by then.
    """
    plain = _plain(body)
    owner = _owner(plain)
    before: Manifest = plain.get("status") or {}
    meta = plain["metadata"]
    generation = meta.get("generation")
    try:
        llmd = validate(plain, settings.gpu_memory_gib)
        children = render(llmd, settings)
        try:
            live = _apply_children(clients, children, owner, first=not before)
        except kube.ChildRefused as exc:
            # Values the schema lets through but the child's own schema refuses (a storage
            # class name, a quantity): as invalid as a spec gets, and reported the same way.
            raise SpecError([FieldError("spec", str(exc))]) from exc
    except SpecError as exc:
        invalid = status.invalid_status(str(exc), generation, before, _now())
        _write_status(clients, owner, before, invalid)
        raise
    except kube.NotServed as exc:
        _write_status(
            clients, owner, before, status.not_served_status(str(exc), generation, before, _now())
        )
        raise
    observed = _observe(llmd, live)
    if llmd.spec.mode == "Service":
        serving = {
            name: _sync_serving_cluster_bounds(clients, children[-1], llmd.namespace, name)
            for name in observed.serving_clusters
        }
        # GCS fault tolerance is what the active cluster was built with.
        active = serving.get(observed.ray_cluster or "")
        observed = replace(observed, gcs_fault_tolerance=status.has_gcs_fault_tolerance(active))
    after = status.reconciled_status(llmd, observed, before, _now(), settings.gpu_memory_gib)
    _write_status(clients, owner, before, after)


class GenerationDiffBase(kopf.DiffBaseStorage):
    """The last handled configuration is the spec of `status.observedGeneration`.

    kopf's own diff bases cost a write of the object after every handled change. Here the
    reconcile's own status write is the record: a generation that status reports counts
    as handled (nothing to do, or a resume after a restart), an older one as an update,
    none as a creation. Nothing the children depend on lives outside `spec`, and every
    spec change moves the generation, so no change is missed. The handler gets no
    field-level diff; it needs none, since it converges on the whole spec.
    """

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        handled = (body.get("status") or {}).get("observedGeneration")
        if handled is None:
            return None
        if handled == body.get("metadata", {}).get("generation"):
            return self.build(body=body)
        return cast(kopf.BodyEssence, {})

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        """Nothing to store: the status write of the reconcile records the generation."""


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # kopf's retry bookkeeping lives in annotations, never in status. A prefix of kopf's own
    # form ("kopf.*") spares every object a one-off "kopf-managed" marker write.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=f"kopf.{GROUP}")
    settings.persistence.diffbase_storage = GenerationDiffBase()
    # Only warnings and errors become Events; "handler succeeded" would be a write per change.
    settings.posting.level = logging.WARNING
    settings.execution.max_workers = 8
    memo.clients = kube.connect()
    # Without our own CRD there is nothing to do. KubeRay's may come later: each
    # LLMDeployment then says KubeRayNotInstalled in its Ready condition until they do.
    if not kube.served(memo.clients, GROUP, VERSION, PLURAL):
        raise kopf.TemporaryError(
            f"{PLURAL}.{GROUP}/{VERSION} is not served yet: install this chart's CRD; retrying",
            delay=STARTUP_RETRY_SECONDS,
        )
    memo.kuberay_missed = not _kuberay_served(memo.clients)
    if memo.kuberay_missed:
        LOG.warning("KubeRay's CRDs are not served: waiting for them (see the liveness probe)")
    if getattr(memo, "sweep_stop", None) is None:
        memo.sweep_stop = threading.Event()
        threading.Thread(
            target=_sweep_metrics_forever,
            args=(memo.clients, getattr(memo, "clusterwide", False), memo.sweep_stop),
            name="metrics-sweep",
            daemon=True,
        ).start()


@kopf.on.cleanup()
def stop_sweeping(memo: kopf.Memo, **_: Any) -> None:
    """Ends the metrics sweep's thread when the operator stops."""
    stop = getattr(memo, "sweep_stop", None)
    if stop is not None:
        stop.set()


def sweep_metrics(
    clients: kube.Clients, clusterwide: bool, metrics: OperatorMetrics = METRICS
) -> int:
    """Drop from the gauges every LLMDeployment a fresh listing no longer returns.

    Clusterwide, one listing of every namespace; otherwise one per namespace that holds
    a counted LLMDeployment (the operator may list there). Reads only. Returns how many
    records went.
    """
    counted = metrics.namespaces()
    if not counted:
        return 0  # nothing to drop: skip the listing (a standby replica counts nothing)
    scope = None if clusterwide else counted
    listed_at = metrics.now()
    existing: set[tuple[str, str, str]] = set()
    for namespace in [None] if scope is None else scope:
        existing |= kube.llm_deployment_keys(clients, namespace)
    return metrics.sweep(existing, listed_at, scope)


def _sweep_metrics_forever(clients: kube.Clients, clusterwide: bool, stop: threading.Event) -> None:
    while not stop.wait(METRICS_SWEEP_SECONDS):
        try:
            dropped = sweep_metrics(clients, clusterwide)
        except Exception:  # an API hiccup: the next round tries again
            LOG.warning("could not list LLMDeployments for the metrics", exc_info=True)
            continue
        if dropped:
            LOG.info("metrics: dropped %d LLMDeployment(s) deleted unseen by the watch", dropped)


def _kuberay_served(clients: kube.Clients) -> bool:
    return all(
        kube.served(clients, names.RAY_GROUP, names.RAY_VERSION, plural)
        for plural in kube.RAY_PLURALS.values()
    )


@kopf.on.probe(id="kuberay")
def kuberay_watched(memo: kopf.Memo, **_: Any) -> str:
    """Fails once KubeRay's CRDs are served after being missing when the operator started.

    kopf watches CRDs and resolves new ones, but can miss one whose discovery lags its
    creation, and then would never watch RayServices. The failed liveness probe makes
    the kubelet restart the operator, once, and a fresh start resolves them for sure.
    """
    if memo.kuberay_missed and _kuberay_served(memo.clients):
        raise kopf.PermanentError(
            "KubeRay's CRDs appeared after start-up: restart to watch them for certain"
        )
    return "missing" if memo.kuberay_missed else "served"


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL)
def converge(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    try:
        with METRICS.reconcile():
            reconcile(body, memo.clients, memo.settings)
    except kube.NotServed:
        memo.kuberay_missed = True  # KubeRay's CRDs went away; see kuberay_watched
        raise
    except SpecError as exc:
        kopf.warn(body, reason="InvalidSpec", message=str(exc))
        # Permanent: the same spec fails the same way; a new generation re-triggers us.
        raise kopf.PermanentError(f"invalid spec: {exc}") from exc


@kopf.on.event(GROUP, VERSION, PLURAL)
async def count_in_metrics(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    """Every event of an LLMDeployment, a listing's included, sets what the gauges count
    of it; DELETED removes it. An event handler adds no finalizer and writes nothing.

    It runs in the object's own kopf worker, after every earlier event of that object, so
    nothing can count the object again after its DELETED event.
    """
    METRICS.track(event["type"], event["object"], memo.settings.gpu_memory_gib)


def _redundant(event_type: str | None, kind: str) -> bool:
    """Child events that cannot tell the reconcile anything new.

    A RayService's creation: only the reconcile that just created it makes them.
    KubeRay's RayClusters do count from their creation on (a new serving cluster needs
    the current worker bounds), and so do listings (no type), which after a lost watch
    are the only sign of what changed meanwhile.
    """
    return event_type == "ADDED" and kind == "RayService"


def _parent_of(body: Mapping[str, Any]) -> tuple[str, str] | None:
    meta = body.get("metadata", {})
    parent = (meta.get("labels") or {}).get(names.DEPLOYMENT_LABEL)
    return (meta["namespace"], parent) if parent else None


@kopf.on.event(names.RAY_GROUP, names.RAY_VERSION, "rayservices", labels=CHILD_LABELS)
@kopf.on.event(names.RAY_GROUP, names.RAY_VERSION, "rayclusters", labels=CHILD_LABELS)
def on_child_event(event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """A child changed or went away: restore it if needed and mirror its status.

    KubeRay copies a RayService's labels onto the RayCluster it makes, so the label
    names the LLMDeployment for both our own children and KubeRay's.
    """
    if _redundant(event["type"], body.get("kind", "")):
        return
    found = _parent_of(body)
    if found is None:
        return
    namespace, name = found
    with kube.api_errors(f"LLMDeployment {namespace}/{name}"):
        parent = kube.get_llm_deployment(memo.clients, namespace, name)
    if parent is None or parent["metadata"].get("deletionTimestamp"):
        return  # garbage collection is removing the children; nothing to restore
    observed = (parent.get("status") or {}).get("observedGeneration")
    if observed != parent["metadata"].get("generation"):
        return  # the converge handler is on this generation and reconciles after it
    try:
        with METRICS.reconcile():
            reconcile(parent, memo.clients, memo.settings)
    except SpecError:
        return  # recorded in status by the converge handler; children stay as they are


def peering_priority() -> int:
    """A priority no other replica is likely to hold (1 in 2**31 for two replicas)."""
    return 1 + secrets.randbelow(2**31 - 1)


def run(
    *,
    namespaces: list[str],
    all_namespaces: bool,
    verbose: bool,
    liveness_endpoint: str,
    settings: OperatorSettings,
    peering: str | None = None,
    metrics_address: str = "",
) -> None:
    """Start the operator and block until it stops.

    Without `peering` the operator is standalone: it must be the only replica (the
    chart's Recreate strategy sees to that). With it, kopf's peering object elects one:
    the replica of the highest priority works, the others stand by. kopf pauses every
    replica when two share a priority, so each draws its own at start.
    """
    kopf.configure(verbose=verbose)
    # Before kopf.run, so the endpoint is up while kopf waits for the CRDs at start-up.
    serve_metrics(metrics_address)
    clusterwide = all_namespaces or not namespaces
    kopf.run(
        standalone=peering is None,
        peering_name=peering,
        priority=None if peering is None else peering_priority(),
        clusterwide=clusterwide,
        namespaces=namespaces,
        liveness_endpoint=liveness_endpoint or None,
        memo=kopf.Memo(settings=settings, clusterwide=clusterwide),
    )
