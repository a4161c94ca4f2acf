"""Pure decisions about writing children: what already matches, what others own.

KubeRay's `workerGroupSpecs` is an atomic list for server-side apply, so applying it
without `replicas` would reset the autoscaler's choice. Instead the operator carries the
live values of the fields the Ray autoscaler owns into every update.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from llm_operator.api.vocabulary import RayKind
from llm_operator.render.names import RETAIN_ANNOTATION
from llm_operator.yamlio import Manifest

# Per worker group, written by the Ray autoscaler (and by KubeRay for RayServices).
AUTOSCALER_OWNED = ("replicas", "scaleStrategy")


# Where a kind keeps its Ray cluster's spec; a RayCluster's is its own spec.
CLUSTER_SPEC_KEY = {RayKind.RAY_SERVICE: "rayClusterConfig", RayKind.RAY_JOB: "rayClusterSpec"}


def worker_groups(resource: Mapping[str, Any]) -> list[Manifest]:
    """The worker groups of a RayCluster, or of a RayService's or RayJob's cluster spec."""
    spec = resource.get("spec") or {}
    key = CLUSTER_SPEC_KEY.get(resource.get("kind", ""))
    cluster = spec.get(key, spec) if key else spec
    groups: list[Manifest] = cluster.get("workerGroupSpecs") or []
    return groups


def keep_autoscaler_fields(desired: Manifest, live: Mapping[str, Any]) -> Manifest:
    """`desired` with replicas/scaleStrategy of existing groups taken from `live`.

    `desired` is left as it was. Only the path down to the worker groups is copied (a deep
    copy of the whole RayService cost more than the rest of a no-op reconcile); the rest
    is shared with `desired`, and nothing writes to it.
    """
    merged = _copy_down_to_worker_groups(desired)
    live_groups = {g.get("groupName"): g for g in worker_groups(live)}
    for group in worker_groups(merged):
        current = live_groups.get(group.get("groupName"))
        if current is None:
            continue  # a new group starts at the replicas we render
        for field in AUTOSCALER_OWNED:
            if field in current:
                group[field] = copy.deepcopy(current[field])
            else:
                group.pop(field, None)
    return merged


def _copy_down_to_worker_groups(resource: Manifest) -> Manifest:
    """A copy of `resource` whose dicts on the way to each worker group, the list and the
    groups themselves are new: what `keep_autoscaler_fields` sets or pops on."""
    copied = dict(resource)
    spec = copied.get("spec")
    if not isinstance(spec, dict):
        return copied
    copied["spec"] = spec = dict(spec)
    cluster = spec
    if copied.get("kind") == RayKind.RAY_SERVICE and isinstance(spec.get("rayClusterConfig"), dict):
        cluster = spec["rayClusterConfig"] = dict(spec["rayClusterConfig"])
    groups = cluster.get("workerGroupSpecs")
    if isinstance(groups, list):
        cluster["workerGroupSpecs"] = [dict(g) if isinstance(g, dict) else g for g in groups]
    return copied


def contains(wanted: Any, live: Any) -> bool:
    """Whether `live` already holds everything in `wanted` (server defaults may add more).

    Mappings compare key by key; lists must match in length and element by element, so a
    hand-added container or env entry counts as drift.
    """
    if isinstance(wanted, Mapping):
        return isinstance(live, Mapping) and all(
            key in live and contains(value, live[key]) for key, value in wanted.items()
        )
    if isinstance(wanted, list):
        return (
            isinstance(live, list)
            and len(wanted) == len(live)
            and all(contains(w, v) for w, v in zip(wanted, live, strict=True))
        )
    return bool(wanted == live)


@dataclass(frozen=True)
class WorkerBounds:
    """The bounds one worker group of a KubeRay-made RayCluster should have."""

    namespace: str
    cluster_name: str
    group_name: str
    min_replicas: int
    max_replicas: int


def bounds_patch(
    cluster: Mapping[str, Any], group_name: str, min_replicas: int, max_replicas: int
) -> list[Manifest] | None:
    """JSON patch moving one worker group's bounds on a KubeRay-made RayCluster.

    KubeRay leaves min/max out of the hash it compares, so a RayService bounds change
    never reaches the running cluster by itself. The `test` op guards the index.
    """
    for index, group in enumerate(worker_groups(cluster)):
        if group.get("groupName") != group_name:
            continue
        if group.get("minReplicas") == min_replicas and group.get("maxReplicas") == max_replicas:
            return None
        path = f"/spec/workerGroupSpecs/{index}"
        return [
            {"op": "test", "path": f"{path}/groupName", "value": group_name},
            {"op": "replace", "path": f"{path}/minReplicas", "value": min_replicas},
            {"op": "replace", "path": f"{path}/maxReplicas", "value": max_replicas},
        ]
    return None


def claim_metadata_patch(
    desired: Mapping[str, Any], live: Mapping[str, Any], owner_uid: str
) -> Manifest | None:
    """Metadata merge patch that brings an existing claim's labels and retention in line.

    The claim's spec is left alone: most of it is immutable once bound.
    """
    want_meta = desired.get("metadata", {})
    live_meta = live.get("metadata", {})
    patch: Manifest = {}
    labels = want_meta.get("labels", {})
    if not contains(labels, live_meta.get("labels") or {}):
        patch["labels"] = labels
    annotations: Manifest = dict(want_meta.get("annotations", {}))
    live_annotations = live_meta.get("annotations") or {}
    if RETAIN_ANNOTATION in live_annotations and RETAIN_ANNOTATION not in annotations:
        annotations[RETAIN_ANNOTATION] = None  # retention switched off: the claim is owned again
    if not contains(annotations, live_annotations):
        patch["annotations"] = annotations
    live_refs = live_meta.get("ownerReferences") or []
    others = [ref for ref in live_refs if ref.get("uid") != owner_uid]
    wanted_refs = others + list(want_meta.get("ownerReferences") or [])
    if not contains(wanted_refs, live_refs):
        patch["ownerReferences"] = wanted_refs
    return {"metadata": patch} if patch else None
