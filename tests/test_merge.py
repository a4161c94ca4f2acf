"""The autoscaler's fields survive the operator's updates.

KubeRay's workerGroupSpecs is an atomic list for server-side apply: an apply without the
worker groups' `replicas` and `scaleStrategy.workersToDelete` would reset what the Ray
autoscaler chose. The operator carries their live values into every update
(`merge.keep_autoscaler_fields`) and sends the live resourceVersion with it, so a scale
that lands between its read and its write makes the write fail with 409 (retried), never
overwrite the scale. e2e/test_faults.py races the same on a real API server.
"""

from __future__ import annotations

import copy
from typing import Any

import kopf
import pytest

from conftest import sample_plan
from fakeapi import NAMESPACE, FakeApiServer, clients_of, ray_path
from llm_operator.controller import kube
from llm_operator.controller.merge import keep_autoscaler_fields, worker_groups
from llm_operator.render import names, render

Body = dict[str, Any]


def rendered(name: str, kind: str) -> Body:
    (child,) = [c for c in render(sample_plan(name)) if c["kind"] == kind]
    child["metadata"]["namespace"] = NAMESPACE
    return child


def scaled(body: Body, replicas: int, to_delete: list[str]) -> Body:
    """`body` as the autoscaler leaves it: its first worker group scaled."""
    out = copy.deepcopy(body)
    group = worker_groups(out)[0]
    group["replicas"] = replicas
    group["scaleStrategy"] = {"workersToDelete": to_delete}
    return out


@pytest.mark.parametrize(
    ("sample_name", "kind"), [("llama-8b-l4", "RayService"), ("cluster-checkpoints", "RayCluster")]
)
def test_live_replicas_and_workers_to_delete_are_kept(sample_name: str, kind: str) -> None:
    desired = rendered(sample_name, kind)
    untouched = copy.deepcopy(desired)
    live = scaled(desired, 3, ["pod-a", "pod-b"])
    merged = keep_autoscaler_fields(desired, live)
    (group,) = worker_groups(merged)
    assert group["replicas"] == 3
    assert group["scaleStrategy"] == {"workersToDelete": ["pod-a", "pod-b"]}
    assert desired == untouched, "the rendered children are not changed"
    # Everything else is the rendered spec.
    assert {k: v for k, v in group.items() if k not in ("replicas", "scaleStrategy")} == {
        k: v for k, v in worker_groups(desired)[0].items() if k not in ("replicas", "scaleStrategy")
    }


def test_a_group_without_live_scale_strategy_sends_none() -> None:
    desired = rendered("llama-8b-l4", "RayService")
    worker_groups(desired)[0]["scaleStrategy"] = {"workersToDelete": ["stale"]}
    live = copy.deepcopy(desired)
    del worker_groups(live)[0]["scaleStrategy"]
    worker_groups(live)[0]["replicas"] = 2
    (group,) = worker_groups(keep_autoscaler_fields(desired, live))
    assert group["replicas"] == 2 and "scaleStrategy" not in group


def test_a_new_group_starts_at_the_rendered_replicas() -> None:
    desired = rendered("llama-8b-l4", "RayService")
    live = scaled(desired, 4, [])
    worker_groups(live)[0]["groupName"] = "an-older-group"
    (group,) = worker_groups(keep_autoscaler_fields(desired, live))
    assert group["groupName"] == names.WORKER_GROUP
    assert group["replicas"] == worker_groups(desired)[0]["replicas"] == 1
    assert "scaleStrategy" not in group


class ScaledMeanwhile(FakeApiServer):
    """The autoscaler scales the RayService once, right after the operator reads it."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path
        self.scaled = False

    def handle(self, method: str, url: str, headers: dict[str, str], body: Any) -> Any:
        answer = super().handle(method, url, headers, body)
        if method == "GET" and url.endswith(self.path) and not self.scaled:
            self.scaled = True
            answer = copy.deepcopy(answer)  # what the operator read, before the scale
            self.put(self.path, scaled(self.objects[self.path], 5, ["pod-x"]))
        return answer


def test_an_update_carries_the_live_scale_and_resource_version() -> None:
    desired = rendered("llama-8b-l4", "RayService")
    server = FakeApiServer()
    path = ray_path("rayservices", desired["metadata"]["name"])
    server.put(path, scaled(desired, 3, ["pod-a"]))
    changed = copy.deepcopy(desired)
    changed["spec"]["serveConfigV2"] += "# a change\n"
    outcome, live = kube.apply_ray_resource(clients_of(server), changed)
    assert outcome == "updated"
    (body,) = [write.body for write in server.writes if write.access.verb == "patch"]
    assert body["metadata"]["resourceVersion"] == "1"
    (group,) = worker_groups(body)
    assert (group["replicas"], group["scaleStrategy"]) == (3, {"workersToDelete": ["pod-a"]})
    assert worker_groups(live)[0]["replicas"] == 3


def test_a_scale_between_read_and_write_is_not_overwritten() -> None:
    desired = rendered("llama-8b-l4", "RayService")
    path = ray_path("rayservices", desired["metadata"]["name"])
    server = ScaledMeanwhile(path)
    server.put(path, scaled(desired, 3, ["pod-a"]))
    changed = copy.deepcopy(desired)
    changed["spec"]["serveConfigV2"] += "# a change\n"
    clients = clients_of(server)

    with pytest.raises(kopf.TemporaryError, match="HTTP 409"):
        kube.apply_ray_resource(clients, changed)
    (group,) = worker_groups(server.objects[path])
    assert (group["replicas"], group["scaleStrategy"]) == (5, {"workersToDelete": ["pod-x"]})

    # kopf's retry reads again and keeps the new scale.
    outcome, live = kube.apply_ray_resource(clients, changed)
    assert outcome == "updated"
    (group,) = worker_groups(live)
    assert (group["replicas"], group["scaleStrategy"]) == (5, {"workersToDelete": ["pod-x"]})
    assert live["spec"]["serveConfigV2"].endswith("# a change\n")
