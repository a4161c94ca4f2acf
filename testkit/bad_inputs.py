"""The bad-input corpus's file format (e2e/bad_inputs/README.md): `# key: value` header
lines, and `<<N x c>>` markers that stand for c repeated N times."""

from __future__ import annotations

import re
from pathlib import Path

REPEAT = re.compile(r"<<(\d+) x (\S)>>")


def header(path: Path, key: str) -> str | None:
    """The value of the file's `# key: value` line, if it has one."""
    found = re.search(rf"^# {key}: (.+)$", path.read_text(encoding="utf-8"), re.MULTILINE)
    return found.group(1).strip() if found else None


def expected_field(path: Path) -> str:
    """The field the refusal must name: the first word of `# expect:`."""
    field = header(path, "expect")
    assert field, f"{path.name} has no '# expect: <field>' line"
    return field.split()[0]


def expand(text: str) -> str:
    """`text` with every `<<N x c>>` marker replaced by c repeated N times."""
    return REPEAT.sub(lambda m: m.group(2) * int(m.group(1)), text)
