"""What a hostile LLMDeployment can make the renderer write: the cheap half of the
security checks (e2e/test_security.py sends the same kinds of spec through the real API
server, KubeRay and the pods it makes).

Every user-controlled field that reaches a child (env, podLabels, podAnnotations,
serviceAccountName, model.source, storage claims and mount paths, engine args) is tried
with values that aim at privilege, the host or another namespace. Each spec is either
refused by validation, naming the field (the CRD's schema and CEL rules refuse the same
at admission), or it renders to children that stay confined:

- every child, and every namespace written anywhere in it, is the LLMDeployment's;
- no privileged container, privilege escalation, added capability, host namespace,
  host port, hostPath or other volume type but claims and a memory emptyDir;
- no AppArmor or seccomp opt-out, by field or by annotation;
- pod templates carry only the fields the operator writes, the operator's own labels
  win over the user's, and the Serve config stays a Serve config;
- model_source is a Hub id, a bucket URI, or a normalised path inside the read-only
  mount of the pvc:// claim (tests/test_model_sources.py tries many more paths).
"""

from __future__ import annotations

import copy
import posixpath
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import yaml
from testkit.confinement import CONFINEMENT_ANNOTATIONS, escapes, foreign_namespaces
from testkit.edits import set_cache, set_cluster, set_env, set_source
from testkit.hostile import (
    BIG_ENV,
    HOSTILE_ANNOTATIONS,
    HOSTILE_LABELS,
    INJECTION,
    INTERNAL_ENV,
    JSON_INJECTION,
    REFUSED,
    set_engine_args,
)

from conftest import SAMPLES, load_one
from llm_operator.api.validation import SpecError, names_field, resolve, validate
from llm_operator.render import names, render
from llm_operator.settings import OperatorSettings

Body = dict[str, Any]
NAMESPACE = "team-a"
HARDENED = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}
POD_SPEC_KEYS = {
    "containers",
    "volumes",
    "serviceAccountName",
    "imagePullSecrets",
    "nodeSelector",
    "tolerations",
    "restartPolicy",  # the prefetch Job's: Never
}
CONTAINER_KEYS = {
    *("name", "image", "resources", "ports", "securityContext", "env", "volumeMounts"),
    # The prefetch Job's download program, and its failure message from the log's tail.
    *("command", "terminationMessagePolicy"),
}
CLAIM_SPEC_KEYS = {"accessModes", "resources", "storageClassName"}
SERVE_APP_KEYS = {"name", "route_prefix", "import_path", "args"}


def hostile(edit: Callable[[Body], None]) -> Body:
    """The quickstart sample with a model cache, in NAMESPACE, edited."""
    body = copy.deepcopy(load_one(SAMPLES / "quickstart.yaml"))
    body["metadata"]["namespace"] = NAMESPACE
    body["spec"]["storage"] = {"modelCache": {"size": "10Gi"}}
    edit(body)
    return body


# --- refused ---------------------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(REFUSED), ids=str)
def test_validation_refuses_naming_the_field(case: str) -> None:
    edit, field = REFUSED[case]
    with pytest.raises(SpecError) as caught:
        validate(hostile(edit))
    assert any(names_field(str(error), field) for error in caught.value.errors), str(caught.value)


# --- admitted, and confined -------------------------------------------------------------


def pod_templates(child: Body) -> list[Body]:
    if child["kind"] == "Job":  # the model prefetch
        return [child["spec"]["template"]]
    if child["kind"] not in ("RayService", "RayCluster"):
        return []
    spec = child["spec"]
    cluster = spec.get("rayClusterConfig", spec)
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    return [group["template"] for group in groups]


def assert_confined(children: list[Body], namespace: str) -> None:
    assert children
    for child in children:
        what = f"{child['kind']} {child['metadata']['name']}"
        assert child["metadata"]["namespace"] == namespace, what
        assert foreign_namespaces(child, namespace) == [], what
        assert escapes(child) == [], what
        if child["kind"] == "PersistentVolumeClaim":
            # No volumeName, selector or dataSource: the claim cannot pick a volume.
            assert set(child["spec"]) <= CLAIM_SPEC_KEYS, what
        for template in pod_templates(child):
            assert_template_confined(template, child["metadata"]["labels"])
        if child["kind"] == "RayService":
            assert_serve_config_is_only_serve(child["spec"]["serveConfigV2"])


def assert_template_confined(template: Body, child_labels: dict[str, str]) -> None:
    assert set(template) == {"metadata", "spec"}
    assert set(template["metadata"]) <= {"labels", "annotations"}
    labels = template["metadata"]["labels"]
    # The operator's labels win over the user's of the same key.
    for key in (names.MANAGED_BY_LABEL, names.DEPLOYMENT_LABEL, "app.kubernetes.io/instance"):
        assert labels[key] == child_labels[key], key
    assert not any(key.startswith("ray.io/") for key in labels)
    spec = template["spec"]
    assert set(spec) <= POD_SPEC_KEYS, sorted(spec)
    for volume in spec.get("volumes", []):
        kinds = set(volume) - {"name"}
        assert kinds in ({"persistentVolumeClaim"}, {"emptyDir"}), volume
        if "emptyDir" in volume:
            assert volume["emptyDir"] == {"medium": "Memory"}
    for container in spec["containers"]:
        assert set(container) <= CONTAINER_KEYS, sorted(container)
        assert container["securityContext"] == HARDENED
        assert all(set(port) == {"name", "containerPort"} for port in container.get("ports", []))
        for entry in container.get("env", []):
            assert set(entry) in ({"name", "value"}, {"name", "valueFrom"}), entry
            source = entry.get("valueFrom", {})
            for ref in source.values():
                assert "namespace" not in ref, entry


def assert_serve_config_is_only_serve(text: str) -> None:
    config = yaml.safe_load(text)
    assert set(config) == {"applications"}
    for app in config["applications"]:
        assert set(app) <= SERVE_APP_KEYS, sorted(app)
        assert "runtime_env" not in app
        for llm in app["args"].get("llm_configs", []) if isinstance(app["args"], dict) else []:
            assert_source_in_mount(llm["model_loading_config"]["model_source"])


def assert_source_in_mount(source: str) -> None:
    """model_source is a bucket URI, a Hub id (two names, neither a step up or down the
    file system), the pvc:// claim's mount or a normalised path inside it, or (with
    prefetch) a normalised path to the download in the model cache claim."""
    if source.startswith(("s3://", "gs://")):
        return
    if not source.startswith("/"):
        parts = source.split("/")
        assert len(parts) == 2 and not {"", ".", ".."} & set(parts), source
        return
    assert posixpath.normpath(source) == source, source
    if re.fullmatch(r"/.+/prefetched/[0-9a-f]{16}", source):
        return  # the prefetch's copy in the model cache claim, where that claim is mounted
    mount = names.MODEL_SOURCE_MOUNT
    assert source == mount or source.startswith(mount + "/"), source


def rendered(body: Body) -> list[Body]:
    return render(resolve(body), OperatorSettings())


def containers(children: list[Body]) -> list[Body]:
    return [c for child in children for t in pod_templates(child) for c in t["spec"]["containers"]]


def templates(children: list[Body]) -> list[Body]:
    return [t for child in children for t in pod_templates(child)]


@dataclass(frozen=True)
class Admitted:
    """A hostile spec validation lets through, and what its children must show."""

    edit: Callable[[Body], None]
    check: Callable[[list[Body]], None]


def env_verbatim(*expected: Body) -> Callable[[list[Body]], None]:
    def check(children: list[Body]) -> None:
        for container in containers(children):
            env = container["env"]
            # The operator's own variables come first and keep their values.
            assert env[0] == {"name": "HF_HOME", "value": "/models"}
            for entry in expected:
                assert entry in env
                assert [e["name"] for e in env].count(entry["name"]) == 1

    return check


# Here also the Hub token's other name, from a Secret: rendering passes it on as written.
INTERNALS: list[Body] = [
    *INTERNAL_ENV,
    {"name": "HUGGING_FACE_HUB_TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
]
# Here also the operator's instance label, which must win too (labels_lose).
LABELS = {**HOSTILE_LABELS, "app.kubernetes.io/instance": "victim"}


def labels_lose(children: list[Body]) -> None:
    for template in templates(children):
        labels = template["metadata"]["labels"]
        assert labels[names.MANAGED_BY_LABEL] == names.MANAGED_BY
        assert labels[names.DEPLOYMENT_LABEL] == "qwen-small"
        assert labels["app.kubernetes.io/instance"] == "qwen-small"
        assert labels["kubernetes.io/metadata.name"] == "kube-system"  # a label, nothing more
        assert "hostNetwork" not in template["spec"]


def annotations_verbatim(children: list[Body]) -> None:
    for template in templates(children):
        annotations = template["metadata"]["annotations"]
        for key, value in HOSTILE_ANNOTATIONS.items():
            assert annotations[key] == value
        assert "hostNetwork" not in template["spec"]


def source_claim(claim: str, model_source: str) -> Callable[[list[Body]], None]:
    def check(children: list[Body]) -> None:
        for template in templates(children):
            volumes = {v["name"]: v for v in template["spec"]["volumes"]}
            assert volumes[names.MODEL_SOURCE_VOLUME]["persistentVolumeClaim"] == {
                "claimName": claim,
                "readOnly": True,
            }
            (mount,) = [
                m
                for m in template["spec"]["containers"][0]["volumeMounts"]
                if m["name"] == names.MODEL_SOURCE_VOLUME
            ]
            assert mount == {
                "name": names.MODEL_SOURCE_VOLUME,
                "mountPath": names.MODEL_SOURCE_MOUNT,
                "readOnly": True,
            }
        app = yaml.safe_load(children[-1]["spec"]["serveConfigV2"])["applications"][0]
        loading = app["args"]["llm_configs"][0]["model_loading_config"]
        assert loading["model_source"] == model_source

    return check


def no_source_claim(children: list[Body]) -> None:
    for template in templates(children):
        assert names.MODEL_SOURCE_VOLUME not in {v["name"] for v in template["spec"]["volumes"]}


def cache_claim(claim: str, created: bool) -> Callable[[list[Body]], None]:
    def check(children: list[Body]) -> None:
        made = [c["metadata"]["name"] for c in children if c["kind"] == "PersistentVolumeClaim"]
        assert made == ([names.model_cache_claim("qwen-small")] if created else [])
        for template in templates(children):
            volumes = {v["name"]: v for v in template["spec"]["volumes"]}
            assert volumes[names.MODEL_CACHE_VOLUME]["persistentVolumeClaim"] == {
                "claimName": claim
            }

    return check


def mounted_at(path: str) -> Callable[[list[Body]], None]:
    def check(children: list[Body]) -> None:
        for container in containers(children):
            mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
            assert mounts[names.MODEL_CACHE_VOLUME] == path

    return check


def engine_args_stay_engine_args(children: list[Body]) -> None:
    app = yaml.safe_load(children[-1]["spec"]["serveConfigV2"])["applications"][0]
    kwargs = app["args"]["llm_configs"][0]["engine_kwargs"]
    assert kwargs[INJECTION] == JSON_INJECTION
    assert kwargs["runtime_env"] == {"env_vars": {"LD_PRELOAD": "/tmp/x.so"}}


def in_kube_system(body: Body) -> None:
    body["metadata"]["namespace"] = "kube-system"


def set_env_values(body: Body) -> None:
    set_env(*INTERNALS, BIG_ENV)(body)


ADMITTED: dict[str, Admitted] = {
    "env-internals": Admitted(set_env(*INTERNALS), env_verbatim(*INTERNALS)),
    "env-huge-unicode": Admitted(
        set_env(BIG_ENV),
        env_verbatim(BIG_ENV),
    ),
    "labels-like-internals": Admitted(set_cluster("podLabels", LABELS), labels_lose),
    "annotations-like-internals": Admitted(
        set_cluster("podAnnotations", HOSTILE_ANNOTATIONS), annotations_verbatim
    ),
    # pvc://<claim>/<path>: the first segment is a claim of this namespace, never a namespace.
    "pvc-source-other-namespace": Admitted(
        set_source("pvc://other-ns/claim"), source_claim("other-ns", "/model-source/claim")
    ),
    # Hidden directories and names of dots only are names, not steps up.
    "pvc-source-dotted-names": Admitted(
        set_source("pvc://models/.cache/.../..x/x.."),
        source_claim("models", "/model-source/.cache/.../..x/x.."),
    ),
    "hf-source": Admitted(set_source("hf://Qwen/Qwen2.5-0.5B-Instruct"), no_source_claim),
    # An existing claim is a claim of this namespace, whatever its name suggests.
    "existing-claim-named-like-a-namespace": Admitted(
        set_cache(existingClaim="kube-system"), cache_claim("kube-system", False)
    ),
    "mount-over-service-account-token": Admitted(
        set_cache(mountPath="/var/run/secrets/kubernetes.io/serviceaccount"),
        mounted_at("/var/run/secrets/kubernetes.io/serviceaccount"),
    ),
    "mount-over-host-looking-path": Admitted(
        set_cache(mountPath="/var/lib/kubelet"), mounted_at("/var/lib/kubelet")
    ),
    "engine-args-injection": Admitted(set_engine_args, engine_args_stay_engine_args),
    "in-kube-system": Admitted(in_kube_system, cache_claim("qwen-small-model-cache", True)),
}


@pytest.mark.parametrize("case", sorted(ADMITTED), ids=str)
def test_admitted_hostile_spec_renders_confined_children(case: str) -> None:
    body = hostile(ADMITTED[case].edit)
    children = rendered(body)
    assert_confined(children, body["metadata"]["namespace"])
    ADMITTED[case].check(children)


def test_all_admitted_hostile_fields_at_once_stay_confined() -> None:
    def combined(body: Body) -> None:
        set_env_values(body)
        set_cluster("podLabels", LABELS)(body)
        set_cluster("podAnnotations", HOSTILE_ANNOTATIONS)(body)
        set_source("pvc://other-ns/claim")(body)
        set_cache(existingClaim="kube-system")(body)
        body["spec"]["storage"]["checkpoints"] = {"existingClaim": "etcd-data", "mountPath": "/etc"}
        set_engine_args(body)

    for mode in ("Service", "Cluster"):
        body = hostile(combined)
        body["spec"]["mode"] = mode
        children = rendered(body)
        assert_confined(children, NAMESPACE)
        assert [c["kind"] for c in children] == [
            "RayService" if mode == "Service" else "RayCluster"
        ]


def test_the_prefetch_job_stays_confined_with_every_admitted_hostile_field() -> None:
    def combined(body: Body) -> None:
        set_env_values(body)
        set_cluster("podLabels", LABELS)(body)
        set_cluster("podAnnotations", HOSTILE_ANNOTATIONS)(body)
        set_cluster("serviceAccountName", "kube-system")(body)
        set_source("pvc://other-ns/claim")(body)
        set_cache(existingClaim="kube-system", prefetch=True)(body)

    children = rendered(hostile(combined))
    assert [c["kind"] for c in children] == ["Job", "RayService"]
    assert_confined(children, NAMESPACE)
    (job,) = [c for c in children if c["kind"] == "Job"]
    (container,) = job["spec"]["template"]["spec"]["containers"]
    # The hostile values reach the download as values, never as its program.
    assert container["command"][:2] == ["python", "-c"]


def test_the_checks_catch_an_escape() -> None:
    """Guard: the structural checks fail on a child that does escape."""
    children = rendered(hostile(lambda body: None))
    leaky = copy.deepcopy(children)
    (template, *_) = templates(leaky)
    template["spec"]["hostNetwork"] = True
    template["spec"]["volumes"].append({"name": "host", "hostPath": {"path": "/"}})
    container = template["spec"]["containers"][0]
    container["securityContext"] = {"privileged": True, "capabilities": {"add": ["SYS_ADMIN"]}}
    container["ports"].append({"containerPort": 22, "hostPort": 22})
    template["metadata"]["annotations"] = {CONFINEMENT_ANNOTATIONS[0] + "ray-head": "unconfined"}
    leaky[-1]["metadata"]["namespace"] = "kube-system"
    found = " ".join(escapes(leaky[-1]))
    for marker in ("hostNetwork", "hostPath", "privileged", "capabilities", "hostPort"):
        assert marker in found, marker
    assert f"{CONFINEMENT_ANNOTATIONS[0]}ray-head=unconfined" in found
    assert foreign_namespaces(leaky[-1], NAMESPACE) == [".metadata.namespace=kube-system"]
    with pytest.raises(AssertionError):
        assert_confined(leaky, NAMESPACE)


@pytest.mark.parametrize(
    "source",
    ["/model-source/../../etc/passwd", "/etc/passwd", "/model-sources", "../..", "org/repo/../x"],
)
def test_the_source_check_catches_an_escape(source: str) -> None:
    """Guard: what the old renderer wrote for pvc:// and hf:// traversals fails the check."""
    with pytest.raises(AssertionError):
        assert_source_in_mount(source)
