"""The operator as a real pod: the chart installed for real, its operator running on the
local cluster's real kubelet node (e2e/node.sh) from the image `make image` builds
(images/operator/Dockerfile; here with buildah and no registry), in a namespace that
enforces the restricted Pod Security level.

e2e/node.sh imports that image into the node's containerd under two tags (the second
for `helm upgrade` to a changed tag), and the image `helm test` runs (kubectl and curl,
`images/operator/build.sh test-tools`), and names them in .e2e/node/images.env:
OPERATOR_LOCAL_IMAGE, OPERATOR_LOCAL_IMAGE_NEXT, TEST_TOOLS_LOCAL_IMAGE. For the upgrade
from the previous release it exports that release's tree (PREVIOUS_RELEASE_TREE: its
chart, CRD and samples) and imports the image its own build.sh makes
(OPERATOR_PREVIOUS_IMAGE); the commit is PREVIOUS_RELEASE_COMMIT in e2e/node.sh.

Each release lives in a fresh namespace annotated for the PodNodeSelector and
PodTolerationRestriction admission plugins (as e2e/test_ray.py's namespaces are), so its
pods, `helm test`'s included, land on the real node and nowhere else. LLMDeployments go
to the usual pool namespaces, where KubeRay's pods land on the fake nodes: what is under
test is the operator's pod, not Ray.

The out-of-cluster operator (e2e/cluster.sh) is stopped while this module runs and
started again after it, so one cluster-wide operator runs at a time; each test's
LLMDeployments are deleted while its release still runs, then the release is removed.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import re
import shlex
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import audit
import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from standin import NODE_ENV, real_node_annotations
from support import (
    HTTP_SECONDS,
    NAMESPACE_GONE_SECONDS,
    ROOT,
    Kube,
    Series,
    bind_claims,
    cluster,
    converged,
    create_claim,
    load_yaml,
    sample,
    scrape,
    wait_for,
)

from conftest import TEST_LABEL, pool_namespace
from llm_operator.render import names

pytestmark = [pytest.mark.inpod, pytest.mark.timeout(1200)]

CHART = ROOT / "charts" / "llm-operator"
README = ROOT / "README.md"
STATE = Path(os.environ.get("LLM_OPERATOR_E2E_STATE", ROOT / ".e2e"))
NODE_SOCKET = STATE / "node" / "containerd.sock"
RESTRICTED = "restricted"
# helm install returns at once; the image is on the node, kopf's start-up takes seconds.
READY_SECONDS = 300.0
# Liveness: period 20 s x 3 failures, then the pod's 30 s grace period (a stopped
# process keeps SIGTERM pending until SIGKILL), then a fresh start.
LIVENESS_RESTART_SECONDS = 300.0
# After a rollout: how long nothing may be written while the new operator settles.
SETTLE_SECONDS = 30.0
QUICKSTART = "qwen-small"  # manifests/samples/quickstart.yaml
PLACEHOLDER_WARNING = "WARNING: the operator image is the chart's placeholder"
# What the operator writes for an LLMDeployment (its children): the Ray resource, the
# claims, the HTTPRoute of exposure.gateway and the download Job of modelCache.prefetch.
CHILD_RESOURCES = frozenset(
    {"rayservices", "rayclusters", "rayjobs", "persistentvolumeclaims", "httproutes", "jobs"}
)
CRD_NAME = "llmdeployments.llmops.dev"


def record(name: str, **figures: Any) -> None:
    """Measured figures go to the test log (`pytest -s` or the junit/CI output)."""
    print(f"\n[inpod-figures] {name}: " + json.dumps(figures, sort_keys=True))


# --- images the real node holds ------------------------------------------------------
def node_env() -> dict[str, str]:
    assert NODE_ENV.exists(), f"{NODE_ENV} is missing: the real node is not up (e2e/node.sh up)"
    return dict(
        line.split("=", 1) for line in NODE_ENV.read_text(encoding="utf-8").split() if "=" in line
    )


def node_images() -> dict[str, str]:
    pairs = node_env()
    wanted = ("OPERATOR_LOCAL_IMAGE", "OPERATOR_LOCAL_IMAGE_NEXT", "TEST_TOOLS_LOCAL_IMAGE")
    missing = [key for key in wanted if not pairs.get(key)]
    assert not missing, (
        f"{NODE_ENV} lacks {missing}: e2e/node.sh must build the operator image "
        "(images/operator/build.sh operator), tag it a second time and build the test "
        "tools image (images/operator/build.sh test-tools), import them and name them there"
    )
    return {key: pairs[key] for key in wanted}


@dataclass(frozen=True)
class PreviousRelease:
    """The previous release as e2e/node.sh prepared it: its image on the node and its
    source tree (chart, CRD, samples) outside the work tree."""

    image: str
    tree: Path

    @property
    def chart(self) -> Path:
        return self.tree / "charts" / "llm-operator"

    @property
    def crd(self) -> Path:
        (path,) = (self.chart / "crds").glob("*.yaml")
        return path

    @property
    def samples(self) -> list[Path]:
        return sorted((self.tree / "manifests" / "samples").glob("*.yaml"))


def previous_release() -> PreviousRelease:
    pairs = node_env()
    image, tree = pairs.get("OPERATOR_PREVIOUS_IMAGE"), pairs.get("PREVIOUS_RELEASE_TREE")
    assert image and tree, (
        f"{NODE_ENV} lacks OPERATOR_PREVIOUS_IMAGE or PREVIOUS_RELEASE_TREE: e2e/node.sh up "
        "must export the previous release's tree and import the image its build.sh makes"
    )
    release = PreviousRelease(image, Path(tree))
    assert (release.chart / "Chart.yaml").is_file(), f"{tree}: not the previous release's tree"
    return release


def split_ref(ref: str) -> tuple[str, str]:
    repository, _, tag = ref.rpartition(":")
    assert repository and "/" not in tag, f"{ref}: no tag"
    return repository, tag


# --- helm ----------------------------------------------------------------------------
def helm(*args: str, timeout: float = 300) -> str:
    binary = shutil.which("helm")
    assert binary, "helm is not on PATH: run `make helm`"
    done = subprocess.run(
        [binary, *args], capture_output=True, text=True, check=False, timeout=timeout
    )
    assert done.returncode == 0, f"helm {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def readme_install_command() -> list[str]:
    """The README's `helm install` line (Install section, first console block)."""
    section = README.read_text(encoding="utf-8").split("\n## Install\n", 1)[1]
    block = section.split("```console\n", 1)[1].split("```", 1)[0]
    joined = block.replace("\\\n", " ")
    (line,) = [ln[2:] for ln in joined.splitlines() if ln.startswith("$ helm install ")]
    return shlex.split(line.split("  #", 1)[0])


def readme_upgrade_commands() -> tuple[list[str], list[str]]:
    """The README's Upgrade section, in its order: the CRD's apply, then `helm upgrade`."""
    section = README.read_text(encoding="utf-8").split("\n### Upgrade\n", 1)[1]
    block = section.split("```console\n", 1)[1].split("```", 1)[0]
    joined = block.replace("\\\n", " ")
    commands = [shlex.split(ln[2:]) for ln in joined.splitlines() if ln.startswith("$ ")]
    assert [c[:2] for c in commands] == [["kubectl", "apply"], ["helm", "upgrade"]], commands
    return commands[0], commands[1]


def as_in_readme(
    release: str, namespace: str, image: str, args: list[str] | None = None
) -> list[str]:
    """The README's install command (or `args`, its upgrade command) with only the
    release, namespace and image swapped for this test's (the README's own release and
    namespace are the local cluster's)."""
    args = args or readme_install_command()
    assert args[0] == "helm" and args[1] in ("install", "upgrade"), args
    assert args[3] == "charts/llm-operator", args
    repository, tag = split_ref(image)
    out = [args[1], release, str(ROOT / args[3])]
    rest = iter(args[4:])
    for arg in rest:
        if arg in ("-n", "--namespace"):
            next(rest)
            out += [arg, namespace]
        elif arg == "--set":
            key = next(rest).split("=", 1)[0]
            assert key in ("image.repository", "image.tag"), f"README sets {key}: update this test"
            out += [arg, f"{key}={repository if key == 'image.repository' else tag}"]
        else:
            out.append(arg)
    assert out.count("--set") == 2, f"the README no longer sets the image: {args}"
    return out


@dataclass
class Release:
    """One installed release of the chart, in its own namespace."""

    kube: Kube
    name: str
    namespace: str
    notes: str = ""
    apps: client.AppsV1Api = field(init=False)

    def __post_init__(self) -> None:
        self.apps = client.AppsV1Api(self.kube.api)

    @property
    def fullname(self) -> str:
        return self.name if "llm-operator" in self.name else f"{self.name}-llm-operator"

    @property
    def user(self) -> str:
        """The operator's service account, as the audit log names it."""
        return f"system:serviceaccount:{self.namespace}:{self.fullname}"

    def deployment(self) -> client.V1Deployment:
        return self.apps.read_namespaced_deployment(self.fullname, self.namespace)

    def pods(self) -> list[client.V1Pod]:
        """The operator's pods (`helm test`'s pod carries the same labels: left out)."""
        selector = f"app.kubernetes.io/name=llm-operator,app.kubernetes.io/instance={self.name}"
        return [
            pod
            for pod in self.kube.pods(self.namespace, selector)
            if "helm.sh/hook" not in (pod.metadata.annotations or {})
        ]

    def ready_pods(self, count: int, image: str | None = None) -> list[client.V1Pod] | None:
        """Exactly `count` operator pods, all Ready and not terminating (on `image`)."""
        pods = [p for p in self.pods() if not p.metadata.deletion_timestamp]
        if len(pods) != count:
            return None
        for pod in pods:
            if image is not None and pod.spec.containers[0].image != image:
                return None
            statuses = {c.type: c.status for c in pod.status.conditions or []}
            if statuses.get("Ready") != "True":
                return None
        return pods

    def wait_ready(self, count: int, image: str | None = None) -> list[client.V1Pod]:
        return wait_for(
            lambda: self.ready_pods(count, image),
            f"{count} Ready operator pod(s) of {self.namespace}/{self.name}",
            READY_SECONDS,
        )

    def service_url(self, port_name: str, path: str) -> str:
        service = self.kube.core.read_namespaced_service(f"{self.fullname}-metrics", self.namespace)
        port = next(p.port for p in service.spec.ports if p.name == port_name)
        return f"http://{service.spec.cluster_ip}:{port}{path}"


@contextlib.contextmanager
def release_namespace(kube: Kube, settings: dict[str, str]) -> Iterator[str]:
    """A namespace enforcing the restricted Pod Security level whose pods all go to the
    real node."""
    name = f"llmop-inpod-{uuid.uuid4().hex[:6]}"
    kube.core.create_namespace(
        client.V1Namespace(
            metadata=client.V1ObjectMeta(
                name=name,
                labels={TEST_LABEL: "true", "pod-security.kubernetes.io/enforce": RESTRICTED},
                annotations=real_node_annotations(settings["REAL_NODE_TAINT"]),
            )
        )
    )
    try:
        yield name
    finally:
        with contextlib.suppress(ApiException):
            kube.core.delete_namespace(name)

        def gone() -> bool:
            try:
                kube.core.read_namespace(name)
            except ApiException as exc:
                return exc.status == 404
            return False

        wait_for(gone, f"namespace {name} to go", NAMESPACE_GONE_SECONDS)


@contextlib.contextmanager
def installed(
    kube: Kube,
    settings: dict[str, str],
    install_args: list[str] | None = None,
    *values: str,
    chart: Path = CHART,
    image: str | None = None,
) -> Iterator[Release]:
    """A release of its own (`inpod-<id>`, so nothing cluster-wide collides with another
    run's leftovers) in a fresh restricted namespace: installed with `install_args` (a
    `helm install` argument list, `{release}` and `{namespace}` standing for the names)
    or else from `chart` with `image` (default: the local operator image) and `values`;
    uninstalled after."""
    with release_namespace(kube, settings) as namespace:
        release = Release(kube, f"inpod-{namespace.rsplit('-', 1)[-1]}", namespace)
        if install_args is None:
            repository, tag = split_ref(image or node_images()["OPERATOR_LOCAL_IMAGE"])
            install_args = [
                "install", release.name, str(chart), "-n", namespace, "--create-namespace",
                "--set", f"image.repository={repository}", "--set", f"image.tag={tag}",
                *values,
            ]  # fmt: skip
        else:
            install_args = [
                arg.replace("{namespace}", namespace).replace("{release}", release.name)
                for arg in install_args
            ]
        started = time.monotonic()
        release.notes = helm(*install_args)
        try:
            yield release
        finally:
            helm("uninstall", release.name, "-n", namespace, "--wait", "--timeout", "3m")
            record("release", install_to_uninstall_s=round(time.monotonic() - started, 1))


@pytest.fixture(scope="module")
def host_operator_stopped() -> Iterator[None]:
    """The out-of-cluster operator of e2e/cluster.sh is stopped while the module runs."""
    cluster("stop", "llm-operator")
    try:
        yield
    finally:
        cluster("start", "llm-operator")


def kubectl(*args: str) -> subprocess.CompletedProcess[str]:
    """kubectl from the repository's root (the README's paths are relative to it)."""
    binary = shutil.which("kubectl")
    assert binary, "kubectl is not on PATH"
    return subprocess.run(
        [binary, *args], cwd=ROOT, capture_output=True, text=True, check=False, timeout=120
    )


@contextlib.contextmanager
def previous_crd(kube: Kube, previous: PreviousRelease) -> Iterator[None]:
    """The previous release's CRD in place as its `helm install` would have left it:
    written whole (a PUT, so nothing of the newer schema stays) under Helm's field
    manager, which then owns every field the newer CRD changes. The working tree's CRD is
    applied again on the way out, whatever happened (other modules need it)."""
    extensions = client.ApiextensionsV1Api(kube.api)
    body = load_yaml(previous.crd)
    live = extensions.read_custom_resource_definition(CRD_NAME)
    body["metadata"]["resourceVersion"] = live.metadata.resource_version
    extensions.replace_custom_resource_definition(CRD_NAME, body, field_manager="helm")
    try:
        yield
    finally:
        done = kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CHART / "crds"))
        assert done.returncode == 0, f"restoring the CRD:\n{done.stdout}\n{done.stderr}"


# --- metrics -------------------------------------------------------------------------
def try_scrape(url: str) -> Series | None:
    try:
        return scrape(url)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None


def reconciles(series: Series) -> float:
    return series.get(("llmop_reconciles_total", frozenset({("result", "success")})), 0.0)


def pod_metrics(pod: client.V1Pod) -> Series | None:
    """The pod's own /metrics, by its address (pod addresses route from the host)."""
    return try_scrape(f"http://{pod.status.pod_ip}:9090/metrics")


# --- LLMDeployments ------------------------------------------------------------------
def quick_start_converges(kube: Kube, namespace: str, release: Release) -> dict[str, Any]:
    """The quick start, applied and handled by the operator pod: converged, its RayService
    written by the pod's service account (the audit log says who wrote it)."""
    since = datetime.now(UTC)
    started = time.monotonic()
    kube.create_llmd(sample("quickstart", namespace))
    llmd = wait_for(
        lambda: (body := kube.get_llmd(namespace, QUICKSTART)) and converged(body) and body,
        f"the operator pod to converge {namespace}/{QUICKSTART} (every replica paused? "
        f"see `kubectl logs -n {release.namespace} -l app.kubernetes.io/instance={release.name}`)",
        READY_SECONDS,
    )
    converged_s = time.monotonic() - started
    assert kube.ray("rayservices", namespace, names.ray_service_name(QUICKSTART))
    assert (llmd.get("status") or {}).get("phase"), llmd.get("status")
    if audit.LOG.exists():
        created = wait_for(
            lambda: [
                w
                for w in audit.writes(namespace, since)
                if w.resource == "rayservices" and w.verb in ("create", "patch") and w.succeeded
            ],
            "the RayService write in the audit log",
            60,
        )
        users = {w.user for w in created}
        assert release.user in users and audit.OPERATOR_USER not in users, created
    record("quick start", converged_s=round(converged_s, 1))
    return dict(llmd)


def wait_for_startup_listing(release: Release, namespace: str) -> None:
    """Until the release's operator has listed what exists in `namespace` (its gauges
    count afresh after a start)."""
    url = release.service_url("metrics", "/metrics")
    wait_for(
        lambda: (s := try_scrape(url))
        and any(n == "llmop_llmdeployments" and ("namespace", namespace) in labels
                for (n, labels) in s),
        "the new operator's start-up listing",
        120,
    )  # fmt: skip


def bump(kube: Kube, namespace: str, name: str) -> int:
    """A spec change (one more replica); returns the new generation."""
    body = kube.get_llmd(namespace, name)
    patched = kube.patch_llmd(namespace, name, {"spec": {"replicas": body["spec"]["replicas"] + 1}})
    return int(patched["metadata"]["generation"])


def converged_at(kube: Kube, namespace: str, name: str, generation: int) -> bool:
    status = kube.get_llmd(namespace, name).get("status") or {}
    return status.get("observedGeneration") == generation


# --- the tests -----------------------------------------------------------------------
def test_readme_install_runs_the_operator_on_the_real_node(
    kube: Kube, settings: dict[str, str], host_operator_stopped: None
) -> None:
    """#21: the README's install, with the image `make image` built, gets the operator
    Ready on the real node under the restricted level, and it does its job."""
    image = node_images()["OPERATOR_LOCAL_IMAGE"]
    command = as_in_readme("{release}", "{namespace}", image)
    started = time.monotonic()
    with installed(kube, settings, command) as release, pool_namespace(kube) as work:
        assert PLACEHOLDER_WARNING not in release.notes, release.notes
        (pod,) = release.wait_ready(1, image)
        ready_s = time.monotonic() - started
        assert pod.spec.node_name == settings["REAL_NODE_NAME"]
        namespace = kube.core.read_namespace(release.namespace)
        assert namespace.metadata.labels["pod-security.kubernetes.io/enforce"] == RESTRICTED
        assert release.deployment().spec.strategy.type == "Recreate"
        quick_start_converges(kube, work, release)
        # `kubectl logs` works: the API server reaches the kubelet with a client
        # certificate the kubelet accepts.
        log = kube.core.read_namespaced_pod_log(pod.metadata.name, release.namespace)
        assert "Handler 'converge' succeeded" in log, log[-2000:]
        record("readme install", ready_s=round(ready_s, 1), node=pod.spec.node_name)


def test_metrics_and_health_through_the_charts_service(
    kube: Kube, settings: dict[str, str], host_operator_stopped: None
) -> None:
    with installed(kube, settings) as release, pool_namespace(kube) as work:
        release.wait_ready(1)
        quick_start_converges(kube, work, release)
        url = release.service_url("metrics", "/metrics")

        def counted() -> Series | None:
            series = try_scrape(url)
            if not series or reconciles(series) < 1:
                return None
            phases = [
                labels
                for (name, labels), value in series.items()
                if name == "llmop_llmdeployments" and ("namespace", work) in labels and value == 1
            ]
            return series if phases else None

        series = wait_for(counted, f"the quick start's series at {url}", 120)
        assert reconciles(series) >= 1
        health = release.service_url("health", "/healthz")
        with urllib.request.urlopen(health, timeout=HTTP_SECONDS) as response:
            assert response.status == 200


def test_in_cluster_operator_reports_status_repairs_drift_and_deletes(
    kube: Kube, settings: dict[str, str], host_operator_stopped: None
) -> None:
    """What the host operator's suites check, once against the operator pod: status in
    condition form, a deleted RayService recreated, and the LLMDeployment's deletion
    taking its RayService with it (owner reference, the garbage collector)."""
    with installed(kube, settings) as release, pool_namespace(kube) as work:
        release.wait_ready(1)
        llmd = quick_start_converges(kube, work, release)
        status = llmd["status"]
        assert status["observedGeneration"] == llmd["metadata"]["generation"], status
        conditions = {c["type"]: c for c in status["conditions"]}
        assert conditions["SpecValid"]["status"] == "True", conditions
        assert all(
            c["observedGeneration"] == llmd["metadata"]["generation"] for c in conditions.values()
        ), conditions
        service_name = names.ray_service_name(QUICKSTART)
        first = kube.ray("rayservices", work, service_name)
        assert first is not None
        started = time.monotonic()
        kube.custom.delete_namespaced_custom_object(
            names.RAY_GROUP, names.RAY_VERSION, work, "rayservices", service_name
        )
        wait_for(
            lambda: (
                (again := kube.ray("rayservices", work, service_name))
                and again["metadata"]["uid"] != first["metadata"]["uid"]
            ),
            "the operator pod to recreate the deleted RayService",
            READY_SECONDS,
        )
        recreated_s = time.monotonic() - started
        kube.delete_llmd(work, QUICKSTART)
        wait_for(
            lambda: kube.ray("rayservices", work, service_name) is None,
            "the garbage collector to delete the RayService",
            READY_SECONDS,
        )
        record("drift and deletion", recreated_s=round(recreated_s, 1))


def test_liveness_probe_restarts_a_wedged_operator(
    kube: Kube, settings: dict[str, str], host_operator_stopped: None
) -> None:
    """The operator's process is stopped (SIGSTOP through the node's containerd: alive but
    answering nothing); the kubelet's liveness probe fails, the container is restarted,
    and the restarted operator handles changes again."""
    ctr = shutil.which("ctr")
    assert ctr, "ctr (Debian package containerd) is not on PATH"
    with installed(kube, settings) as release, pool_namespace(kube) as work:
        (pod,) = release.wait_ready(1)
        quick_start_converges(kube, work, release)
        status = pod.status.container_statuses[0]
        container_id = status.container_id.split("://", 1)[1]
        restarts = status.restart_count
        subprocess.run(
            [ctr, "--address", str(NODE_SOCKET), "--namespace", "k8s.io",
             "tasks", "kill", "--signal", "SIGSTOP", container_id],
            check=True, capture_output=True,
        )  # fmt: skip
        stopped = time.monotonic()

        def restarted() -> client.V1Pod | None:
            live = kube.core.read_namespaced_pod(pod.metadata.name, release.namespace)
            statuses = live.status.container_statuses or []
            return live if statuses and statuses[0].restart_count > restarts else None

        live = wait_for(restarted, "the kubelet to restart the operator", LIVENESS_RESTART_SECONDS)
        restarted_s = time.monotonic() - stopped
        release.wait_ready(1)
        ready_s = time.monotonic() - stopped
        assert live.metadata.uid == pod.metadata.uid, "the same pod, its container restarted"
        events = kube.core.list_namespaced_event(
            release.namespace, field_selector=f"involvedObject.name={pod.metadata.name}"
        ).items
        messages = [f"{e.reason}: {e.message}" for e in events]
        assert any(
            e.reason == "Unhealthy" and "Liveness probe failed" in (e.message or "") for e in events
        ), messages
        assert any("failed liveness probe" in (e.message or "") for e in events), messages
        # The restarted operator works: a spec change converges.
        generation = bump(kube, work, QUICKSTART)
        wait_for(
            lambda: converged_at(kube, work, QUICKSTART, generation),
            "the restarted operator to converge a change",
            READY_SECONDS,
        )
        record("liveness", restarted_s=round(restarted_s, 1), ready_again_s=round(ready_s, 1))


def test_helm_test_passes_with_images_built_here(
    kube: Kube, settings: dict[str, str], host_operator_stopped: None
) -> None:
    tools = node_images()["TEST_TOOLS_LOCAL_IMAGE"]
    values = ["--set", f"tests.kubectlImage={tools}", "--set", f"tests.curlImage={tools}"]
    with installed(kube, settings, None, *values) as release:
        release.wait_ready(1)
        started = time.monotonic()
        binary = shutil.which("helm")
        assert binary
        # No --logs: the chart deletes a test pod once it succeeded (hook-succeeded).
        done = subprocess.run(
            [binary, "test", release.name, "-n", release.namespace, "--timeout", "5m"],
            capture_output=True, text=True, check=False, timeout=400,
        )  # fmt: skip
        assert done.returncode == 0, f"helm test failed:\n{done.stdout}\n{done.stderr}"
        suites = re.findall(r"TEST SUITE:\s+(\S+)\n.*?Phase:\s+(\w+)", done.stdout, re.S)
        assert sorted(suites) == [
            (f"{release.fullname}-test-{check}", "Succeeded") for check in ("api", "health")
        ], done.stdout
        record("helm test", seconds=round(time.monotonic() - started, 1))


def remove_leftover_peering_crd(kube: Kube) -> None:
    """kopf's cluster peering CRD is a template of the chart: one that a killed run of
    this module left behind (its release gone) would make the next install fail."""
    extensions = client.ApiextensionsV1Api(kube.api)
    name = "clusterkopfpeerings.kopf.dev"
    try:
        crd = extensions.read_custom_resource_definition(name)
    except ApiException as exc:
        if exc.status == 404:
            return
        raise
    owner = (crd.metadata.annotations or {}).get("meta.helm.sh/release-name", "")
    if owner.startswith("inpod-") and not helm("list", "-A", "-q", "--filter", f"^{owner}$"):
        extensions.delete_custom_resource_definition(name)

        def gone() -> bool:
            try:
                extensions.read_custom_resource_definition(name)
            except ApiException as exc:
                return exc.status == 404
            return False

        wait_for(gone, f"the leftover {name} to go", 60)


def live_peers(kube: Kube, name: str) -> int:
    """How many operators kopf's cluster peering object lists as alive."""
    try:
        body = client.CustomObjectsApi(kube.api).get_cluster_custom_object(
            "kopf.dev", "v1", "clusterkopfpeerings", name
        )
    except ApiException as exc:
        if exc.status == 404:
            return 0
        raise
    now = datetime.now(UTC)
    return sum(
        1
        for peer in (body.get("status") or {}).values()
        if datetime.fromisoformat(peer["lastseen"]).timestamp() + peer["lifetime"] > now.timestamp()
    )


def reconcile_counts(among: list[client.V1Pod]) -> dict[str, float] | None:
    """Each pod's reconciles so far, once every one of them answers /metrics."""
    scraped = {p.metadata.name: pod_metrics(p) for p in among}
    if any(series is None for series in scraped.values()):
        return None
    return {name: reconciles(series or {}) for name, series in scraped.items()}


def active_and_standby(
    kube: Kube, namespace: str, pods: list[client.V1Pod]
) -> tuple[str, str, dict[str, float]]:
    """The replica that handles a change and the one that does not (by their reconcile
    counters around one spec change of the quick start), and the counters after it."""
    before = wait_for(lambda: reconcile_counts(pods), "both replicas' /metrics")
    generation = bump(kube, namespace, QUICKSTART)
    wait_for(
        lambda: converged_at(kube, namespace, QUICKSTART, generation),
        "the active replica to converge a change",
        READY_SECONDS,
    )
    after = wait_for(lambda: reconcile_counts(pods), "both replicas' /metrics")
    active = [name for name in after if after[name] > before[name]]
    assert len(active) == 1, f"reconciles per replica: {before} -> {after} (one active)"
    (standby,) = set(after) - set(active)
    return active[0], standby, after


def test_peering_keeps_one_replica_active_and_fails_over(
    kube: Kube, settings: dict[str, str], host_operator_stopped: None
) -> None:
    """Two replicas with kopf peering: once both have joined, exactly one handles a
    change; when it is deleted, a change made at once is handled by the other. (Until
    the second joins, the first runs alone: kopf pauses a replica only when it sees one
    of higher priority, so both may handle what exists at start-up.)"""
    remove_leftover_peering_crd(kube)
    values = ("--set", "peering.enabled=true", "--set", "operator.replicas=2")
    with installed(kube, settings, None, *values) as release, pool_namespace(kube) as work:
        assert release.deployment().spec.strategy.type == "RollingUpdate"
        pods = release.wait_ready(2)
        wait_for(lambda: live_peers(kube, "llm-operator") == 2, "both replicas in kopf's peering")
        quick_start_converges(kube, work, release)
        active, standby, after = active_and_standby(kube, work, pods)

        kube.core.delete_namespaced_pod(active, release.namespace)
        deleted = time.monotonic()
        generation = bump(kube, work, QUICKSTART)
        wait_for(
            lambda: converged_at(kube, work, QUICKSTART, generation),
            "the standby replica to take over and converge the change",
            READY_SECONDS,
        )
        takeover_s = time.monotonic() - deleted
        # The standby, or the deleted pod's replacement if it joined first with a higher
        # priority: either way a survivor reconciled (a replacement's counter starts at 0).
        survivors = [
            p
            for p in release.pods()
            if not p.metadata.deletion_timestamp and p.metadata.name != active
            and p.status.pod_ip
        ]  # fmt: skip
        now = wait_for(lambda: reconcile_counts(survivors), "the surviving replicas' /metrics")
        handled = {name: count - after.get(name, 0.0) for name, count in now.items()}
        assert any(delta > 0 for delta in handled.values()), (after, now)
        record(
            "peering failover",
            takeover_s=round(takeover_s, 1),
            deleted=active,
            standby=standby,
            reconciles_since_takeover=handled,
        )


@dataclass
class Churn:
    """Creates LLMDeployments one after another in a thread, and changes the spec of the
    one before each time: the load a replica is killed under."""

    kube: Kube
    namespace: str
    count: int = 12
    pause_seconds: float = 1.5
    created: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _run(self) -> None:
        for index in range(self.count):
            if self._stop.is_set():
                return
            name = f"churn-{index:02d}"
            self.kube.create_llmd(
                sample("quickstart", self.namespace, lambda b, n=name: b["metadata"].update(name=n))
            )
            self.created.append(name)
            if index:
                bump(self.kube, self.namespace, self.created[index - 1])
                self.changed.append(self.created[index - 1])
            self._stop.wait(self.pause_seconds)

    def __enter__(self) -> Churn:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def wait_started(self, created: int) -> None:
        wait_for(lambda: len(self.created) >= created, f"{created} LLMDeployments created", 60)

    def __exit__(self, *_: object) -> None:
        assert self._thread is not None
        self._thread.join(timeout=self.count * (self.pause_seconds + 30))
        self._stop.set()


def test_sigkill_of_the_active_replica_under_churn_repeats_no_write(
    kube: Kube, settings: dict[str, str], host_operator_stopped: None
) -> None:
    """The active replica is killed with SIGKILL (no shutdown, its peering record left to
    expire) while LLMDeployments are created and changed: the standby (or the restarted
    container, if it draws the higher priority) takes over, every deployment converges,
    and the audit log shows each child created once, none deleted, and no RayService
    patched more often than its deployment's spec changed."""
    ctr = shutil.which("ctr")
    assert ctr, "ctr (Debian package containerd) is not on PATH"
    remove_leftover_peering_crd(kube)
    values = ("--set", "peering.enabled=true", "--set", "operator.replicas=2")
    with installed(kube, settings, None, *values) as release, pool_namespace(kube) as work:
        pods = release.wait_ready(2)
        wait_for(lambda: live_peers(kube, "llm-operator") == 2, "both replicas in kopf's peering")
        quick_start_converges(kube, work, release)
        active, standby, _ = active_and_standby(kube, work, pods)
        (victim,) = [p for p in pods if p.metadata.name == active]
        container_id = victim.status.container_statuses[0].container_id.split("://", 1)[1]
        since = datetime.now(UTC)
        with Churn(kube, work) as churn:
            churn.wait_started(4)
            subprocess.run(
                [ctr, "--address", str(NODE_SOCKET), "--namespace", "k8s.io",
                 "tasks", "kill", "--signal", "SIGKILL", container_id],
                check=True, capture_output=True,
            )  # fmt: skip
            killed_at, killed = datetime.now(UTC), time.monotonic()
        assert len(churn.created) == churn.count, churn.created

        def all_converged() -> bool:
            return all(converged(kube.get_llmd(work, name)) for name in churn.created)

        wait_for(all_converged, "every churned LLMDeployment to converge", READY_SECONDS)
        converged_s = time.monotonic() - killed

        writes = [w for w in audit.writes(work, since) if w.user == release.user]
        after_kill = [w for w in writes if w.at > killed_at and w.succeeded]
        assert after_kill, "no write by the operator after the kill"
        takeover_s = (after_kill[0].at - killed_at).total_seconds()
        victim_ip = victim.status.pod_ip
        standby_ip = next(p.status.pod_ip for p in pods if p.metadata.name == standby)
        taken_by = {victim_ip: "the restarted container", standby_ip: "the standby"}

        services = {names.ray_service_name(name): name for name in churn.created}
        creates = collections.Counter(
            w.name for w in writes
            if w.resource == "rayservices" and w.verb == "create" and w.succeeded
        )  # fmt: skip
        assert {s: creates[s] for s in services} == dict.fromkeys(services, 1), creates
        deletes = [w for w in writes if w.verb in ("delete", "deletecollection")]
        assert not deletes, deletes
        patches = collections.Counter(
            w.name for w in writes
            if w.resource == "rayservices" and w.verb == "patch" and w.succeeded
        )  # fmt: skip
        changes = collections.Counter(names.ray_service_name(n) for n in churn.changed)
        too_many = {s: patches[s] for s in services if patches[s] > changes[s]}
        assert not too_many, f"RayService patches {dict(patches)}, spec changes {dict(changes)}"
        refused = [f"{w.verb} {w.resource}/{w.name} {w.code}" for w in writes if not w.succeeded]
        record(
            "sigkill failover",
            takeover_s=round(takeover_s, 1),
            taken_by=taken_by.get(after_kill[0].source, after_kill[0].source),
            every_deployment_converged_s=round(converged_s, 1),
            deployments=churn.count,
            spec_changes=len(churn.changed),
            rayservice_creates=sum(creates[s] for s in services),
            rayservice_patches=sum(patches[s] for s in services),
            refused_writes=refused,
        )


@dataclass
class PodCensus:
    """Samples the release's pods in a thread: the most operator containers seen running
    at once, and every pod name seen."""

    release: Release
    most_running: int = 0
    seen: set[str] = field(default_factory=set)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _sample(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(ApiException):
                pods = self.release.pods()
                self.seen.update(p.metadata.name for p in pods)
                running = sum(
                    1
                    for p in pods
                    for c in p.status.container_statuses or []
                    if c.state and c.state.running
                )
                self.most_running = max(self.most_running, running)
            self._stop.wait(0.2)

    def __enter__(self) -> PodCensus:
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)


def test_upgrade_to_a_new_tag_recreates_the_operator_and_rewrites_no_child(
    kube: Kube, settings: dict[str, str], host_operator_stopped: None
) -> None:
    assert audit.LOG.exists(), f"no audit log at {audit.LOG}: the local cluster writes one"
    images = node_images()
    repository, next_tag = split_ref(images["OPERATOR_LOCAL_IMAGE_NEXT"])
    assert repository == split_ref(images["OPERATOR_LOCAL_IMAGE"])[0]
    with installed(kube, settings) as release, pool_namespace(kube) as work:
        (old,) = release.wait_ready(1, images["OPERATOR_LOCAL_IMAGE"])
        assert release.deployment().spec.strategy.type == "Recreate"
        quick_start_converges(kube, work, release)
        service_name = names.ray_service_name(QUICKSTART)
        # The operator writes the RayService; KubeRay the RayClusters (the audit log below
        # covers any write of the operator's to those).
        services_before = {
            body["metadata"]["name"]: body["metadata"]["generation"]
            for body in kube.rays("rayservices", work)
        }
        time.sleep(SETTLE_SECONDS)  # the status settles (KubeRay's first reports)
        since = datetime.now(UTC)
        started = time.monotonic()
        with PodCensus(release) as census:
            helm(
                "upgrade", release.name, str(CHART), "-n", release.namespace, "--reuse-values",
                "--set", f"image.tag={next_tag}",
            )  # fmt: skip
            (new,) = release.wait_ready(1, images["OPERATOR_LOCAL_IMAGE_NEXT"])
            rolled_s = time.monotonic() - started
            # The new operator has listed what exists (its gauges count afresh)...
            wait_for_startup_listing(release, work)
            # ...and had time to write anything it would.
            time.sleep(SETTLE_SECONDS)
        assert new.metadata.name != old.metadata.name
        assert census.most_running == 1, f"{census.most_running} operators ran at once"
        writes = [w for w in audit.writes(work, since) if w.user == release.user]
        rewritten = [w for w in writes if w.resource.split("/")[0] in CHILD_RESOURCES]
        assert not rewritten, rewritten
        services_after = {
            body["metadata"]["name"]: body["metadata"]["generation"]
            for body in kube.rays("rayservices", work)
        }
        assert services_after == services_before
        assert kube.ray("rayservices", work, service_name)
        record(
            "upgrade",
            rolled_s=round(rolled_s, 1),
            pods_seen=sorted(census.seen),
            operator_writes_after=[f"{w.verb} {w.resource}/{w.name}" for w in writes],
        )


# --- upgrade from the previous release -----------------------------------------------
def user_claims(body: dict[str, Any]) -> list[str]:
    """Claims a sample expects its user to have made: a `pvc://` model source's and any
    `existingClaim`."""
    spec = body["spec"]
    claims = []
    source = str((spec.get("model") or {}).get("source", ""))
    if source.startswith("pvc://"):
        claims.append(source.removeprefix("pvc://").split("/", 1)[0])
    for volume in (spec.get("storage") or {}).values():
        if isinstance(volume, dict) and volume.get("existingClaim"):
            claims.append(str(volume["existingClaim"]))
    return claims


def create_samples(kube: Kube, namespace: str, paths: list[Path]) -> list[str]:
    """Every sample in `paths`, in `namespace`, with the claims it expects to exist."""
    created = []
    for path in paths:
        body = load_yaml(path)
        body["metadata"]["namespace"] = namespace
        existing = kube.claims(namespace)
        for claim in user_claims(body):
            if claim not in existing:
                create_claim(kube, namespace, claim)
        kube.create_llmd(body)
        created.append(str(body["metadata"]["name"]))
    return created


def bind_every_claim(kube: Kube, namespace: str) -> None:
    """Bind the claims still pending (the operator's and the user's), as test_samples.py
    does, so KubeRay's pods are placed before the census."""
    pending = [n for n, c in kube.claims(namespace).items() if c.status.phase != "Bound"]
    if pending:
        bind_claims(kube, namespace, pending)


PodState = dict[str, tuple[str, int]]


def pod_state(kube: Kube, namespace: str) -> PodState:
    """Each pod's name -> (UID, restarts of all its containers)."""
    return {
        pod.metadata.name: (
            pod.metadata.uid,
            sum(c.restart_count for c in pod.status.container_statuses or []),
        )
        for pod in kube.core.list_namespaced_pod(namespace).items
    }


def ray_state(kube: Kube, namespace: str) -> dict[str, tuple[int, str]]:
    """Each RayService's and RayCluster's `<plural>/<name>` -> (generation, resourceVersion)."""
    return {
        f"{plural}/{body['metadata']['name']}": (
            int(body["metadata"].get("generation", 0)),
            str(body["metadata"]["resourceVersion"]),
        )
        for plural in ("rayservices", "rayclusters")
        for body in kube.rays(plural, namespace)
    }


def settled_pods(kube: Kube, namespace: str) -> PodState:
    """The namespace's pods once the set and their restarts stay the same for
    SETTLE_SECONDS (KubeRay makes heads, then workers)."""
    last: PodState = {}
    stable_since = time.monotonic()

    def quiet() -> PodState | None:
        nonlocal last, stable_since
        now = pod_state(kube, namespace)
        if now != last:
            last, stable_since = now, time.monotonic()
            return None
        return now if time.monotonic() - stable_since >= SETTLE_SECONDS else None

    return wait_for(quiet, f"the pods of {namespace} to settle", READY_SECONDS + SETTLE_SECONDS)


def test_upgrade_from_the_previous_release_rewrites_no_child_and_restarts_no_pod(
    kube: Kube, settings: dict[str, str], host_operator_stopped: None
) -> None:
    """#15: the previous release (chart 0.1.0: its CRD, chart, image and every one of its
    samples) is upgraded to the working tree as the README's Upgrade section says (the
    CRD first, then `helm upgrade`). From the audit log, no child is written after the
    upgrade begins; no pod of KubeRay's is replaced or restarted; every LLMDeployment
    stays converged and a spec change converges under the new operator."""
    assert audit.LOG.exists(), f"no audit log at {audit.LOG}: the local cluster writes one"
    previous = previous_release()
    new_image = node_images()["OPERATOR_LOCAL_IMAGE"]
    assert split_ref(previous.image)[1] != split_ref(new_image)[1], "the same image twice"
    apply_crd, upgrade = readme_upgrade_commands()
    with (
        previous_crd(kube, previous),
        installed(kube, settings, None, chart=previous.chart, image=previous.image) as release,
        pool_namespace(kube) as work,
    ):
        release.wait_ready(1, previous.image)
        deployments = create_samples(kube, work, previous.samples)
        assert QUICKSTART in deployments, deployments

        def all_converged() -> bool:
            return all(converged(kube.get_llmd(work, name)) for name in deployments)

        wait_for(all_converged, "the previous operator to converge every sample", READY_SECONDS)
        bind_every_claim(kube, work)
        pods_before = settled_pods(kube, work)
        assert pods_before, f"no pod in {work}: KubeRay made nothing to watch"
        rays_before = ray_state(kube, work)
        assert any(key.startswith("rayservices/") for key in rays_before), rays_before

        since = datetime.now(UTC)
        started = time.monotonic()
        # Whether the CRD's apply would stop without --force-conflicts: Helm's manager owns
        # the fields the new CRD changes (recorded; the README's command decides).
        dry = kubectl(*[a for a in apply_crd[1:] if a != "--force-conflicts"], "--dry-run=server")
        applied = kubectl(*apply_crd[1:])
        assert applied.returncode == 0, f"{shlex.join(apply_crd)}:\n{applied.stderr}"
        with PodCensus(release) as census:
            upgrade_started = time.monotonic()
            helm(*as_in_readme(release.name, release.namespace, new_image, upgrade))
            (new,) = release.wait_ready(1, new_image)
            ready_s = time.monotonic() - upgrade_started
            wait_for_startup_listing(release, work)
            time.sleep(SETTLE_SECONDS)
        upgraded_s = time.monotonic() - started
        assert census.most_running == 1, f"{census.most_running} operators ran at once"

        unconverged = [n for n in deployments if not converged(kube.get_llmd(work, n))]
        assert not unconverged, f"not converged after the upgrade: {unconverged}"
        pods_after = pod_state(kube, work)
        rays_after = ray_state(kube, work)
        until = datetime.now(UTC)
        writes = [
            w for w in audit.writes(work, since) if w.user == release.user and w.at < until
        ]  # fmt: skip
        rewritten = [w for w in writes if w.resource.split("/")[0] in CHILD_RESOURCES]
        assert not rewritten, [f"{w.verb} {w.resource}/{w.name}" for w in rewritten]
        replaced = {
            name: (before, pods_after.get(name))
            for name, before in pods_before.items()
            if pods_after.get(name, ("", 0))[0] != before[0] or pods_after[name][1] > before[1]
        }
        assert not replaced, f"pods replaced or restarted (UID, restarts): {replaced}"
        assert sorted(pods_after) == sorted(pods_before), sorted(set(pods_after) ^ set(pods_before))
        generations = {key: value[0] for key, value in rays_before.items()}
        assert {key: value[0] for key, value in rays_after.items()} == generations

        # The new operator handles a change of one of the old deployments.
        generation = bump(kube, work, QUICKSTART)
        wait_for(
            lambda: converged_at(kube, work, QUICKSTART, generation),
            "the new operator to converge a change of a previous release's deployment",
            READY_SECONDS,
        )
        by_kind = collections.Counter(f"{w.verb} {w.resource}" for w in writes if w.succeeded)
        record(
            "upgrade from the previous release",
            previous_image=previous.image,
            deployments=len(deployments),
            pods=len(pods_before),
            helm_upgrade_to_ready_s=round(ready_s, 1),
            crd_apply_to_settled_s=round(upgraded_s, 1),
            crd_conflicts_without_force=dry.returncode != 0,
            writes_after_upgrade_by_kind=dict(by_kind),
            refused_writes=[f"{w.verb} {w.resource}/{w.name} {w.code}" for w in writes
                            if not w.succeeded],
            ray_objects_with_new_resource_version=sorted(
                key for key in rays_before if rays_after.get(key) != rays_before[key]
            ),
            pods_seen=sorted(census.seen),
            new_operator=new.metadata.name,
        )  # fmt: skip
