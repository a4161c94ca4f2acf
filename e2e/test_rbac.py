"""The chart's RBAC: what the operator's service account may and may not do.

The rest of the suite shows the operator works under this role (the local cluster runs
it with a token of the chart's service account); these checks show the role is no wider
than that, asked of the real authorizer with SubjectAccessReviews.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from typing import NamedTuple

import pytest
from kubernetes import client
from support import ROOT, Kube

from llm_operator.api.constants import GROUP, PLURAL


def service_account_user(settings: dict[str, str]) -> str:
    return f"system:serviceaccount:{settings['OPERATOR_NAMESPACE']}:{settings['OPERATOR_RELEASE']}"


class Access(NamedTuple):
    verb: str
    resource: str
    group: str = ""
    subresource: str = ""


def allowed(kube: Kube, user: str, access: Access, namespace: str) -> bool:
    review = client.V1SubjectAccessReview(
        spec=client.V1SubjectAccessReviewSpec(
            user=user,
            groups=["system:serviceaccounts", "system:authenticated"],
            resource_attributes=client.V1ResourceAttributes(
                verb=access.verb,
                resource=access.resource,
                group=access.group,
                namespace=namespace,
                subresource=access.subresource or None,
            ),
        )
    )
    return bool(kube.authz.create_subject_access_review(review).status.allowed)


NEEDED = [
    Access("watch", PLURAL, GROUP),
    Access("patch", PLURAL, GROUP),
    Access("patch", PLURAL, GROUP, "status"),
    Access("create", "rayservices", "ray.io"),
    Access("patch", "rayservices", "ray.io"),
    Access("create", "rayclusters", "ray.io"),
    Access("watch", "rayclusters", "ray.io"),
    Access("create", "persistentvolumeclaims"),
    Access("create", "events"),
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
]


def _name(access: Access) -> str:
    return "-".join(part for part in access if part)


@pytest.mark.parametrize("access", NEEDED, ids=_name)
def test_operator_may(
    kube: Kube, settings: dict[str, str], module_namespace: str, access: Access
) -> None:
    assert allowed(kube, service_account_user(settings), access, module_namespace)


@pytest.mark.parametrize("access", FORBIDDEN, ids=_name)
def test_operator_may_not(
    kube: Kube, settings: dict[str, str], module_namespace: str, access: Access
) -> None:
    assert not allowed(kube, service_account_user(settings), access, module_namespace)


@pytest.fixture
def namespaced_release(kube: Kube, namespace: str, unwatched_namespace: str) -> Iterator[str]:
    """A second release of the chart that watches only `namespace`; no operator pod."""
    release = "llmop-scoped"
    helm = shutil.which("helm")
    assert helm, "helm is not on PATH: run `make helm`"
    common = ["--namespace", unwatched_namespace]
    subprocess.run(
        [helm, "install", release, str(ROOT / "charts" / "llm-operator"), *common,
         "--skip-crds", "--set", "operator.replicas=0",
         "--set", f"operator.watchNamespaces={{{namespace}}}"],
        check=True, capture_output=True,
    )  # fmt: skip
    try:
        yield f"system:serviceaccount:{unwatched_namespace}:{release}-llm-operator"
    finally:
        subprocess.run([helm, "uninstall", release, *common], check=True, capture_output=True)


def test_namespaced_install_reaches_only_its_namespaces(
    kube: Kube, namespace: str, unwatched_namespace: str, namespaced_release: str
) -> None:
    for access in NEEDED:
        assert allowed(kube, namespaced_release, access, namespace), access
    for access in NEEDED:
        assert not allowed(kube, namespaced_release, access, unwatched_namespace), access
        # Cluster-wide (all namespaces) is refused too.
        assert not allowed(kube, namespaced_release, access, ""), access
    for access in FORBIDDEN:
        assert not allowed(kube, namespaced_release, access, namespace), access
