"""The chart's operator pod passes the API server's own Pod Security admission.

The operator runs out of cluster here, so its pod is created with a server-side dry
run in a namespace that enforces the restricted profile: admission runs in full,
nothing is stored. A deliberately weakened copy must be refused, or the check proves
nothing.
"""

from __future__ import annotations

import copy
import shutil
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from kubernetes.client.exceptions import ApiException
from support import ROOT, Kube

RESTRICTED = {"pod-security.kubernetes.io/enforce": "restricted"}


@pytest.fixture
def restricted_namespace(kube: Kube, unwatched_namespace: str) -> Iterator[str]:
    kube.core.patch_namespace(unwatched_namespace, {"metadata": {"labels": RESTRICTED}})
    yield unwatched_namespace


def operator_pod() -> dict[str, Any]:
    helm = shutil.which("helm")
    assert helm, "helm is not on PATH: run `make helm`"
    rendered = subprocess.run(
        [helm, "template", "llm-operator", str(ROOT / "charts" / "llm-operator"),
         "--kube-version", "1.36.3"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    (deployment,) = [
        doc for doc in yaml.safe_load_all(rendered) if doc and doc["kind"] == "Deployment"
    ]
    template = deployment["spec"]["template"]
    spec = template["spec"]
    # The service account lives in the release namespace; admission does not need it.
    spec.pop("serviceAccountName")
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "operator"}, "spec": spec}


def create_dry_run(kube: Kube, namespace: str, pod: dict[str, Any]) -> None:
    kube.core.create_namespaced_pod(namespace, pod, dry_run="All")


def test_operator_pod_is_admitted_under_restricted(kube: Kube, restricted_namespace: str) -> None:
    create_dry_run(kube, restricted_namespace, operator_pod())


def test_a_weakened_pod_is_refused(kube: Kube, restricted_namespace: str) -> None:
    weakened = copy.deepcopy(operator_pod())
    weakened["spec"]["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
    with pytest.raises(ApiException) as refused:
        create_dry_run(kube, restricted_namespace, weakened)
    assert refused.value.status == 403
    assert "allowPrivilegeEscalation" in str(refused.value.body)
