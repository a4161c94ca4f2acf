"""What lifts a pod out of its confinement, found anywhere in a manifest or a pod.

The checks are the tests' own, not the operator's: the annotation prefixes are typed
again here rather than read from `llm_operator.api.constants`, so a mistake there
cannot hide itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

Body = dict[str, Any]

# Annotations the kubelet and the API server read as a container's confinement.
CONFINEMENT_ANNOTATIONS = (
    "container.apparmor.security.beta.kubernetes.io/",
    "container.seccomp.security.alpha.kubernetes.io/",
    "seccomp.security.alpha.kubernetes.io/pod",
)
# Fields that, set to true, give a container privilege or a share of the host.
HOST_FLAGS = frozenset(
    {"privileged", "allowPrivilegeEscalation", "hostNetwork", "hostPID", "hostIPC", "hostProcess"}
)


def walk(node: Any, path: str = "") -> Iterator[tuple[str, str, Any]]:
    """Every (path, key, value) of the mappings in `node`; strings are not parsed."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield path, str(key), value
            yield from walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for index, item in enumerate(node):
            yield from walk(item, f"{path}[{index}]")


def reaches_out(key: str, value: Any) -> bool:
    """Whether one field of a manifest or pod lifts the pod's confinement."""
    return (
        (key in HOST_FLAGS and value is True)
        or (key == "capabilities" and isinstance(value, dict) and bool(value.get("add")))
        or (key == "hostPath" and isinstance(value, dict))
        or (key == "hostPort" and isinstance(value, int) and value > 0)
        or (key == "procMount" and value == "Unmasked")
        or (key == "sysctls" and bool(value))
        or (
            key in ("seccompProfile", "appArmorProfile")
            and isinstance(value, dict)
            and value.get("type") == "Unconfined"
        )
    )


def escapes(node: Any) -> list[str]:
    """Everything in `node` (a manifest or a pod) that reaches past the pod's confinement."""
    found = []
    for path, key, value in walk(node):
        where = f"{path}.{key}"
        if reaches_out(key, value):
            found.append(where)
        elif key == "annotations" and isinstance(value, dict):
            found.extend(
                f"{where}.{name}={text}"
                for name, text in value.items()
                if name.startswith(CONFINEMENT_ANNOTATIONS)
            )
    return found


def foreign_namespaces(node: Any, namespace: str) -> list[str]:
    """Every `namespace` field in `node` that names another namespace."""
    return [
        f"{path}.namespace={value}"
        for path, key, value in walk(node)
        if key == "namespace" and value != namespace
    ]
