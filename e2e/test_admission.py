"""Bad input is refused by the API server (schema and CEL) or reported by the operator.

The cases are tests/invalid/*.yaml, the same files the CLI's unit tests use: each names
the field it gets wrong (`# expect:`); the few that only the operator can judge say
`# decided-by: operator`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException
from support import (
    CONFLICT_RETRIES,
    INVALID,
    Kube,
    converged,
    load_yaml,
    refusal,
    sample,
    wait_for,
    wait_spec_invalid,
)

from llm_operator.api.constants import GROUP, PLURAL, VERSION
from llm_operator.api.validation import names_field
from llm_operator.render import names

CASES = sorted(INVALID.glob("*.yaml"))
EXPECT = re.compile(r"^# expect: (\S+)$", re.MULTILINE)
BY_OPERATOR = re.compile(r"^# decided-by: operator", re.MULTILINE)
# Objects whose identity is the problem cannot be tried as an update of another object.
IDENTITY_FIELDS = ("apiVersion", "metadata.name")


def expected_field(path: Path) -> str:
    found = EXPECT.search(path.read_text(encoding="utf-8"))
    assert found, path.name
    return found.group(1)


def decided_by_operator(path: Path) -> bool:
    return bool(BY_OPERATOR.search(path.read_text(encoding="utf-8")))


ADMISSION = [p for p in CASES if not decided_by_operator(p)]
OPERATOR = [p for p in CASES if decided_by_operator(p)]


def create_as_kubectl(kube: Kube, body: dict[str, Any]) -> dict[str, Any]:
    """Create through the path the object's own apiVersion names, strict like kubectl."""
    group, _, version = body["apiVersion"].partition("/")
    assert group == GROUP, body["apiVersion"]
    return kube.custom.create_namespaced_custom_object(
        group, version, body["metadata"]["namespace"], PLURAL, body, field_validation="Strict"
    )


def test_enough_cases_are_decided_at_admission() -> None:
    assert len(ADMISSION) >= 15
    assert OPERATOR, "the operator-only cases keep the operator's validation honest"


@pytest.mark.parametrize("path", ADMISSION, ids=lambda p: p.stem)
def test_api_server_refuses_with_the_field(kube: Kube, module_namespace: str, path: Path) -> None:
    body = load_yaml(path)
    body["metadata"]["namespace"] = module_namespace
    with pytest.raises(ApiException) as caught:
        create_as_kubectl(kube, body)
    field = expected_field(path)
    if field == "apiVersion":
        assert caught.value.status == 404, "an unknown version is not served at all"
        return
    assert caught.value.status in (400, 422), caught.value.body
    message = refusal(caught.value)
    assert names_field(message, field), message


def running_quickstart(kube: Kube, namespace: str) -> tuple[str, dict[str, Any]]:
    """A healthy LLMDeployment, converged, and its RayService."""
    name = kube.create_llmd(sample("quickstart", namespace))["metadata"]["name"]
    service = wait_for(
        lambda: kube.ray("rayservices", namespace, names.ray_service_name(name)), "RayService"
    )
    wait_for(lambda: converged(kube.get_llmd(namespace, name)), "first converge")
    return name, service


def refused_update(kube: Kube, namespace: str, name: str, spec: dict[str, Any]) -> str | None:
    """Replace the spec as kubectl would (live resourceVersion; a conflict with the
    operator's status write is retried, a few times); the API server's refusal, or None
    if accepted."""
    for _ in range(CONFLICT_RETRIES):
        live = kube.get_llmd(namespace, name)
        try:
            kube.custom.replace_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name, dict(live, spec=spec),
                field_validation="Strict",
            )  # fmt: skip
        except ApiException as exc:
            if exc.status == 409:
                continue
            assert exc.status in (400, 422), exc.body
            return refusal(exc)
        return None
    pytest.fail(f"{namespace}/{name}: {CONFLICT_RETRIES} updates in a row conflicted")


def test_refused_updates_change_nothing(kube: Kube, namespace: str) -> None:
    name, service = running_quickstart(kube, namespace)
    before = kube.get_llmd(namespace, name)
    tried = [p for p in ADMISSION if expected_field(p) not in IDENTITY_FIELDS]
    accepted = []
    for path in tried:
        refused = refused_update(kube, namespace, name, load_yaml(path)["spec"])
        if refused is None:
            accepted.append(path.name)
            continue
        assert names_field(refused, expected_field(path)), (path.name, refused)
    assert not accepted, f"updates the API server let through: {accepted}"
    assert len(tried) >= 15
    after = kube.get_llmd(namespace, name)
    assert after["metadata"]["generation"] == before["metadata"]["generation"]
    assert after["spec"] == before["spec"]
    same = kube.ray("rayservices", namespace, names.ray_service_name(name))
    assert same is not None
    assert same["metadata"]["generation"] == service["metadata"]["generation"]


@pytest.mark.parametrize("path", OPERATOR, ids=lambda p: p.stem)
def test_operator_reports_what_the_schema_cannot(kube: Kube, namespace: str, path: Path) -> None:
    body = load_yaml(path)
    body["metadata"]["namespace"] = namespace
    created = create_as_kubectl(kube, body)
    name = created["metadata"]["name"]

    found, message = wait_spec_invalid(kube, namespace, name, "SpecValid=False")
    assert names_field(message, expected_field(path)), message
    assert found["status"]["phase"] == "Failed"
    assert kube.rays("rayservices", namespace) == []
    assert kube.rays("rayclusters", namespace) == []


def test_invalid_update_keeps_running_children(kube: Kube, namespace: str) -> None:
    name, service = running_quickstart(kube, namespace)

    # Accepted by the schema, refused by the operator: engine args repeat a typed field.
    kube.patch_llmd(namespace, name, {"spec": {"engine": {"args": {"tensor_parallel_size": 2}}}})

    found, message = wait_spec_invalid(kube, namespace, name, "SpecValid=False after the update")
    assert names_field(message, "spec.engine.args.tensor_parallel_size"), message
    assert found["status"]["phase"] != "Failed", "the running children keep their phase"
    same = kube.ray("rayservices", namespace, names.ray_service_name(name))
    assert same is not None
    assert same["metadata"]["generation"] == service["metadata"]["generation"]
    assert same["spec"] == service["spec"]


def test_child_the_api_server_refuses_is_reported_as_invalid_spec(
    kube: Kube, namespace: str
) -> None:
    """A value only the child's own API checks is reported: a claim of size 0 (the CRD
    admits any quantity that is not negative; a claim must ask for more than nothing)."""

    def edit(body: dict[str, Any]) -> None:
        body["spec"]["storage"] = {"modelCache": {"size": "0"}}

    name = kube.create_llmd(sample("quickstart", namespace, edit))["metadata"]["name"]

    _, message = wait_spec_invalid(kube, namespace, name, "SpecValid=False for the refused claim")
    assert "PersistentVolumeClaim" in message, message
    assert names_field(message, "spec.resources[storage]"), message
    assert kube.rays("rayservices", namespace) == [], "nothing after the refused child"
