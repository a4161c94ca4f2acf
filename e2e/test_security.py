"""Security checks: hostile LLMDeployments and the Hugging Face token (the operator's
identity: e2e/test_rbac.py).

1. Hostile LLMDeployments. Every user field that reaches a child (env, podLabels,
   podAnnotations, serviceAccountName, model.source, storage claims and mount paths,
   engine args, unknown fields, metadata) is tried with values aimed at privilege, the
   host or another namespace. Each is refused by the API server naming the field, or
   admitted; then the operator's RayService or RayCluster, KubeRay's RayCluster and the
   pods KubeRay made (or, when the Pod API refuses the template, a dry run of it, which
   must name the field) have no privileged or escalating container, added capability,
   hostPath, host namespace, host port, or AppArmor/seccomp opt-out; the namespace
   enforces Pod Security's baseline profile, so the API server checks the pods as well;
   and nothing of them exists outside the LLMDeployment's namespace.
   tests/test_security_render.py makes the same checks over the pure renderer.
2. The Hugging Face token reaches the Ray containers only as a secretKeyRef, never as a
   literal (a literal HF_TOKEN is refused on create and on update), and its value appears
   in no LLMDeployment, RayService, RayCluster, Pod or Event, nor in the local logs of the
   operator, KubeRay and the control plane.

Worker pods select a node label no node has, and head pods ask for little, so these
checks hold no GPU and little CPU of the shared fake nodes.
"""

from __future__ import annotations

import base64
import json
import mmap
import os
import secrets
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from support import (
    ROOT,
    WAIT_SECONDS,
    Kube,
    converged,
    local_cluster,
    probe_pod,
    refusal,
    sample,
    wait_for,
)
from testkit.confinement import CONFINEMENT_ANNOTATIONS, escapes, foreign_namespaces, walk
from testkit.edits import both, ray_cluster_of
from testkit.edits import set_cache as cache
from testkit.edits import set_cluster as field
from testkit.edits import set_env as env
from testkit.edits import set_source as source
from testkit.hostile import (
    BIG_ENV,
    HOSTILE_ANNOTATIONS,
    HOSTILE_LABELS,
    INJECTION,
    INTERNAL_ENV,
    REFUSED,
    set_engine_args,
)

from llm_operator.api.constants import GROUP, PLURAL, VERSION
from llm_operator.api.validation import names_field
from llm_operator.render import names

pytestmark = pytest.mark.security

Body = dict[str, Any]
LOGS = ROOT / ".e2e" / "logs"
# No node carries this label: worker pods exist but never take a GPU.
NOWHERE = {"llmops.dev/e2e-security": "no-such-node"}
SMALL_HEAD = {"requests": {"cpu": "100m", "memory": "256Mi"}}
# A test's own LLMDeployments carry this in their names, so a search of the whole cluster
# finds theirs and nobody else's.
RUN = uuid.uuid4().hex[:5]
BASELINE = {"pod-security.kubernetes.io/enforce": "baseline"}
# KubeRay reconciles RayServices one at a time, for every test running on the cluster.
SLOW = WAIT_SECONDS


def as_dict(kube: Kube, obj: Any) -> Body:
    out = kube.api.sanitize_for_serialization(obj)
    assert isinstance(out, dict)
    return out


# --- 1. hostile LLMDeployments ----------------------------------------------------------


def hostile(namespace: str, name: str, edit: Callable[[Body], None]) -> Body:
    """The quickstart sample as `name`, off the GPU nodes, edited."""

    def prepare(body: Body) -> None:
        body["metadata"]["name"] = name
        body["spec"]["accelerator"]["nodeSelector"] = dict(NOWHERE)
        body["spec"]["rayCluster"] = {"head": {"resources": SMALL_HEAD}}
        edit(body)

    return sample("quickstart", namespace, prepare)


# Refused at admission, by the CRD's schema (strict field validation, as kubectl sends)
# and CEL rules; the message names the field.


def create_strict(kube: Kube, body: Body) -> Body:
    return kube.custom.create_namespaced_custom_object(
        GROUP, VERSION, body["metadata"]["namespace"], PLURAL, body, field_validation="Strict"
    )


@pytest.mark.parametrize("case", sorted(REFUSED), ids=str)
def test_api_server_refuses_hostile_field(kube: Kube, module_namespace: str, case: str) -> None:
    edit, name = REFUSED[case]
    body = hostile(module_namespace, f"sec-{RUN}-refused", edit)
    with pytest.raises(ApiException) as caught:
        create_strict(kube, body)
    assert caught.value.status in (400, 422), caught.value.body
    message = refusal(caught.value)
    assert names_field(message, name), message


def test_confinement_annotations_would_unconfine_a_pod(kube: Kube, module_namespace: str) -> None:
    """Why the two annotation cases above must be refused: the API server reads the
    AppArmor annotation as the container's profile."""
    pod = probe_pod()
    pod["metadata"]["annotations"] = {CONFINEMENT_ANNOTATIONS[0] + "c": "unconfined"}
    made = as_dict(kube, kube.core.create_namespaced_pod(module_namespace, pod, dry_run="All"))
    assert escapes(made), made


def test_namespace_in_the_body_must_match_the_request(kube: Kube, module_namespace: str) -> None:
    body = hostile("kube-system", f"sec-{RUN}-elsewhere", lambda b: None)
    with pytest.raises(ApiException) as caught:
        kube.custom.create_namespaced_custom_object(GROUP, VERSION, module_namespace, PLURAL, body)
    assert caught.value.status == 400, caught.value.body
    assert "does not match the namespace" in refusal(caught.value)
    with pytest.raises(ApiException) as missing:
        kube.get_llmd("kube-system", f"sec-{RUN}-elsewhere")
    assert missing.value.status == 404


INTERNALS: list[Body] = [*INTERNAL_ENV, BIG_ENV]


def unknown_fields(body: Body) -> None:
    """Fields the schema does not have; without strict validation they are pruned."""
    spec = ray_cluster_of(body)
    spec["hostNetwork"] = True
    spec["volumes"] = [{"name": "host", "hostPath": {"path": "/"}}]
    spec["head"]["securityContext"] = {"privileged": True}
    spec["env"] = [
        {
            "name": "STOLEN",
            "valueFrom": {"secretKeyRef": {"name": "a", "key": "b", "namespace": "kube-system"}},
        }
    ]
    body["spec"]["hostPID"] = True


def env_and_meta(body: Body) -> None:
    env(*INTERNALS[:4])(body)
    field("podLabels", HOSTILE_LABELS)(body)
    field("podAnnotations", HOSTILE_ANNOTATIONS)(body)


@dataclass(frozen=True)
class Admitted:
    """A hostile spec the API server admits; `pod_refusal` is the field the Pod API names
    when it refuses the template KubeRay would make pods from (None: pods are made)."""

    edit: Callable[[Body], None]
    pod_refusal: str | None = None
    strict: bool = True
    # Cluster: the operator writes the RayCluster itself (quicker to reach pods); the
    # serving path through a RayService is taken where the Serve config matters.
    mode: str = "Cluster"


ADMITTED: dict[str, Admitted] = {
    "env": Admitted(env(*INTERNALS), mode="Service"),
    "meta": Admitted(
        both(field("podLabels", HOSTILE_LABELS), field("podAnnotations", HOSTILE_ANNOTATIONS)),
        mode="Service",
    ),
    # pvc://<claim>/<path>: `other-ns` is a claim of this namespace (a path that climbs
    # out of the claim, pvc://other-ns/../../claim, is refused: see REFUSED).
    "source": Admitted(source("pvc://other-ns/claim")),
    "args": Admitted(set_engine_args, mode="Service"),
    # An existing claim is one of this namespace, whatever its name suggests.
    "claim": Admitted(cache(existingClaim="kube-system")),
    "mount": Admitted(
        both(
            cache(size="1Gi", mountPath="/var/run/secrets/kubernetes.io/serviceaccount"),
            lambda b: b["spec"]["storage"].update(
                checkpoints={"size": "1Gi", "mountPath": "/var/lib/kubelet"}
            ),
        )
    ),
    "pruned": Admitted(unknown_fields, strict=False, mode="Service"),
    "env-meta": Admitted(env_and_meta),
    # Admitted by the CRD, refused by the Pod API (the one format left to it: a downward
    # API field the pod does not offer).
    "field-path": Admitted(
        env({"name": "PHASE", "valueFrom": {"fieldRef": {"fieldPath": "status.phase"}}}),
        pod_refusal="valueFrom.fieldRef.fieldPath",
    ),
}


def mode(case: Admitted) -> Callable[[Body], None]:
    def edit(body: Body) -> None:
        body["spec"]["mode"] = case.mode

    return edit


def assert_confined(what: str, node: Body, namespace: str) -> None:
    assert node["metadata"]["namespace"] == namespace, what
    assert escapes(node) == [], what
    assert foreign_namespaces(node, namespace) == [], what


def templates(ray_cluster_spec: Body) -> list[Body]:
    groups = [ray_cluster_spec["headGroupSpec"], *ray_cluster_spec["workerGroupSpecs"]]
    return [group["template"] for group in groups]


def pod_of(template: Body) -> Body:
    meta = template.get("metadata") or {}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "sec-probe-",
            "labels": meta.get("labels") or {},
            "annotations": meta.get("annotations") or {},
        },
        "spec": template["spec"],
    }


def deployment_pods(kube: Kube, namespace: str, name: str) -> list[Body]:
    return [as_dict(kube, p) for p in kube.pods(namespace, f"{names.DEPLOYMENT_LABEL}={name}")]


def head_and_worker(pods: list[Body]) -> list[Body] | None:
    kinds = {(p["metadata"].get("labels") or {}).get("ray.io/node-type") for p in pods}
    return pods if {"head", "worker"} <= kinds else None


def kuberay_cluster(kube: Kube, namespace: str, body: Body) -> Body:
    """The RayCluster KubeRay reconciles: the operator's own in Cluster mode, else the
    one KubeRay made for the RayService."""
    name = body["metadata"]["name"]
    if body["spec"].get("mode") == "Cluster":
        return wait_for(
            lambda: kube.ray("rayclusters", namespace, names.ray_cluster_name(name)),
            f"the RayCluster of {name}",
            SLOW,
        )

    def made() -> Body | None:
        service = kube.ray("rayservices", namespace, names.ray_service_name(name)) or {}
        status = service.get("status") or {}
        for key in ("activeServiceStatus", "pendingServiceStatus"):
            cluster = (status.get(key) or {}).get("rayClusterName")
            if cluster and (found := kube.ray("rayclusters", namespace, cluster)):
                return found
        return None

    return wait_for(made, f"KubeRay's RayCluster of {name}", SLOW)


def check_children(kube: Kube, namespace: str, body: Body, case: Admitted) -> list[Body]:
    """Every child and pod of one admitted hostile LLMDeployment is confined; the pods."""
    name = body["metadata"]["name"]
    if body["spec"].get("mode") != "Cluster":
        service = wait_for(
            lambda: kube.ray("rayservices", namespace, names.ray_service_name(name)),
            f"the RayService of {name}",
            SLOW,
        )
        assert_confined(f"RayService {name}", service, namespace)
    cluster = kuberay_cluster(kube, namespace, body)
    assert_confined(f"RayCluster of {name}", cluster, namespace)
    refusals = []
    for template in templates(cluster["spec"]):
        try:
            probe = kube.core.create_namespaced_pod(namespace, pod_of(template), dry_run="All")
        except ApiException as exc:
            refusals.append(refusal(exc))
            continue
        made = as_dict(kube, probe)
        assert escapes(made) == [], (name, escapes(made))
    if case.pod_refusal is not None:
        assert refusals, f"the Pod API admitted the templates of {name}"
        expected = case.pod_refusal.format(namespace=namespace)
        assert all(expected in message for message in refusals), refusals
        assert deployment_pods(kube, namespace, name) == []
        return []
    assert refusals == [], refusals
    pods = wait_for(
        lambda: head_and_worker(deployment_pods(kube, namespace, name)),
        f"KubeRay's head and worker pods of {name}",
        SLOW,
    )
    for pod in pods:
        assert_confined(f"pod {pod['metadata']['name']}", pod, namespace)
    return pods


def everywhere(kube: Kube, prefix: str) -> list[tuple[str, str, str]]:
    """(kind, namespace, name) of every object in the cluster whose name starts with
    `prefix`, among the kinds an LLMDeployment leads to."""
    found: list[tuple[str, str, str]] = []
    for plural in ("rayservices", "rayclusters"):
        listing = kube.custom.list_cluster_custom_object(names.RAY_GROUP, names.RAY_VERSION, plural)
        found += [
            (plural, item["metadata"]["namespace"], item["metadata"]["name"])
            for item in listing["items"]
        ]
    core = kube.core
    for kind, items in (
        ("pods", core.list_pod_for_all_namespaces().items),
        ("persistentvolumeclaims", core.list_persistent_volume_claim_for_all_namespaces().items),
        ("services", core.list_service_for_all_namespaces().items),
        ("serviceaccounts", core.list_service_account_for_all_namespaces().items),
    ):
        found += [(kind, item.metadata.namespace, item.metadata.name) for item in items]
    # KubeRay binds a Role to the autoscaler's service account.
    rbac = client.RbacAuthorizationV1Api(kube.api)
    for kind, items in (
        ("roles", rbac.list_role_for_all_namespaces().items),
        ("rolebindings", rbac.list_role_binding_for_all_namespaces().items),
    ):
        found += [(kind, item.metadata.namespace, item.metadata.name) for item in items]
    return [item for item in found if item[2].startswith(prefix)]


def test_hostile_llmdeployments_make_only_confined_children(kube: Kube, namespace: str) -> None:
    # The API server's own Pod Security admission checks every pod here too: KubeRay's
    # pods exist only if they meet the baseline profile.
    kube.core.patch_namespace(namespace, {"metadata": {"labels": BASELINE}})
    prefix = f"sec-{RUN}-"
    bodies = {
        case: hostile(namespace, prefix + case, both(ADMITTED[case].edit, mode(ADMITTED[case])))
        for case in ADMITTED
    }

    def create(case: str) -> Body:
        if ADMITTED[case].strict:
            return create_strict(kube, bodies[case])
        return kube.create_llmd(bodies[case])

    def check(case: str) -> list[Body] | str:
        try:
            return check_children(kube, namespace, bodies[case], ADMITTED[case])
        except AssertionError as failed:
            return f"{type(failed).__name__}: {failed}"

    with ThreadPoolExecutor(len(bodies)) as pool:
        stored = dict(zip(bodies, pool.map(create, bodies), strict=True))
        checked = dict(zip(bodies, pool.map(check, bodies), strict=True))
    failed = {case: outcome for case, outcome in checked.items() if isinstance(outcome, str)}
    assert failed == {}
    pods = {case: outcome for case, outcome in checked.items() if isinstance(outcome, list)}

    # Unknown fields were pruned, not kept.
    spec = stored["pruned"]["spec"]
    assert "hostPID" not in spec
    assert not {"hostNetwork", "volumes"} & set(spec["rayCluster"])
    assert "securityContext" not in spec["rayCluster"]["head"]
    assert "namespace" not in spec["rayCluster"]["env"][0]["valueFrom"]["secretKeyRef"]

    # The operator's labels win; the user's values stay strings.
    (head,) = [p for p in pods["meta"] if p["metadata"]["labels"]["ray.io/node-type"] == "head"]
    labels, annotations = head["metadata"]["labels"], head["metadata"]["annotations"]
    assert labels[names.MANAGED_BY_LABEL] == names.MANAGED_BY
    assert labels[names.DEPLOYMENT_LABEL] == prefix + "meta"
    assert annotations["injected"] == INJECTION
    assert annotations["unicode"] == HOSTILE_ANNOTATIONS["unicode"]

    # Environment entries reach the Ray container as written, values as plain strings;
    # KubeRay defines its start command after them, so its own definition wins.
    (env_head,) = [p for p in pods["env"] if p["metadata"]["labels"]["ray.io/node-type"] == "head"]
    (ray,) = [c for c in env_head["spec"]["containers"] if c["name"] == names.HEAD_CONTAINER]
    for entry in INTERNALS:
        if "value" in entry:
            assert entry in ray["env"], entry["name"]
    start = [e for e in ray["env"] if e["name"] == "KUBERAY_GEN_RAY_START_CMD"]
    assert start[-1]["value"].startswith("ray start"), start
    (from_field,) = [e for e in ray["env"] if e["name"] == "POD_NAMESPACE"]
    assert from_field["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"

    # pvc:// names a claim of this namespace, never a namespace.
    for pod in pods["source"]:
        claims = {
            v["persistentVolumeClaim"]["claimName"]
            for v in pod["spec"]["volumes"]
            if "persistentVolumeClaim" in v
        }
        assert claims == {"other-ns"}, claims

    # Nothing of these LLMDeployments exists outside their namespace.
    found = everywhere(kube, prefix)
    assert [item for item in found if item[1] != namespace] == []
    # Guard: the search does find them, where they are.
    assert {item[0] for item in found} >= {
        "rayservices",
        "rayclusters",
        "pods",
        "persistentvolumeclaims",
        "services",
        "serviceaccounts",
        "rolebindings",
    }


# --- 2. the Hugging Face token -----------------------------------------------------------


@dataclass(frozen=True)
class TokenDeployment:
    namespace: str
    name: str
    token: str
    pods: list[Body]


SECRET, KEY = "hf-token", "token"


@pytest.fixture(scope="module")
def token_deployment(kube: Kube, module_namespace: str) -> TokenDeployment:
    token = f"hf_{secrets.token_urlsafe(24)}"
    kube.core.create_namespaced_secret(
        module_namespace,
        client.V1Secret(metadata=client.V1ObjectMeta(name=SECRET), string_data={KEY: token}),
    )
    name = f"sec-{RUN}-token"

    def edit(body: Body) -> None:
        body["spec"]["model"]["tokenSecretRef"] = {"name": SECRET, "key": KEY}

    kube.create_llmd(hostile(module_namespace, name, edit))
    wait_for(lambda: converged(kube.get_llmd(module_namespace, name)), f"{name} to converge", SLOW)
    pods = wait_for(
        lambda: head_and_worker(deployment_pods(kube, module_namespace, name)),
        f"KubeRay's head and worker pods of {name}",
        SLOW,
    )
    return TokenDeployment(module_namespace, name, token, pods)


def hf_token_entries(node: Any) -> list[Body]:
    return [
        item
        for _, key, value in walk(node)
        if key in ("env",) and isinstance(value, list)
        for item in value
        if isinstance(item, dict) and item.get("name") == "HF_TOKEN"
    ]


def test_hf_token_reaches_pods_only_as_secret_key_ref(
    kube: Kube, token_deployment: TokenDeployment
) -> None:
    ns, name = token_deployment.namespace, token_deployment.name
    service = kube.ray("rayservices", ns, names.ray_service_name(name))
    cluster = kuberay_cluster(kube, ns, kube.get_llmd(ns, name))
    reference = {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": SECRET, "key": KEY}}}
    for what, node, least in (
        ("RayService", service, 2),
        ("RayCluster", cluster, 2),
        *((f"pod {p['metadata']['name']}", p, 1) for p in token_deployment.pods),
    ):
        entries = hf_token_entries(node)
        assert len(entries) >= least, what
        assert all(entry == reference for entry in entries), (what, entries)
    for pod in token_deployment.pods:
        ray = [c for c in pod["spec"]["containers"] if c["name"].startswith("ray-")]
        assert ray, pod["metadata"]["name"]
        assert all(reference in c["env"] for c in ray)


def serialized(kube: Kube, ns: str, name: str) -> dict[str, str]:
    """Every object the token must not be in, as JSON text."""
    out = {"LLMDeployment": json.dumps(kube.get_llmd(ns, name))}
    for plural in ("rayservices", "rayclusters"):
        for item in kube.rays(plural, ns):
            out[f"{plural}/{item['metadata']['name']}"] = json.dumps(item)
    for pod in kube.core.list_namespaced_pod(ns).items:
        out[f"pod/{pod.metadata.name}"] = json.dumps(as_dict(kube, pod))
    out["events"] = json.dumps(as_dict(kube, kube.core.list_namespaced_event(ns)))
    out["configmaps"] = json.dumps(as_dict(kube, kube.core.list_namespaced_config_map(ns)))
    return out


def test_hf_token_is_in_no_object_status_or_event(
    kube: Kube, token_deployment: TokenDeployment
) -> None:
    ns = token_deployment.namespace
    llmd = kube.get_llmd(ns, token_deployment.name)
    assert llmd["status"]["conditions"], "the operator has written status"
    texts = serialized(kube, ns, token_deployment.name)
    assert len(texts) >= 5
    assert [what for what, text in texts.items() if token_deployment.token in text] == []
    # Guard: the token is really in the cluster, in its Secret.
    secret = kube.core.read_namespaced_secret(SECRET, ns)
    assert base64.b64decode(secret.data[KEY]).decode() == token_deployment.token


def files_with(token: bytes, folder: Path) -> list[str]:
    found = []
    for root, _, files in os.walk(folder, followlinks=True):
        for file in files:
            path = Path(root) / file
            if not path.is_file() or path.stat().st_size == 0:
                continue
            with (
                path.open("rb") as handle,
                mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as text,
            ):
                if text.find(token) != -1:
                    found.append(str(path.relative_to(folder)))
    return found


def test_hf_token_is_in_no_log(token_deployment: TokenDeployment) -> None:
    if not local_cluster():
        pytest.skip("the operators' logs are read from local files; E2E_KUBECONFIG names a "
                    "cluster whose logs are not on this machine")  # fmt: skip
    operator_log, kuberay_log = LOGS / "llm-operator.log", LOGS / "kuberay-operator.log"
    assert operator_log.stat().st_size and kuberay_log.stat().st_size
    assert files_with(token_deployment.token.encode(), LOGS) == []
    # Guard: the search finds what the logs do hold.
    assert "llm-operator.log" in files_with(token_deployment.name.encode(), LOGS)


def test_hf_token_literal_is_refused_on_update(
    kube: Kube, token_deployment: TokenDeployment
) -> None:
    ns, name = token_deployment.namespace, token_deployment.name
    before = kube.get_llmd(ns, name)
    for entry in (
        {"name": "HF_TOKEN", "value": token_deployment.token},
        {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "other", "key": KEY}}},
    ):
        patch = {"spec": {"rayCluster": {"env": [entry]}}}
        with pytest.raises(ApiException) as caught:
            kube.patch_llmd(ns, name, patch)
        assert caught.value.status == 422, caught.value.body
        assert names_field(refusal(caught.value), "spec.rayCluster.env"), refusal(caught.value)
    after = kube.get_llmd(ns, name)
    assert after["metadata"]["generation"] == before["metadata"]["generation"]
