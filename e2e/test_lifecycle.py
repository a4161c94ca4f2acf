"""Deletion goes through the real garbage collector; drift on children is undone."""

from __future__ import annotations

from typing import Any

import yaml
from support import Kube, bind_claims, converged, sample, wait_for

from llm_operator.render import names


def test_delete_collects_children_and_keeps_retained_claims(kube: Kube, namespace: str) -> None:
    body = sample("cluster-checkpoints", namespace)
    # The sample keeps both claims (the default); let the cache go with its deployment.
    body["spec"]["storage"]["modelCache"]["retainOnDelete"] = False
    llmd = kube.create_llmd(body)
    name = llmd["metadata"]["name"]
    cache, checkpoints = names.model_cache_claim(name), names.checkpoints_claim(name)
    bind_claims(kube, namespace, [cache, checkpoints])
    cluster = wait_for(
        lambda: kube.ray("rayclusters", namespace, names.ray_cluster_name(name)), "RayCluster"
    )
    owners = cluster["metadata"]["ownerReferences"]
    assert [(o["kind"], o["name"], o.get("controller")) for o in owners] == [
        ("LLMDeployment", name, True)
    ]
    claims = kube.claims(namespace)
    assert claims[cache].metadata.owner_references, "a non-retained claim is owned"
    assert not claims[checkpoints].metadata.owner_references, "a retained claim is not owned"

    kube.delete_llmd(namespace, name)

    wait_for(
        lambda: kube.ray("rayclusters", namespace, names.ray_cluster_name(name)) is None,
        "the garbage collector to delete the RayCluster",
    )
    wait_for(lambda: cache not in kube.claims(namespace), "the model cache claim to go")
    remaining = kube.claims(namespace)
    assert checkpoints in remaining, "retainOnDelete keeps the checkpoints claim"
    assert remaining[checkpoints].metadata.deletion_timestamp is None


def test_deleted_rayservice_is_recreated(kube: Kube, namespace: str) -> None:
    llmd = kube.create_llmd(sample("quickstart", namespace))
    name = llmd["metadata"]["name"]
    service_name = names.ray_service_name(name)
    first = wait_for(lambda: kube.ray("rayservices", namespace, service_name), "RayService")

    kube.custom.delete_namespaced_custom_object(
        names.RAY_GROUP, names.RAY_VERSION, namespace, "rayservices", service_name
    )

    def recreated() -> dict[str, Any] | None:
        service = kube.ray("rayservices", namespace, service_name)
        if service and service["metadata"]["uid"] != first["metadata"]["uid"]:
            return service
        return None

    again = wait_for(recreated, "the operator to recreate the RayService")
    assert again["spec"]["serveConfigV2"] == first["spec"]["serveConfigV2"]
    assert again["metadata"]["ownerReferences"][0]["uid"] == llmd["metadata"]["uid"]


def test_hand_edited_rayservice_is_restored(kube: Kube, namespace: str) -> None:
    llmd = kube.create_llmd(sample("quickstart", namespace))
    name = llmd["metadata"]["name"]
    service_name = names.ray_service_name(name)
    original = wait_for(lambda: kube.ray("rayservices", namespace, service_name), "RayService")
    wait_for(lambda: converged(kube.get_llmd(namespace, name)), "first converge")

    edited = yaml.safe_load(original["spec"]["serveConfigV2"])
    edited["applications"][0]["route_prefix"] = "/hijacked"
    kube.custom.patch_namespaced_custom_object(
        names.RAY_GROUP,
        names.RAY_VERSION,
        namespace,
        "rayservices",
        service_name,
        {"spec": {"serveConfigV2": yaml.safe_dump(edited)}},
    )

    def restored() -> dict[str, Any] | None:
        service = kube.ray("rayservices", namespace, service_name)
        if service and service["spec"]["serveConfigV2"] == original["spec"]["serveConfigV2"]:
            return service
        return None

    service = wait_for(restored, "the operator to restore the serve config")
    assert service["metadata"]["generation"] > original["metadata"]["generation"]
