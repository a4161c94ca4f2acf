"""The chart's RBAC: what the operator's service account may and may not do.

The rest of the suite shows the operator works under this role (the local cluster runs
it with a token of the chart's service account); these checks show the role is no wider
than that, asked of the real authorizer with SubjectAccessReviews (with the groups a
real token carries): first what the operator needs and a first set it must not have, in
one watched namespace; then the rest of what would let it read secrets or run code
(Secrets by any verb anywhere, Pods and their exec/attach/port-forward/ephemeral
containers, workload controllers that make Pods, RBAC writes, escalate, bind and
impersonate, new identities, host-reaching objects: hostPath PersistentVolumes,
nodes/proxy, webhooks) in the watched namespace, kube-system, the operator's own
namespace and cluster-wide; a namespaced release reaches nothing outside its namespaces.
Last, as real requests with the operator's own credentials: reading a Secret and
creating a Pod are refused with 403.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from support import (
    ROOT,
    Access,
    Kube,
    allowed,
    local_cluster,
    namespaced_release,
    operator_user,
    probe_pod,
    refusal,
)

from llm_operator.api.constants import GROUP, PLURAL, VERSION

Body = dict[str, Any]
pytestmark = pytest.mark.security

OPERATOR_KUBECONFIG = ROOT / ".e2e" / "operator.kubeconfig"
# The run's own names (a PersistentVolume's dry run is cluster-wide).
RUN = uuid.uuid4().hex[:5]

NEEDED = [
    Access("watch", PLURAL, GROUP),
    Access("patch", PLURAL, GROUP),
    Access("patch", PLURAL, GROUP, "status"),
    Access("create", "rayservices", "ray.io"),
    Access("patch", "rayservices", "ray.io"),
    Access("create", "rayclusters", "ray.io"),
    Access("patch", "rayclusters", "ray.io"),
    Access("watch", "rayclusters", "ray.io"),
    # Mode Job: the operator creates and patches its RayJob; kopf watches them.
    Access("create", "rayjobs", "ray.io"),
    Access("patch", "rayjobs", "ray.io"),
    Access("watch", "rayjobs", "ray.io"),
    Access("create", "persistentvolumeclaims"),
    Access("patch", "persistentvolumeclaims"),
    Access("create", "events"),
    # spec.exposure.gateway: the HTTPRoute it owns (deleted when the spec drops it) and
    # the Gateway it reads for the external URL.
    Access("create", "httproutes", "gateway.networking.k8s.io"),
    Access("patch", "httproutes", "gateway.networking.k8s.io"),
    Access("watch", "httproutes", "gateway.networking.k8s.io"),
    Access("delete", "httproutes", "gateway.networking.k8s.io"),
    Access("get", "gateways", "gateway.networking.k8s.io"),
    # storage.modelCache.prefetch: the download Job it owns, replaced (never changed)
    # when the model's source changes.
    Access("create", "jobs", "batch"),
    Access("watch", "jobs", "batch"),
    Access("delete", "jobs", "batch"),
]
FORBIDDEN = [
    Access("get", "secrets"),
    Access("list", "secrets"),
    Access("create", "pods"),
    Access("delete", "namespaces"),
    Access("create", "clusterrolebindings", "rbac.authorization.k8s.io"),
    Access("delete", PLURAL, GROUP),
    Access("create", "serviceaccounts", "", "token"),
    Access("update", "customresourcedefinitions", "apiextensions.k8s.io"),
    # Granted once, used by nothing (tests/test_rbac.py derives what is used): writes are
    # patches, claims are read by name, Events are only posted.
    Access("update", "rayservices", "ray.io"),
    Access("update", "rayclusters", "ray.io"),
    Access("update", "rayjobs", "ray.io"),
    Access("update", PLURAL, GROUP),
    Access("get", PLURAL, GROUP, "status"),
    Access("list", "persistentvolumeclaims"),
    Access("watch", "persistentvolumeclaims"),
    Access("patch", "events"),
    Access("create", "events", "events.k8s.io"),
    # Of the Gateway API: its own route only; Gateways are read, never written.
    Access("update", "httproutes", "gateway.networking.k8s.io"),
    Access("patch", "httproutes", "gateway.networking.k8s.io", "status"),
    Access("patch", "gateways", "gateway.networking.k8s.io"),
    Access("list", "gateways", "gateway.networking.k8s.io"),
    Access("create", "gateways", "gateway.networking.k8s.io"),
    Access("delete", "rayservices", "ray.io"),
    Access("patch", "jobs", "batch"),
    Access("update", "jobs", "batch"),
]


def _name(access: Access) -> str:
    return "-".join(part for part in access if part)


@pytest.mark.parametrize("access", NEEDED, ids=_name)
def test_operator_may(
    kube: Kube, settings: dict[str, str], module_namespace: str, access: Access
) -> None:
    assert allowed(kube, operator_user(settings), access, module_namespace)


@pytest.mark.parametrize("access", FORBIDDEN, ids=_name)
def test_operator_may_not(
    kube: Kube, settings: dict[str, str], module_namespace: str, access: Access
) -> None:
    assert not allowed(kube, operator_user(settings), access, module_namespace)


@pytest.fixture
def scoped_release(namespace: str, unwatched_namespace: str) -> Iterator[str]:
    """A second release of the chart that watches only `namespace`; no operator pod."""
    with namespaced_release("llmop-scoped", namespace, unwatched_namespace) as user:
        yield user


def test_namespaced_install_reaches_only_its_namespaces(
    kube: Kube, namespace: str, unwatched_namespace: str, scoped_release: str
) -> None:
    for access in NEEDED:
        assert allowed(kube, scoped_release, access, namespace), access
    for access in NEEDED:
        assert not allowed(kube, scoped_release, access, unwatched_namespace), access
        # Cluster-wide (all namespaces) is refused too.
        assert not allowed(kube, scoped_release, access, ""), access
    for access in FORBIDDEN:
        assert not allowed(kube, scoped_release, access, namespace), access


# --- beyond the role: what would let the operator read secrets or run code ----------
RBAC_GROUP = "rbac.authorization.k8s.io"
NAMESPACED: dict[str, list[Access]] = {
    "secrets": [
        Access(verb, "secrets")
        for verb in ("get", "list", "watch", "create", "update", "patch", "delete")
    ],
    "pods": [
        Access("create", "pods"),
        Access("delete", "pods"),
        Access("get", "pods", "", "log"),
        *(
            Access(verb, "pods", "", sub)
            for verb in ("create", "get")
            for sub in ("exec", "attach", "portforward")
        ),
        Access("patch", "pods", "", "ephemeralcontainers"),
        Access("update", "pods", "", "ephemeralcontainers"),
        Access("create", "pods", "", "eviction"),
    ],
    # Anything that makes Pods from a template, but what the operator writes by design:
    # the three KubeRay kinds (RayService, RayCluster, RayJob: their pods are what section
    # 2 checks) and the model-prefetch Job (batch/v1 jobs, granted above).
    "workloads": [
        Access("create", "deployments", "apps"),
        Access("create", "statefulsets", "apps"),
        Access("create", "daemonsets", "apps"),
        Access("create", "replicasets", "apps"),
        Access("create", "cronjobs", "batch"),
        Access("create", "replicationcontrollers"),
        Access("create", "services"),
        Access("create", "endpoints"),
        Access("create", "endpointslices", "discovery.k8s.io"),
        Access("delete", "networkpolicies", "networking.k8s.io"),
    ],
    "rbac": [
        Access("create", "roles", RBAC_GROUP),
        Access("escalate", "roles", RBAC_GROUP),
        Access("bind", "roles", RBAC_GROUP),
        Access("create", "rolebindings", RBAC_GROUP),
        Access("patch", "rolebindings", RBAC_GROUP),
        Access("create", "serviceaccounts"),
        Access("create", "serviceaccounts", "", "token"),
        Access("impersonate", "serviceaccounts"),
        Access("patch", "configmaps"),
    ],
}
CLUSTER: list[Access] = [
    Access("create", "clusterroles", RBAC_GROUP),
    Access("escalate", "clusterroles", RBAC_GROUP),
    Access("bind", "clusterroles", RBAC_GROUP),
    Access("patch", "clusterrolebindings", RBAC_GROUP),
    Access("impersonate", "users"),
    Access("impersonate", "groups"),
    Access("impersonate", "userextras", "authentication.k8s.io"),
    Access("impersonate", "uids", "authentication.k8s.io"),
    Access("create", "certificatesigningrequests", "certificates.k8s.io"),
    Access("update", "certificatesigningrequests", "certificates.k8s.io", "approval"),
    Access("create", "persistentvolumes"),
    Access("get", "nodes", "", "proxy"),
    Access("create", "nodes", "", "proxy"),
    Access("patch", "nodes"),
    Access("create", "storageclasses", "storage.k8s.io"),
    Access("create", "mutatingwebhookconfigurations", "admissionregistration.k8s.io"),
    Access("create", "validatingwebhookconfigurations", "admissionregistration.k8s.io"),
    Access("delete", "validatingadmissionpolicies", "admissionregistration.k8s.io"),
    Access("create", "customresourcedefinitions", "apiextensions.k8s.io"),
    Access("patch", "customresourcedefinitions", "apiextensions.k8s.io"),
    Access("create", "namespaces"),
    Access("patch", "namespaces"),
    Access("create", "priorityclasses", "scheduling.k8s.io"),
]


def granted(kube: Kube, user: str, asks: list[tuple[Access, str]]) -> list[str]:
    """The (access, namespace) pairs the authorizer allows `user`; "" is cluster-wide."""
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda ask: allowed(kube, user, *ask), asks))
    return [f"{'/'.join(filter(None, a))} in {ns or '(cluster)'}" for (a, ns), ok in zip(
        asks, answers, strict=True) if ok]  # fmt: skip


@pytest.mark.parametrize("kind", sorted(NAMESPACED), ids=str)
def test_operator_account_may_not_anywhere(
    kube: Kube, settings: dict[str, str], module_namespace: str, kind: str
) -> None:
    user = operator_user(settings)
    # Guard: the same reviews say yes where the role does grant.
    assert allowed(kube, user, NEEDED[3], module_namespace)
    scopes = [module_namespace, "kube-system", settings["OPERATOR_NAMESPACE"], ""]
    asks = [
        (access, scope)
        for access in NAMESPACED[kind]
        for scope in scopes
        if not (scope == module_namespace and access in FORBIDDEN)  # asked above
    ]
    assert granted(kube, user, asks) == []


def test_operator_account_may_not_touch_the_cluster(kube: Kube, settings: dict[str, str]) -> None:
    assert granted(kube, operator_user(settings), [(access, "") for access in CLUSTER]) == []


def test_namespaced_install_cannot_act_in_kube_system(
    kube: Kube, namespace: str, scoped_release: str
) -> None:
    assert allowed(kube, scoped_release, NEEDED[3], namespace), "guard: granted where watched"
    outside = [(access, scope) for access in NEEDED for scope in ("kube-system", "default")]
    assert granted(kube, scoped_release, outside) == []
    dangerous = [
        (access, scope)
        for kind in NAMESPACED.values()
        for access in kind
        for scope in (namespace, "kube-system")
    ]
    assert granted(kube, scoped_release, dangerous) == []
    assert granted(kube, scoped_release, [(access, "") for access in CLUSTER]) == []


def operator_client(kube: Kube, settings: dict[str, str]) -> client.ApiClient:
    """An API client with the operator's credentials: the kubeconfig the local operator
    runs with, or else a fresh short-lived token of the chart's service account."""
    if local_cluster() and OPERATOR_KUBECONFIG.exists():
        return config.new_client_from_config(config_file=str(OPERATOR_KUBECONFIG))
    request = client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=600)
    )
    token = kube.core.create_namespaced_service_account_token(
        settings["OPERATOR_RELEASE"], settings["OPERATOR_NAMESPACE"], request
    ).status.token
    configuration = client.Configuration()
    admin = kube.api.configuration
    configuration.host = admin.host
    configuration.ssl_ca_cert = admin.ssl_ca_cert
    configuration.verify_ssl = admin.verify_ssl
    configuration.api_key = {"authorization": f"Bearer {token}"}
    return client.ApiClient(configuration)


def forbidden(call: Callable[[], object]) -> str:
    with pytest.raises(ApiException) as caught:
        call()
    assert caught.value.status == 403, caught.value.body
    return refusal(caught.value)


def test_operator_credentials_cannot_read_secrets_or_create_pods(
    kube: Kube, settings: dict[str, str], module_namespace: str
) -> None:
    secret = client.V1Secret(metadata=client.V1ObjectMeta(name="probe"), string_data={"k": "v"})
    kube.core.create_namespaced_secret(module_namespace, secret)
    with operator_client(kube, settings) as api:
        me = client.AuthenticationV1Api(api).create_self_subject_review(
            client.V1SelfSubjectReview()
        )
        assert me.status.user_info.username == operator_user(settings)
        core = client.CoreV1Api(api)
        # Guard: the credentials work, for what the role grants.
        client.CustomObjectsApi(api).list_namespaced_custom_object(
            GROUP, VERSION, module_namespace, PLURAL
        )
        message = forbidden(lambda: core.read_namespaced_secret("probe", module_namespace))
        assert 'cannot get resource "secrets"' in message, message
        forbidden(lambda: core.list_namespaced_secret(module_namespace))
        forbidden(core.list_secret_for_all_namespaces)
        forbidden(lambda: core.list_namespaced_secret(settings["OPERATOR_NAMESPACE"]))
        # Dry runs: nothing would be stored even if authorization let one through.
        for where in (module_namespace, "kube-system"):
            message = forbidden(
                lambda where=where: core.create_namespaced_pod(where, probe_pod(), dry_run="All")
            )
            assert 'cannot create resource "pods"' in message, message
        volume = {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": f"probe-{RUN}"},
            "spec": {
                "capacity": {"storage": "1Gi"},
                "accessModes": ["ReadWriteOnce"],
                "hostPath": {"path": "/"},
            },
        }
        forbidden(lambda: core.create_persistent_volume(volume, dry_run="All"))
        binding = {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "probe"},
            "roleRef": {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": "admin"},
            "subjects": [
                {"kind": "ServiceAccount", "name": "default", "namespace": module_namespace}
            ],
        }
        rbac = client.RbacAuthorizationV1Api(api)
        forbidden(
            lambda: rbac.create_namespaced_role_binding(module_namespace, binding, dry_run="All")
        )
