"""YAML in and out: safe loading with a size cap, readable multi-line output."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import yaml

# A Kubernetes object as plain data: what render builds, the controller sends and this
# module reads and writes.
Manifest = dict[str, Any]

# A spec is a few KiB; anything far larger is a mistake or an attack (YAML bombs).
MAX_DOCUMENT_BYTES = 1024 * 1024


class _Dumper(yaml.SafeDumper):
    """Block style for multi-line strings, so serveConfigV2 reads as YAML."""


def _str_representer(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str_representer)


def dump(document: Any) -> str:
    return yaml.dump(document, Dumper=_Dumper, sort_keys=False, default_flow_style=False)


def dump_all(documents: Iterable[Any]) -> str:
    return yaml.dump_all(documents, Dumper=_Dumper, sort_keys=False, default_flow_style=False)


class _CappedLoader(yaml.SafeLoader):
    """Safe loader that refuses alias expansion beyond a small budget (billion laughs) and
    nesting beyond a depth no spec needs (the composer recurses: deep input would exhaust
    Python's stack)."""

    max_aliases = 16
    max_depth = 64

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._aliases = 0
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > self.max_aliases:
                raise yaml.YAMLError(
                    f"more than {self.max_aliases} YAML aliases; refusing to expand"
                )
        self._depth += 1
        try:
            if self._depth > self.max_depth:
                raise yaml.YAMLError(
                    f"nested deeper than {self.max_depth} levels; refusing to read further"
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def load_all(text: str) -> list[Any]:
    if len(text.encode()) > MAX_DOCUMENT_BYTES:
        raise yaml.YAMLError(f"input is larger than {MAX_DOCUMENT_BYTES} bytes")
    return [doc for doc in yaml.load_all(text, Loader=_CappedLoader) if doc is not None]
