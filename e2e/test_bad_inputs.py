"""The bad-input corpus (e2e/bad_inputs/) against the real API server and operator.

Every case is refused at admission with the field in the message, or (`# decided-by:
operator`) reported as SpecValid=False naming the field, with nothing created; the
operator keeps working afterwards; and an invalid update of a running deployment leaves
its RayService untouched. The CLI's verdicts on the same files are in
tests/test_bad_inputs_cli.py; the format is in e2e/bad_inputs/README.md.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes.client.exceptions import ApiException
from support import (
    CONFLICT_RETRIES,
    Body,
    Kube,
    condition,
    converged,
    operator_metrics_url,
    sample,
    scrape,
    spec_valid_false,
    wait_for,
    wait_spec_invalid,
)
from test_admission import create_as_kubectl, refusal, running_quickstart
from testkit.bad_inputs import expand, expected_field, header

from llm_operator.api.constants import GROUP, PLURAL, VERSION
from llm_operator.api.validation import names_field
from llm_operator.controller.kube import FIELD_MANAGER
from llm_operator.render import names

pytestmark = pytest.mark.bad_input

CORPUS = Path(__file__).resolve().parent / "bad_inputs"
CASES = sorted(CORPUS.glob("*.yaml"))
OBJECT_KEYS = ("apiVersion", "kind", "metadata", "spec", "status")


def api_field(path: Path) -> str:
    """The field the API server's refusal names (see `expect-api` in the README)."""
    return header(path, "expect-api") or expected_field(path)


def load_case(path: Path) -> Body:
    """The case as a body, every `<<N x c>>` marker expanded to c repeated N times."""
    text = expand(path.read_text(encoding="utf-8"))
    document = yaml.safe_load(text)
    assert isinstance(document, dict), path.name
    return document


ADMISSION = [p for p in CASES if not header(p, "decided-by")]
OPERATOR = [p for p in CASES if header(p, "decided-by")]
# An update keeps the object's name; the rest of a case can be tried as an update.
UPDATES = [p for p in ADMISSION if expected_field(p) != "metadata.name"]


def operator_fields(ray_object: Body) -> list[Any]:
    """What the operator last wrote to a child (its managedFields entries, not status)."""
    return [
        entry
        for entry in ray_object["metadata"].get("managedFields") or []
        if entry.get("manager") == FIELD_MANAGER and entry.get("subresource") != "status"
    ]


def metric(name: str, **labels: str) -> float | None:
    return scrape(operator_metrics_url()).get((name, frozenset(labels.items())))


def test_the_corpus_splits_between_api_server_and_operator() -> None:
    assert len(CASES) >= 40
    assert len(ADMISSION) >= 30 and len(OPERATOR) >= 5
    assert len(UPDATES) >= 30


@pytest.mark.parametrize("path", ADMISSION, ids=lambda p: p.stem)
def test_api_server_refuses_with_the_field(kube: Kube, module_namespace: str, path: Path) -> None:
    body = load_case(path)
    body["metadata"]["namespace"] = module_namespace
    try:
        created = create_as_kubectl(kube, body)
    except ApiException as exc:
        assert exc.status in (400, 422), str(exc.body)[:2000]
        message = refusal(exc)
        assert names_field(message, api_field(path)), message[:2000]
    else:
        kube.delete_llmd(module_namespace, created["metadata"]["name"])
        pytest.fail(f"the API server accepted {path.name}")


@pytest.fixture(scope="module")
def operator_cases(kube: Kube, module_namespace: str) -> Iterator[dict[str, Path]]:
    """Every operator-decided case, created at once so the operator judges them together."""
    created = {}
    for path in OPERATOR:
        body = load_case(path)
        body["metadata"]["namespace"] = module_namespace
        created[create_as_kubectl(kube, body)["metadata"]["name"]] = path
    yield created
    for name in created:
        kube.delete_llmd(module_namespace, name)


@pytest.mark.parametrize("path", OPERATOR, ids=lambda p: p.stem)
def test_operator_reports_spec_valid_false(
    kube: Kube, module_namespace: str, operator_cases: dict[str, Path], path: Path
) -> None:
    name = next(n for n, p in operator_cases.items() if p == path)
    found, message = wait_spec_invalid(kube, module_namespace, name, f"SpecValid=False on {name}")
    assert names_field(message, expected_field(path)), message
    assert found["status"]["phase"] == "Failed"

    def warned() -> list[Any] | None:
        events = kube.core.list_namespaced_event(
            module_namespace,
            field_selector=f"involvedObject.name={name},involvedObject.kind=LLMDeployment",
        ).items
        return [e for e in events if e.type == "Warning" and e.reason == "InvalidSpec"] or None

    (event,) = wait_for(warned, f"the InvalidSpec Warning Event of {name}")
    assert names_field(event.message, expected_field(path)), event.message
    # By label: the operator's own children and any RayCluster KubeRay would have made
    # for a RayService (named <rayservice>-raycluster-<suffix>) carry it.
    selector = f"{names.DEPLOYMENT_LABEL}={name}"
    assert kube.rays("rayservices", module_namespace, selector) == []
    assert kube.rays("rayclusters", module_namespace, selector) == []


def test_the_operator_keeps_working_after_the_bad_input(
    kube: Kube, module_namespace: str, operator_cases: dict[str, Path]
) -> None:
    for name in operator_cases:
        wait_for(partial(spec_valid_false, kube, module_namespace, name), f"{name} reported")
    # Its metrics endpoint answers and counts every invalid spec of the namespace.
    wait_for(
        lambda: metric("llmop_invalid_specs", namespace=module_namespace) == len(operator_cases),
        "llmop_invalid_specs to count the operator's cases",
    )

    def alive(body: Body) -> None:
        body["metadata"]["name"] = "alive-after-bad-input"

    name = kube.create_llmd(sample("quickstart", module_namespace, alive))["metadata"]["name"]

    def handled() -> Body | None:
        found = kube.get_llmd(module_namespace, name)
        return found if converged(found) else None

    try:
        found = wait_for(handled, "a valid LLMDeployment to converge after the bad ones")
        assert condition(found, "SpecValid")["status"] == "True"  # type: ignore[index]
        assert kube.ray("rayservices", module_namespace, names.ray_service_name(name))
    finally:
        kube.delete_llmd(module_namespace, name)


def as_update(live: Body, case: Body) -> Body:
    """`live` with the case's spec, and its extra metadata and top-level fields."""
    update = {k: copy.deepcopy(v) for k, v in live.items() if k != "status"}
    for key, value in case["metadata"].items():
        if key not in ("name", "namespace"):
            update["metadata"][key] = value
    update["spec"] = case["spec"]
    update.update({k: v for k, v in case.items() if k not in OBJECT_KEYS})
    return update


def replace_with(kube: Kube, namespace: str, name: str, case: Body) -> None:
    """PUT the case onto the live object, as `kubectl replace` does.

    With the live resourceVersion (the API server wants one on every update of a custom
    resource); a conflict, the operator having written status meanwhile, is retried, so
    any other refusal comes from validation.
    """
    for _ in range(CONFLICT_RETRIES):
        update = as_update(kube.get_llmd(namespace, name), case)
        try:
            kube.custom.replace_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name, update, field_validation="Strict"
            )
        except ApiException as exc:
            if exc.status != 409:
                raise
        else:
            return
    pytest.fail(f"{namespace}/{name}: every update conflicted")


def test_invalid_updates_leave_the_running_children_alone(kube: Kube, namespace: str) -> None:
    name, service = running_quickstart(kube, namespace)
    service_name = names.ray_service_name(name)
    assert operator_fields(service), "the operator's write of its RayService is on record"
    before = kube.get_llmd(namespace, name)

    # Refused at admission: nothing is stored, the generation does not move.
    accepted = []
    for path in UPDATES:
        try:
            replace_with(kube, namespace, name, load_case(path))
        except ApiException as exc:
            assert exc.status in (400, 422), (path.name, str(exc.body)[:2000])
            assert names_field(refusal(exc), api_field(path)), (path.name, refusal(exc)[:2000])
        else:
            accepted.append(path.name)
    assert not accepted, f"updates the API server let through: {accepted}"
    after = kube.get_llmd(namespace, name)
    assert after["metadata"]["generation"] == before["metadata"]["generation"]
    assert after["spec"] == before["spec"]

    # Accepted at admission, refused by the operator: each one in turn is reported and
    # touches nothing; the RayService keeps the generation, spec and operator write it had.
    for path in OPERATOR:
        replace_with(kube, namespace, name, load_case(path))
        found, message = wait_spec_invalid(
            kube, namespace, name, f"SpecValid=False after {path.stem}"
        )
        assert names_field(message, expected_field(path)), (path.name, message)
        assert found["status"]["phase"] != "Failed", "the running children keep their phase"

    same = kube.ray("rayservices", namespace, service_name)
    assert same is not None
    assert same["metadata"]["generation"] == service["metadata"]["generation"]
    assert same["spec"] == service["spec"]
    assert operator_fields(same) == operator_fields(service)

    # Back to the valid spec: valid again, and still the same RayService.
    replace_with(kube, namespace, name, {"metadata": {}, "spec": before["spec"]})

    def valid_again() -> Body | None:
        found = kube.get_llmd(namespace, name)
        valid = condition(found, "SpecValid")
        return found if converged(found) and valid and valid["status"] == "True" else None

    wait_for(valid_again, "SpecValid=True after the valid spec is back")
    same = kube.ray("rayservices", namespace, service_name)
    assert same is not None
    assert same["metadata"]["generation"] == service["metadata"]["generation"]
    assert same["spec"] == service["spec"]
