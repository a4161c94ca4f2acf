"""The chart's RBAC: what the operator's service account may and may not do.

The rest of the suite shows the operator works under this role (the local cluster runs
it with a token of the chart's service account); these checks show the role is no wider
than that, asked of the real authorizer with SubjectAccessReviews.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support import Access, Kube, allowed, namespaced_release, operator_user

from llm_operator.api.constants import GROUP, PLURAL

NEEDED = [
    Access("watch", PLURAL, GROUP),
    Access("patch", PLURAL, GROUP),
    Access("patch", PLURAL, GROUP, "status"),
    Access("create", "rayservices", "ray.io"),
    Access("patch", "rayservices", "ray.io"),
    Access("create", "rayclusters", "ray.io"),
    Access("patch", "rayclusters", "ray.io"),
    Access("watch", "rayclusters", "ray.io"),
    Access("create", "persistentvolumeclaims"),
    Access("patch", "persistentvolumeclaims"),
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
    # Granted once, used by nothing (tests/test_rbac.py derives what is used): writes are
    # patches, claims are read by name, Events are only posted.
    Access("update", "rayservices", "ray.io"),
    Access("update", "rayclusters", "ray.io"),
    Access("update", PLURAL, GROUP),
    Access("get", PLURAL, GROUP, "status"),
    Access("list", "persistentvolumeclaims"),
    Access("watch", "persistentvolumeclaims"),
    Access("patch", "events"),
    Access("create", "events", "events.k8s.io"),
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
