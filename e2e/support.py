"""Helpers for the e2e suite: clients, waiting on conditions, samples, fake volumes.

Cluster-agnostic: everything goes through the API server that KUBECONFIG names.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from prometheus_client.parser import text_string_to_metric_families

from llm_operator.api.constants import GROUP, PLURAL, VERSION
from llm_operator.render import names

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "manifests" / "samples"
INVALID = ROOT / "tests" / "invalid"
SETTINGS = Path(__file__).resolve().parent / "cluster" / "settings.env"
CLUSTER_SCRIPT = ROOT / "e2e" / "cluster.sh"

# --- timeouts, in seconds: every wait of the suite takes its bound from here -------------
# The operator's and KubeRay's work alike (a converge, a status, a cluster, pods): KubeRay
# reconciles RayServices one at a time for every test running on the cluster, and the
# operator's status follows KubeRay's.
WAIT_SECONDS = 180.0
# A namespace's deletion, its pods and KubeRay's finalizers first.
NAMESPACE_GONE_SECONDS = 180.0
# Fault injection: every LLMDeployment of a test converging after kills or restarts.
CONVERGE_AFTER_FAULTS_SECONDS = 300.0
# KubeRay's CRDs to be established, or to be gone.
CRD_SECONDS = 120.0
# A killed process to be gone.
PROCESS_GONE_SECONDS = 30.0
# One request to a metrics or health endpoint.
HTTP_SECONDS = 5.0
POLL_SECONDS = 0.5
# How often an update retries a conflict (HTTP 409) with a concurrent writer.
CONFLICT_RETRIES = 10
# One of Ray's tests on the real node (e2e/test_ray.py), start-up to scale-down: more
# than the per-test timeout of pyproject.toml, which bounds every other test.
RAY_TEST_SECONDS = 1200.0

GPU = "nvidia.com/gpu"
ACCELERATOR_LABEL = "ray.io/accelerator-type"

T = TypeVar("T")
Body = dict[str, Any]


def cluster(*args: str) -> None:
    """e2e/cluster.sh with `args` (the local cluster's processes); its stderr on failure."""
    done = subprocess.run(
        ["bash", str(CLUSTER_SCRIPT), *args], check=False, capture_output=True, text=True
    )
    assert done.returncode == 0, f"e2e/cluster.sh {' '.join(args)}: {done.stderr[-3000:]}"


def cluster_settings() -> dict[str, str]:
    """The key=value lines shared with e2e/cluster.sh (a copy: callers may change it)."""
    return dict(_read_settings())


@cache
def _read_settings() -> dict[str, str]:
    """settings.env, read once per run: every endpoint lookup and fixture asks for it."""
    pairs = {}
    for line in SETTINGS.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            pairs[key.strip()] = value.strip()
    return pairs


def local_cluster() -> bool:
    """Whether the suite runs on e2e/cluster.sh's cluster (its files are on this machine)."""
    chosen = os.environ.get("E2E_KUBECONFIG")
    return not chosen or Path(chosen).resolve() == (ROOT / ".e2e" / "kubeconfig").resolve()


def probe_pod() -> Body:
    """A minimal Pod, for dry runs of what the API server lets through."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "probe"},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    }


def refusal(exc: ApiException) -> str:
    """The API server's message in a refusal (its Status body), else the raw body."""
    try:
        return str(json.loads(exc.body)["message"])
    except (TypeError, ValueError, KeyError):
        return str(exc.body)


# --- the out-of-cluster operator's endpoints, and Prometheus text ---------------------
Series = dict[tuple[str, frozenset[tuple[str, str]]], float]


def operator_metrics_url() -> str:
    """The operator's /metrics: e2e/cluster.sh's address, or E2E_OPERATOR_METRICS (e.g. a
    port-forward of the chart's metrics Service on another cluster)."""
    default = f"http://{cluster_settings()['OPERATOR_METRICS_ADDRESS']}/metrics"
    return os.environ.get("E2E_OPERATOR_METRICS", default)


def operator_liveness_url() -> str:
    return f"http://{cluster_settings()['OPERATOR_LIVENESS_ADDRESS']}/healthz"


def scrape(url: str, timeout: float = HTTP_SECONDS) -> Series:
    """Every sample an endpoint serves, by name and labels."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        text = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def wait_for(
    probe: Callable[[], T | None],
    what: str,
    timeout: float = WAIT_SECONDS,
) -> T:
    """Poll `probe` until it returns something truthy; fail naming `what` and the last value."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while True:
        last = probe()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last: {last}")
        time.sleep(POLL_SECONDS)


@dataclass(frozen=True)
class Kube:
    """The API groups the suite uses, all on one connection."""

    api: client.ApiClient
    core: client.CoreV1Api
    custom: client.CustomObjectsApi
    authz: client.AuthorizationV1Api

    @classmethod
    def connect(cls, kubeconfig: str) -> Kube:
        config.load_kube_config(config_file=kubeconfig)
        api = client.ApiClient()
        return cls(
            api, client.CoreV1Api(api), client.CustomObjectsApi(api), client.AuthorizationV1Api(api)
        )

    # LLMDeployments -----------------------------------------------------------------
    def create_llmd(self, body: Body) -> Body:
        namespace = body["metadata"]["namespace"]
        return self.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)

    def get_llmd(self, namespace: str, name: str) -> Body:
        return self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)

    def patch_llmd(self, namespace: str, name: str, patch: Body) -> Body:
        return self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, name, patch
        )

    def delete_llmd(self, namespace: str, name: str) -> None:
        self.custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)

    # KubeRay objects ----------------------------------------------------------------
    def ray(self, plural: str, namespace: str, name: str) -> Body | None:
        """A RayService or RayCluster, or None when it does not exist."""
        try:
            return self.custom.get_namespaced_custom_object(
                names.RAY_GROUP, names.RAY_VERSION, namespace, plural, name
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def rays(self, plural: str, namespace: str, selector: str | None = None) -> list[Body]:
        """RayServices or RayClusters of `namespace`, those `selector` matches if given
        (`names.DEPLOYMENT_LABEL=<llmd>`: an LLMDeployment's own and the RayClusters KubeRay made
        for its RayService, which carry its labels under names of their own)."""
        listing = self.custom.list_namespaced_custom_object(
            names.RAY_GROUP, names.RAY_VERSION, namespace, plural, label_selector=selector
        )
        return list(listing["items"])

    # Namespaces, pods, nodes, claims -------------------------------------------------
    def namespace_exists(self, name: str) -> bool:
        try:
            self.core.read_namespace(name)
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def pods(self, namespace: str, selector: str) -> list[client.V1Pod]:
        return list(self.core.list_namespaced_pod(namespace, label_selector=selector).items)

    def node(self, name: str) -> client.V1Node:
        return self.core.read_node(name)

    def claims(self, namespace: str) -> dict[str, client.V1PersistentVolumeClaim]:
        items = self.core.list_namespaced_persistent_volume_claim(namespace).items
        return {claim.metadata.name: claim for claim in items}


def load_yaml(path: Path) -> Body:
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(document, dict)
    return document


def sample(name: str, namespace: str, edit: Callable[[Body], None] | None = None) -> Body:
    """A sample from manifests/samples, moved into `namespace`, optionally edited."""
    body = copy.deepcopy(load_yaml(SAMPLES / f"{name}.yaml"))
    body["metadata"]["namespace"] = namespace
    if edit is not None:
        edit(body)
    return body


def condition(body: Body | None, kind: str) -> Body | None:
    for item in ((body or {}).get("status") or {}).get("conditions") or []:
        if item.get("type") == kind:
            return dict(item)
    return None


def converged(body: Body) -> bool:
    """The operator has handled the latest spec (status.observedGeneration caught up)."""
    status = body.get("status") or {}
    return status.get("observedGeneration") == body["metadata"]["generation"]


def spec_valid_false(kube: Kube, namespace: str, name: str) -> Body | None:
    """The LLMDeployment once the operator has handled its latest spec and reports
    SpecValid=False; None until then."""
    found = kube.get_llmd(namespace, name)
    valid = condition(found, "SpecValid")
    return found if converged(found) and valid and valid["status"] == "False" else None


def wait_spec_invalid(kube: Kube, namespace: str, name: str, what: str) -> tuple[Body, str]:
    """Waits for `spec_valid_false`: the LLMDeployment then, and the condition's message."""
    found = wait_for(lambda: spec_valid_false(kube, namespace, name), what)
    valid = condition(found, "SpecValid")
    assert valid is not None
    return found, valid["message"]


def gpu_request(pod: client.V1Pod) -> int:
    total = 0
    for container in pod.spec.containers:
        limits = (container.resources and container.resources.limits) or {}
        total += int(limits.get(GPU, 0))
    return total


def worker_pods(kube: Kube, namespace: str, cluster: str) -> list[client.V1Pod]:
    return kube.pods(namespace, f"ray.io/cluster={cluster},ray.io/node-type=worker")


def head_pods(kube: Kube, namespace: str, cluster: str) -> list[client.V1Pod]:
    return kube.pods(namespace, f"ray.io/cluster={cluster},ray.io/node-type=head")


def scheduled(pods: list[client.V1Pod], count: int) -> list[client.V1Pod] | None:
    """The pods, once exactly `count` exist and all have a node."""
    if len(pods) == count and all(pod.spec.node_name for pod in pods):
        return pods
    return None


def serving_cluster_name(kube: Kube, namespace: str, llmd: str) -> str:
    """The RayCluster KubeRay made for the LLMDeployment's RayService."""

    def made() -> str | None:
        service = kube.ray("rayservices", namespace, names.ray_service_name(llmd)) or {}
        status = service.get("status") or {}
        for key in ("activeServiceStatus", "pendingServiceStatus"):
            name = (status.get(key) or {}).get("rayClusterName")
            # KubeRay records the name a moment before it creates the cluster.
            if name and kube.ray("rayclusters", namespace, name):
                return str(name)
        return None

    return wait_for(made, f"KubeRay to create the RayCluster of {namespace}/{llmd}")


def bind_claims(kube: Kube, namespace: str, claims: list[str]) -> None:
    """Stand in for a storage provisioner: a pre-bound PV for each named claim.

    The fake cluster has no volume plugin, so each claim gets a static PersistentVolume
    whose claimRef names it; the real PV controller then binds the two.
    """
    live = wait_for(
        lambda: (found := kube.claims(namespace)) and all(c in found for c in claims) and found,
        f"claims {claims} in {namespace}",
    )
    for name in claims:
        claim = live[name]
        volume = client.V1PersistentVolume(
            metadata=client.V1ObjectMeta(
                name=f"{namespace}-{name}", labels={"llmops.dev/e2e-namespace": namespace}
            ),
            spec=client.V1PersistentVolumeSpec(
                capacity={"storage": claim.spec.resources.requests["storage"]},
                access_modes=claim.spec.access_modes,
                storage_class_name=claim.spec.storage_class_name or "",
                persistent_volume_reclaim_policy="Retain",
                claim_ref=client.V1ObjectReference(namespace=namespace, name=name),
                host_path=client.V1HostPathVolumeSource(path=f"/fake/{namespace}/{name}"),
            ),
        )
        kube.core.create_persistent_volume(volume)
    wait_for(
        lambda: all(kube.claims(namespace)[c].status.phase == "Bound" for c in claims),
        f"claims {claims} bound",
    )


def create_claim(kube: Kube, namespace: str, name: str, size: str = "100Gi") -> None:
    """A user's existing claim (for `pvc://` sources and existingClaim)."""
    kube.core.create_namespaced_persistent_volume_claim(
        namespace,
        client.V1PersistentVolumeClaim(
            metadata=client.V1ObjectMeta(name=name),
            spec=client.V1PersistentVolumeClaimSpec(
                access_modes=["ReadWriteMany"],
                storage_class_name="",
                resources=client.V1VolumeResourceRequirements(requests={"storage": size}),
            ),
        ),
    )


@contextlib.contextmanager
def host_volume(kube: Kube, namespace: str, claim: str, prefix: str) -> Iterator[Path]:
    """A static hostPath PersistentVolume pre-bound to `claim`, on a fresh directory of
    this machine (where the real node's kubelet runs) that the Ray user (uid 1000) can
    write; deleted afterwards."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o777)  # the Ray user of the image writes here
    name = f"{namespace}-{claim}"
    kube.core.create_persistent_volume(
        client.V1PersistentVolume(
            metadata=client.V1ObjectMeta(name=name, labels={"llmops.dev/e2e-namespace": namespace}),
            spec=client.V1PersistentVolumeSpec(
                capacity={"storage": "1Gi"},
                access_modes=["ReadWriteOnce"],
                storage_class_name="",
                persistent_volume_reclaim_policy="Retain",
                claim_ref=client.V1ObjectReference(namespace=namespace, name=claim),
                host_path=client.V1HostPathVolumeSource(path=str(path), type="Directory"),
            ),
        )
    )
    try:
        yield path
    finally:
        with contextlib.suppress(ApiException):
            kube.core.delete_persistent_volume(name)


def namespace_pool() -> Iterator[str]:
    settings = cluster_settings()
    prefix, count = settings["E2E_NAMESPACE_PREFIX"], int(settings["E2E_NAMESPACE_COUNT"])
    return (f"{prefix}{index:02d}" for index in range(1, count + 1))


# RBAC ------------------------------------------------------------------------------
class Access(NamedTuple):
    verb: str
    resource: str
    group: str = ""
    subresource: str = ""


def operator_user(settings: dict[str, str]) -> str:
    """The chart's service account, which the local operator runs as."""
    return f"system:serviceaccount:{settings['OPERATOR_NAMESPACE']}:{settings['OPERATOR_RELEASE']}"


def allowed(kube: Kube, user: str, access: Access, namespace: str) -> bool:
    """The authorizer's answer for a service account (`namespace` "" is cluster-wide)."""
    sa_namespace = user.split(":")[2]
    review = client.V1SubjectAccessReview(
        spec=client.V1SubjectAccessReviewSpec(
            user=user,
            # The groups a real token of the service account carries.
            groups=[
                "system:serviceaccounts",
                f"system:serviceaccounts:{sa_namespace}",
                "system:authenticated",
            ],
            resource_attributes=client.V1ResourceAttributes(
                verb=access.verb,
                resource=access.resource,
                group=access.group,
                namespace=namespace or None,
                subresource=access.subresource or None,
            ),
        )
    )
    return bool(kube.authz.create_subject_access_review(review).status.allowed)


@contextlib.contextmanager
def namespaced_release(release: str, watched: str, install_namespace: str) -> Iterator[str]:
    """A release of the chart that watches only `watched`, without an operator pod;
    yields its service account's user name."""
    helm = shutil.which("helm")
    assert helm, "helm is not on PATH: run `make helm`"
    common = ["--namespace", install_namespace]
    subprocess.run(
        [helm, "install", release, str(ROOT / "charts" / "llm-operator"), *common,
         "--skip-crds", "--set", "operator.replicas=0",
         "--set", f"operator.watchNamespaces={{{watched}}}"],
        check=True, capture_output=True,
    )  # fmt: skip
    try:
        yield f"system:serviceaccount:{install_namespace}:{release}-llm-operator"
    finally:
        subprocess.run([helm, "uninstall", release, *common], check=True, capture_output=True)
