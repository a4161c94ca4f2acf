"""The e2e audit-log reader sees the entries the API server rotated into backups."""

from __future__ import annotations

import importlib.util
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType

AUDIT_PY = Path(__file__).resolve().parent.parent / "e2e" / "audit.py"


def load_audit() -> ModuleType:
    spec = importlib.util.spec_from_file_location("e2e_audit", AUDIT_PY)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def entry(name: str, second: int) -> str:
    return json.dumps(
        {
            "verb": "create",
            "user": {"username": "someone"},
            "objectRef": {"resource": "rayservices", "namespace": "ns", "name": name},
            "requestReceivedTimestamp": f"2026-01-01T00:00:{second:02d}.000000Z",
            "responseStatus": {"code": 201},
        }
    )


def test_rotated_backups_are_read_oldest_first_then_the_current_log(tmp_path: Path) -> None:
    audit = load_audit()
    log = tmp_path / "audit.log"
    # Backups as kube-apiserver names them when it rotates by size.
    (tmp_path / "audit-2026-01-01T00-00-05.000.log").write_text(entry("b", 3) + "\n")
    (tmp_path / "audit-2026-01-01T00-00-02.000.log").write_text(entry("a", 1) + "\n")
    # The last line is still being written: it is not read yet.
    log.write_text(entry("c", 7) + "\n" + entry("d", 8)[:20])
    (tmp_path / "other.log").write_text(entry("x", 9) + "\n")

    names = [write.name for write in audit.writes("ns", log=log)]

    assert names == ["a", "b", "c"]
    since = datetime(2026, 1, 1, 0, 0, 2, tzinfo=UTC)
    assert [write.name for write in audit.writes("ns", since, log=log)] == ["b", "c"]
