"""Fixtures for the e2e suite: one fresh namespace per test, cleaned up afterwards.

Runs against the local cluster `e2e/cluster.sh up` makes, or the cluster whose kubeconfig
E2E_KUBECONFIG names (`e2e/kind/run.sh` sets it for kind). Every test here is marked `e2e`.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from standin import real_node_annotations
from support import (
    NAMESPACE_GONE_SECONDS,
    RAY_TEST_SECONDS,
    Kube,
    cluster_settings,
    namespace_pool,
    wait_for,
)

LOCAL_KUBECONFIG = Path(__file__).resolve().parent.parent / ".e2e" / "kubeconfig"
TEST_LABEL = "llmops.dev/e2e"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).resolve().parent
    for item in items:
        if here in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.e2e)
            # Ray's tests take up to about 15 minutes each on the real node: more than the
            # global per-test timeout (pyproject.toml) allows any other test.
            if item.get_closest_marker("ray") and not item.get_closest_marker("timeout"):
                item.add_marker(pytest.mark.timeout(RAY_TEST_SECONDS))

    # Fault injection restarts the control plane and the operators; run it last, so no
    # other test waits on controllers that are still catching up. Ray's tests, which
    # take minutes each on the real node, run just before, and before them the operator
    # as a real pod (its module stops the host operator and starts it again after).
    groups = ("inpod", "ray", "vllm", "faults")

    def order(item: pytest.Item) -> int:
        marked = [rank for rank, name in enumerate(groups, 1) if item.get_closest_marker(name)]
        return max(marked, default=0)

    items.sort(key=order)


@pytest.fixture(scope="session")
def kube() -> Kube:
    # kubectl, called by some tests, reads the same kubeconfig.
    kubeconfig = os.environ.get("E2E_KUBECONFIG") or str(LOCAL_KUBECONFIG)
    os.environ["KUBECONFIG"] = kubeconfig
    return Kube.connect(kubeconfig)


@pytest.fixture(scope="session")
def settings() -> dict[str, str]:
    return cluster_settings()


# KubeRay starts Ray under `bash -c` as the container's first process, which ignores SIGTERM,
# so a Ray pod sits out the default 30 s grace; a finished test's pods need none.
TEARDOWN_POD_GRACE_SECONDS = 1


def _delete_namespace(kube: Kube, name: str) -> None:
    try:
        kube.core.delete_namespace(name)
    except ApiException as exc:
        if exc.status != 404:
            raise
    # After the namespace is Terminating no controller can make a pod in it again.
    kube.core.delete_collection_namespaced_pod(
        name, grace_period_seconds=TEARDOWN_POD_GRACE_SECONDS
    )
    wait_for(
        lambda: not kube.namespace_exists(name), f"namespace {name} to go", NAMESPACE_GONE_SECONDS
    )
    # Static volumes made for the namespace's claims are cluster-scoped: remove them too.
    kube.core.delete_collection_persistent_volume(label_selector=f"llmops.dev/e2e-namespace={name}")


def _create_namespace(kube: Kube, name: str) -> None:
    kube.core.create_namespace(
        client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels={TEST_LABEL: "true"}))
    )


@contextlib.contextmanager
def pool_namespace(kube: Kube) -> Iterator[str]:
    """A fresh namespace that KubeRay watches, taken from the shared pool and given back."""
    for name in namespace_pool():
        if kube.namespace_exists(name):
            continue
        try:
            _create_namespace(kube, name)
        except ApiException as exc:
            if exc.status == 409:  # another run took it meanwhile
                continue
            raise
        break
    else:
        pytest.fail("every namespace of the KubeRay-watched pool is in use; delete stale ones")
    try:
        yield name
    finally:
        _delete_namespace(kube, name)


@pytest.fixture
def namespace(kube: Kube) -> Iterator[str]:
    """One namespace per test."""
    with pool_namespace(kube) as name:
        yield name


@pytest.fixture
def ray_namespace(kube: Kube, settings: dict[str, str]) -> Iterator[str]:
    """A pool namespace whose pods all go to the real node (Ray and job tests)."""
    with pool_namespace(kube) as name:
        annotations = real_node_annotations(settings["REAL_NODE_TAINT"])
        kube.core.patch_namespace(name, {"metadata": {"annotations": annotations}})
        yield name


@pytest.fixture(scope="module")
def module_namespace(kube: Kube) -> Iterator[str]:
    """One namespace for a module whose tests create nothing that outlives them."""
    with pool_namespace(kube) as name:
        yield name


@pytest.fixture
def unwatched_namespace(kube: Kube) -> Iterator[str]:
    """A namespace KubeRay does not watch, where the test plays KubeRay's part."""
    name = f"llmop-unwatched-{uuid.uuid4().hex[:6]}"
    _create_namespace(kube, name)
    yield name
    _delete_namespace(kube, name)
