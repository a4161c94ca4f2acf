"""kopf's wiring: one converge for create/update/resume, a watch on the children, start-up,
probes and the metrics sweep. What a reconcile does is in `reconciler`.

The child watch re-runs the same reconcile whenever KubeRay (or a person) changes or
deletes a child, which both mirrors KubeRay's status and restores drift. The gauges
follow the LLMDeployments' own watch events (and a periodic listing), not the
reconciles: see `metrics`.
"""

from __future__ import annotations

import logging
import secrets
import threading
from typing import Any, cast

import kopf

from llm_operator.api.constants import GROUP, PLURAL, VERSION
from llm_operator.api.validation import SpecError
from llm_operator.api.vocabulary import Reason
from llm_operator.controller import kube, reconciler
from llm_operator.controller.metrics import METRICS, sweep_metrics_forever
from llm_operator.controller.metrics import serve as serve_metrics
from llm_operator.render import names
from llm_operator.settings import OperatorSettings

LOG = logging.getLogger(__name__)
CHILD_LABELS = {names.MANAGED_BY_LABEL: names.MANAGED_BY}
STARTUP_RETRY_SECONDS = 5


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
            target=sweep_metrics_forever,
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
            reconciler.reconcile(body, kube.KubeApi(memo.clients), memo.settings)
    except kube.NotServed:
        memo.kuberay_missed = True  # KubeRay's CRDs went away; see kuberay_watched
        raise
    except SpecError as exc:
        kopf.warn(body, reason=Reason.INVALID_SPEC, message=str(exc))
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


@kopf.on.event(names.RAY_GROUP, names.RAY_VERSION, "rayservices", labels=CHILD_LABELS)
@kopf.on.event(names.RAY_GROUP, names.RAY_VERSION, "rayclusters", labels=CHILD_LABELS)
@kopf.on.event(names.RAY_GROUP, names.RAY_VERSION, "rayjobs", labels=CHILD_LABELS)
# Without the Gateway API's CRDs kopf only warns that it cannot watch these (and watches
# them once the CRDs appear): a cluster without a Gateway API is fine.
@kopf.on.event(names.GATEWAY_GROUP, names.GATEWAY_VERSION, names.HTTP_ROUTES, labels=CHILD_LABELS)
# The prefetch Jobs of spec.storage.modelCache.prefetch: their completion lets the Ray
# resource be made. Only the operator's own, by label (never every Job of the cluster).
@kopf.on.event("batch", "v1", "jobs", labels=CHILD_LABELS)
def on_child_event(event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """A child changed or went away: restore it if needed and mirror its status."""
    if reconciler.redundant_child_event(event["type"], body.get("kind", "")):
        return
    found = reconciler.parent_of(body)
    if found is None:
        return
    namespace, name = found
    with kube.api_errors(f"LLMDeployment {namespace}/{name}"):
        parent = kube.get_llm_deployment(memo.clients, namespace, name)
    if parent is None or not reconciler.parent_needs_reconcile(parent):
        return
    try:
        with METRICS.reconcile():
            reconciler.reconcile(parent, kube.KubeApi(memo.clients), memo.settings)
    except (SpecError, kube.RouteNotServed):
        return  # recorded in status; the converge handler retries (or needs a new spec)


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
