"""Fault injection on the local control plane (marker `faults`).

The operator is SIGKILLed while LLMDeployments are created and updated, the control
plane (etcd and kube-apiserver) is restarted under it, the autoscaler's part scales a
RayService while its LLMDeployment is updated, and it starts before KubeRay's CRDs exist.
Each time every LLMDeployment must converge with exactly its own children, no claim lost
and no scale written over.

These tests drive processes of the local cluster (e2e/cluster.sh), so they are skipped
on a cluster named by E2E_KUBECONFIG. Work runs in namespaces KubeRay does not watch,
so only this operator acts on the objects; the last test removes KubeRay's CRDs for a
while and puts them back.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import audit
import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from support import (
    CONVERGE_AFTER_FAULTS_SECONDS,
    CRD_SECONDS,
    HTTP_SECONDS,
    PROCESS_GONE_SECONDS,
    ROOT,
    Body,
    Kube,
    cluster,
    condition,
    converged,
    operator_liveness_url,
    sample,
    wait_for,
)

from llm_operator.api.constants import GROUP, PLURAL, VERSION
from llm_operator.controller.kube import FIELD_MANAGER
from llm_operator.render import names

pytestmark = [
    pytest.mark.faults,
    pytest.mark.skipif(
        bool(os.environ.get("E2E_KUBECONFIG")), reason="drives the local cluster's processes"
    ),
]

STATE = ROOT / ".e2e"
OPERATOR_LOG = STATE / "logs" / "llm-operator.log"
KUBERAY_CRDS = Path(os.environ.get("LLM_OPERATOR_BIN_DIR", STATE / "bin")) / "kuberay-crds"
RAY_CRDS = ("rayservices.ray.io", "rayclusters.ray.io")
DEPLOYMENTS = 50
KILLS = 10
SEED = 20261123  # random kill points, the same on every run
CONVERGE_SECONDS = CONVERGE_AFTER_FAULTS_SECONDS
BASE_MODEL_LEN = 4096
# The worker group of a RayService, for a JSON patch.
WORKER_GROUP_PATH = "/spec/rayClusterConfig/workerGroupSpecs/0"


# --- the local cluster's processes -----------------------------------------------------
def operator_pid() -> int:
    return int((STATE / "llm-operator.pid").read_text(encoding="utf-8"))


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def sigkill_operator() -> None:
    pid = operator_pid()
    os.killpg(pid, signal.SIGKILL)  # setsid made it a group leader: no child survives
    wait_for(lambda: not alive(pid), "the killed operator to be gone", PROCESS_GONE_SECONDS)


def liveness() -> int | None:
    """The HTTP status the operator's liveness probe answers, as the kubelet would call
    it; None while nothing answers (the operator is not up)."""
    try:
        with urllib.request.urlopen(operator_liveness_url(), timeout=HTTP_SECONDS) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError):
        return None


def probe_failed() -> bool:
    """The probe answered, and not with success (the kubelet's 200-399)."""
    status = liveness()
    return status is not None and not 200 <= status < 400


def operator_log_since(offset: int) -> str:
    with OPERATOR_LOG.open(encoding="utf-8", errors="replace") as log:
        log.seek(offset)
        return log.read()


def log_size() -> int:
    return OPERATOR_LOG.stat().st_size


@pytest.fixture(autouse=True)
def operator_running() -> Iterator[None]:
    """Whatever a test does to it, the next one finds the operator running."""
    yield
    cluster("start", "llm-operator")


# --- LLMDeployments --------------------------------------------------------------------
def cached(namespace: str, name: str, model_len: int = BASE_MODEL_LEN) -> Body:
    """The quick-start sample with a model-cache claim (retained on delete)."""

    def edit(body: Body) -> None:
        body["metadata"]["name"] = name
        body["spec"]["engine"]["maxModelLen"] = model_len
        body["spec"]["storage"] = {"modelCache": {"size": "10Gi"}}

    return sample("quickstart", namespace, edit)


def set_model_len(kube: Kube, namespace: str, name: str, model_len: int) -> None:
    kube.patch_llmd(namespace, name, {"spec": {"engine": {"maxModelLen": model_len}}})


def serves_model_len(service: Body | None, model_len: int) -> bool:
    return service is not None and f"max_model_len: {model_len}\n" in service["spec"].get(
        "serveConfigV2", ""
    )


def all_converged(kube: Kube, namespace: str, expected: dict[str, int]) -> bool:
    items = kube.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"]
    done = {i["metadata"]["name"] for i in items if converged(i)}
    if done != set(expected):
        return False
    services = {s["metadata"]["name"]: s for s in kube.rays("rayservices", namespace)}
    return all(
        serves_model_len(services.get(names.ray_service_name(name)), model_len)
        for name, model_len in expected.items()
    )


def assert_exactly_own_children(kube: Kube, namespace: str, expected: dict[str, int]) -> None:
    """One RayService and one claim per LLMDeployment, owned by it; nothing else."""
    uids = {
        i["metadata"]["name"]: i["metadata"]["uid"]
        for i in kube.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)[
            "items"
        ]
    }
    services = kube.rays("rayservices", namespace)
    assert sorted(s["metadata"]["name"] for s in services) == sorted(
        names.ray_service_name(n) for n in expected
    )
    for service in services:
        (owner,) = service["metadata"]["ownerReferences"]
        parent = service["metadata"]["labels"][names.DEPLOYMENT_LABEL]
        assert owner["uid"] == uids[parent], f"{service['metadata']['name']} has a stale owner"
        assert owner["controller"] is True
    assert sorted(kube.claims(namespace)) == sorted(f"{n}-model-cache" for n in expected)


def created_by_the_operator_since(body: Body, since: datetime) -> bool:
    """The object was made in this run (creationTimestamp has whole seconds) and the
    operator's field manager wrote it."""
    made = datetime.fromisoformat(body["metadata"]["creationTimestamp"].replace("Z", "+00:00"))
    managers = {entry.get("manager") for entry in body["metadata"].get("managedFields") or []}
    return made >= since.replace(microsecond=0) and FIELD_MANAGER in managers


def assert_each_child_created_once(kube: Kube, namespace: str, since: datetime) -> None:
    """From the audit log: no child or claim was created twice, none was deleted.

    A create in flight when the operator is killed can be stored by the API server while
    its client is gone: the audit log then has no successful create for that child (seen
    on a loaded machine). Such a child must still exist, made in this run by the
    operator's field manager, and there can be at most one per kill.
    """
    created: Counter[tuple[str, str]] = Counter()
    for write in audit.writes(namespace, since):
        if write.resource in ("rayservices", "persistentvolumeclaims"):
            assert write.verb != "delete", f"{write.user} deleted {write.resource} {write.name}"
            if write.verb == "create" and write.succeeded:
                created[(write.resource, write.name)] += 1
    twice = {key: count for key, count in created.items() if count > 1}
    assert not twice, twice
    children = {
        ("rayservices", body["metadata"]["name"]): body
        for body in kube.rays("rayservices", namespace)
    }
    claims = kube.claims(namespace)
    children.update(
        (("persistentvolumeclaims", name), kube.api.sanitize_for_serialization(claim))
        for name, claim in claims.items()
    )
    assert len(children) == 2 * DEPLOYMENTS, sorted(children)
    unconfirmed = sorted(set(children) - set(created))
    assert len(unconfirmed) <= KILLS, unconfirmed
    for key in unconfirmed:
        assert created_by_the_operator_since(children[key], since), (key, children[key]["metadata"])


# --- the tests -------------------------------------------------------------------------
def test_sigkill_during_creates_and_updates_leaves_every_deployment_converged(
    kube: Kube, unwatched_namespace: str
) -> None:
    namespace = unwatched_namespace
    since = datetime.now(UTC)
    deployments = [f"f-{index:02d}" for index in range(DEPLOYMENTS)]
    wanted = dict.fromkeys(deployments, BASE_MODEL_LEN)
    killing = threading.Event()
    killing.set()
    errors: list[BaseException] = []

    def write_until_the_kills_end() -> None:
        """Create all, then keep moving every model length until the last kill."""
        try:
            for name in deployments:
                kube.create_llmd(cached(namespace, name))
                time.sleep(0.05)
            model_len = BASE_MODEL_LEN
            while killing.is_set():
                model_len += 1
                for name in deployments:
                    wanted[name] = model_len
                    set_model_len(kube, namespace, name, model_len)
                    time.sleep(0.05)
        except BaseException as exc:  # surfaced by the main thread below
            errors.append(exc)

    writer = threading.Thread(target=write_until_the_kills_end)
    writer.start()
    rng = random.Random(SEED)
    try:
        for _ in range(KILLS):
            time.sleep(rng.uniform(0.3, 3.0))
            sigkill_operator()
            cluster("start", "llm-operator")
    finally:
        killing.clear()
        writer.join()
    assert not errors, errors
    wait_for(
        lambda: all_converged(kube, namespace, wanted),
        f"all {DEPLOYMENTS} LLMDeployments to serve their last spec",
        CONVERGE_SECONDS,
    )
    assert_exactly_own_children(kube, namespace, wanted)
    assert_each_child_created_once(kube, namespace, since)


def test_control_plane_restart_is_ridden_out_without_an_operator_restart(
    kube: Kube, unwatched_namespace: str
) -> None:
    namespace = unwatched_namespace
    pid = operator_pid()
    kube.create_llmd(cached(namespace, "before"))
    wait_for(lambda: all_converged(kube, namespace, {"before": BASE_MODEL_LEN}), "first converge")

    cluster("restart-control-plane")

    set_model_len(kube, namespace, "before", BASE_MODEL_LEN + 1)
    kube.create_llmd(cached(namespace, "after"))
    wanted = {"before": BASE_MODEL_LEN + 1, "after": BASE_MODEL_LEN}
    wait_for(
        lambda: all_converged(kube, namespace, wanted),
        "both LLMDeployments to converge after the restart",
        CONVERGE_SECONDS,
    )
    assert operator_pid() == pid and alive(pid), "the operator itself was not restarted"


def worker_group(service: Body | None) -> Body:
    assert service is not None
    group: Body = service["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]
    assert group["groupName"] == names.WORKER_GROUP
    return group


def scale(group: Body) -> tuple[Any, Any]:
    """What the Ray autoscaler writes of a worker group."""
    return group.get("replicas"), group.get("scaleStrategy")


class Autoscaler(threading.Thread):
    """Scales one RayService's worker group over and over, in the Ray autoscaler's part.

    Each scale is a JSON patch whose `test` ops require the scale this writer wrote last:
    a scale written over in between makes the API server refuse the next patch (422),
    which is recorded in `overwritten`.
    """

    def __init__(self, kube: Kube, namespace: str, service: str) -> None:
        super().__init__()
        self.kube, self.namespace, self.service = kube, namespace, service
        self.written = scale(worker_group(kube.ray("rayservices", namespace, service)))
        self.scales = 0
        self.overwritten: list[str] = []
        self.errors: list[BaseException] = []
        self.stop = threading.Event()

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                self.scale_once()
                time.sleep(0.02)
        except BaseException as exc:  # surfaced by the test
            self.errors.append(exc)

    def scale_once(self) -> None:
        replicas, to_delete = 2 + self.scales, {"workersToDelete": [f"worker-{self.scales}"]}
        path = WORKER_GROUP_PATH
        ops = [
            {"op": "test", "path": f"{path}/replicas", "value": self.written[0]},
            {"op": "replace", "path": f"{path}/replicas", "value": replicas},
            {"op": "add", "path": f"{path}/scaleStrategy", "value": to_delete},
        ]
        if self.written[1] is not None:
            ops.insert(0, {"op": "test", "path": f"{path}/scaleStrategy", "value": self.written[1]})
        try:
            self.kube.custom.patch_namespaced_custom_object(
                names.RAY_GROUP, names.RAY_VERSION, self.namespace, "rayservices", self.service,
                ops, _content_type="application/json-patch+json",
            )  # fmt: skip
        except ApiException as exc:
            if exc.status != 422:
                raise
            found = scale(worker_group(self.kube.ray("rayservices", self.namespace, self.service)))
            self.overwritten.append(f"wrote {self.written}, found {found}")
            self.written = found
            return
        self.written = (replicas, to_delete)
        self.scales += 1


def test_the_autoscalers_scale_survives_concurrent_updates(
    kube: Kube, unwatched_namespace: str
) -> None:
    """The Autoscaler keeps scaling the RayService's worker group (`replicas`,
    `scaleStrategy.workersToDelete`) while the LLMDeployment is updated. The operator's
    updates carry the live scale and resourceVersion, so one that read an older scale
    fails with 409 and is retried: none may write an older scale back. KubeRay does not
    watch the namespace, so nothing else writes the worker group.
    """
    namespace = unwatched_namespace
    name = "contended"
    kube.create_llmd(cached(namespace, name))
    wait_for(lambda: all_converged(kube, namespace, {name: BASE_MODEL_LEN}), "first converge")
    offset = log_size()
    autoscaler = Autoscaler(kube, namespace, names.ray_service_name(name))
    autoscaler.start()
    model_len = BASE_MODEL_LEN
    try:
        # Each update is one chance for a scale to slip in between the operator's read and
        # its write; go on until that has happened (a 409 in the operator's log).
        for _ in range(30):
            model_len += 1
            set_model_len(kube, namespace, name, model_len)
            wait_for(
                lambda target=model_len: all_converged(kube, namespace, {name: target}),
                f"maxModelLen {model_len} to reach the RayService while it is scaled",
                CONVERGE_SECONDS,
            )
            if "HTTP 409" in operator_log_since(offset):
                break
    finally:
        autoscaler.stop.set()
        autoscaler.join()
    assert not autoscaler.errors, autoscaler.errors
    assert autoscaler.overwritten == [], "the operator wrote an older scale back"
    # The last word is the autoscaler's: the operator's later updates keep it.
    set_model_len(kube, namespace, name, model_len + 1)
    wait_for(
        lambda: all_converged(kube, namespace, {name: model_len + 1}),
        "an update after the scaling stopped",
        CONVERGE_SECONDS,
    )
    service = kube.ray("rayservices", namespace, names.ray_service_name(name))
    assert scale(worker_group(service)) == autoscaler.written
    # Guard: the race was run, not dodged.
    assert autoscaler.scales > 0
    assert "HTTP 409" in operator_log_since(offset), (
        f"no update met a newer scale in {model_len - BASE_MODEL_LEN} updates against "
        f"{autoscaler.scales} scales"
    )


def kuberay_crds_served(kube: Kube) -> bool:
    served = {
        crd.metadata.name
        for crd in client_crds(kube)
        if any(c.type == "Established" and c.status == "True" for c in crd.status.conditions or [])
    }
    return all(name in served for name in RAY_CRDS)


def client_crds(kube: Kube) -> list[client.V1CustomResourceDefinition]:
    return list(client.ApiextensionsV1Api(kube.api).list_custom_resource_definition().items)


def delete_kuberay_crds(kube: Kube) -> None:
    extensions = client.ApiextensionsV1Api(kube.api)
    for name in RAY_CRDS:
        try:
            extensions.delete_custom_resource_definition(name)
        except ApiException as exc:
            if exc.status != 404:
                raise
    wait_for(
        lambda: not any(c.metadata.name in RAY_CRDS for c in client_crds(kube)),
        "KubeRay's CRDs to be gone",
        CRD_SECONDS,
    )


def install_kuberay_crds() -> None:
    subprocess.run(
        ["kubectl", "apply", "--server-side", "--force-conflicts", "-f", f"{KUBERAY_CRDS}/"],
        check=True,
        capture_output=True,
    )


def test_kuberay_crds_absent_at_start_are_reported_then_recovered(
    kube: Kube, unwatched_namespace: str
) -> None:
    namespace = unwatched_namespace
    name = "early"
    cluster("stop", "llm-operator")
    try:
        # KubeRay still runs while its CRDs go, so it can release its finalizers.
        delete_kuberay_crds(kube)
        cluster("stop", "kuberay-operator")
        cluster("start", "llm-operator")  # its liveness probe answers while it waits
        kube.create_llmd(cached(namespace, name))

        def reported() -> Body | None:
            ready = condition(kube.get_llmd(namespace, name), "Ready")
            return ready if ready and ready["reason"] == "KubeRayNotInstalled" else None

        ready = wait_for(reported, "Ready=False with reason KubeRayNotInstalled")
        assert ready["status"] == "False"
        assert "install KubeRay" in ready["message"], ready["message"]
        assert not converged(kube.get_llmd(namespace, name)), "not handled until its child exists"
        assert liveness() == 200, "the liveness probe passes while the operator waits"

        install_kuberay_crds()
        wait_for(lambda: kuberay_crds_served(kube), "KubeRay's CRDs to be established", CRD_SECONDS)
        # The operator asks to be restarted, once, through its liveness probe; here the
        # test plays the kubelet. The operator must answer, with a failure: no answer at
        # all (a crash, a port not bound) is not the restart request this waits for.
        wait_for(probe_failed, "the liveness probe to answer with a failure")
        cluster("stop", "llm-operator")
        cluster("start", "llm-operator")
        wait_for(
            lambda: all_converged(kube, namespace, {name: BASE_MODEL_LEN}),
            "the RayService once the CRDs are installed",
            CONVERGE_SECONDS,
        )
        # The RayService watch started once the CRDs were there: drift is repaired.
        service_name = names.ray_service_name(name)
        kube.custom.delete_namespaced_custom_object(
            names.RAY_GROUP, names.RAY_VERSION, namespace, "rayservices", service_name
        )
        wait_for(
            lambda: (
                (found := kube.ray("rayservices", namespace, service_name))
                and not found["metadata"].get("deletionTimestamp")
            ),
            "the deleted RayService to be restored",
        )
    finally:
        if not kuberay_crds_served(kube):
            install_kuberay_crds()
            wait_for(
                lambda: kuberay_crds_served(kube), "KubeRay's CRDs to be established", CRD_SECONDS
            )
        cluster("start", "kuberay-operator")
        # The next tests get an operator that has not seen any of this.
        cluster("stop", "llm-operator")
