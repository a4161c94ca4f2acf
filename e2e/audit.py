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

    @property
    def succeeded(self) -> bool:
        return 200 <= self.code < 300


def writes(namespace: str, since: datetime | None = None, log: Path = LOG) -> Iterator[Write]:
    """Every audited write in `namespace`, oldest first."""
    with log.open(encoding="utf-8") as lines:
        for line in lines:
            entry = json.loads(line)
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
            )
