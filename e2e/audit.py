"""Reading the local API server's audit log (writes only; see e2e/cluster/audit-policy.yaml).

Shared by the fault-injection tests and bench/scale.py: who wrote what, when, with which
outcome.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

LOG = Path(__file__).resolve().parent.parent / ".e2e" / "logs" / "control-plane" / "audit.log"
# The chart's service account, which the local operator runs as (e2e/cluster.sh).
OPERATOR_USER = "system:serviceaccount:llm-system:llm-operator"
WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})


@dataclass(frozen=True)
class Write:
    at: datetime
    user: str
    verb: str
    resource: str  # with its subresource: "llmdeployments/status"
    namespace: str
    name: str
    code: int
    source: str = ""  # the client's address: which replica, when several share a user

    @property
    def succeeded(self) -> bool:
        return 200 <= self.code < 300


def log_files(log: Path = LOG) -> list[Path]:
    """The current log and the backups the API server rotated it into, oldest first.

    The API server rotates its audit log by size (`--audit-log-maxsize`) into backups
    named `audit-<timestamp>.log` beside it; timestamps sort as text, and the current
    file holds the newest entries. A reader of the current file alone loses every entry
    written before the last rotation.
    """
    backups = sorted(log.parent.glob(f"{log.stem}-*{log.suffix}"))
    return [*backups, log]


def entries(log: Path = LOG) -> Iterator[dict[str, Any]]:
    for path in log_files(log):
        with path.open(encoding="utf-8") as lines:
            for line in lines:
                # The API server may be writing the last line as we read it.
                if line.endswith("\n"):
                    yield json.loads(line)


def writes(namespace: str, since: datetime | None = None, log: Path = LOG) -> Iterator[Write]:
    """Every audited write in `namespace`, oldest first."""
    for entry in entries(log):
        ref = entry.get("objectRef") or {}
        if entry.get("verb") not in WRITE_VERBS or ref.get("namespace") != namespace:
            continue
        at = datetime.fromisoformat(entry["requestReceivedTimestamp"])
        if since is not None and at < since:
            continue
        subresource = ref.get("subresource")
        yield Write(
            at=at,
            user=entry["user"]["username"],
            verb=entry["verb"],
            resource=ref["resource"] + (f"/{subresource}" if subresource else ""),
            namespace=namespace,
            name=ref.get("name", ""),
            code=int((entry.get("responseStatus") or {}).get("code", 0)),
            source=(entry.get("sourceIPs") or [""])[0],
        )


def accesses(
    user: str = OPERATOR_USER, since: datetime | None = None, log: Path = LOG
) -> set[tuple[str, str, str]]:
    """(API group, resource with subresource, verb) of every request `user` made, as the
    audit log recorded it: to compare with what the chart's role grants (the unit test
    tests/test_rbac.py derives the same from the code).

    The local policy (e2e/cluster/audit-policy.yaml) records writes only; reads (get,
    list, watch) show up only under a policy that records them at Metadata level.
    """
    found = set()
    for entry in entries(log):
        if entry.get("user", {}).get("username") != user:
            continue
        if since is not None and datetime.fromisoformat(entry["requestReceivedTimestamp"]) < since:
            continue
        ref = entry.get("objectRef") or {}
        if "resource" not in ref:
            continue  # a non-resource request (discovery)
        subresource = ref.get("subresource")
        resource = ref["resource"] + (f"/{subresource}" if subresource else "")
        found.add((ref.get("apiGroup", ""), resource, entry["verb"]))
    return found
