"""Write every generated file of the repository: `make generate` (alias `make golden`).

    python -m tools.generate            # write what changed, name each file written
    python -m tools.generate --check    # write nothing; exit 1 naming what is stale

The files: each golden case's expected.yaml (the render of its input.yaml), the CRD
(manifests/crds and the chart's crds/), the chart's values.yaml and values.schema.json,
the README's values table and manifests/install.yaml (helm must be on PATH: the
Makefile puts the pinned one there). tests/test_generated.py compares every one of
them with what this module produces; the tests never write.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path

from manifests import generate as install_manifest
from tools.chart_values import CHART_NAME, values_schema_json, values_table, values_yaml

from llm_operator import yamlio
from llm_operator.api.crd import build_crd
from llm_operator.api.validation import resolve
from llm_operator.render import render
from llm_operator.settings import OperatorSettings

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests" / "golden"
CHART = ROOT / "charts" / CHART_NAME
README = ROOT / "README.md"
CRD_FILE = "llmops.dev_llmdeployments.yaml"
TABLE_START, TABLE_END = "<!-- values-table:start -->\n", "<!-- values-table:end -->"

Generator = Callable[[], str]


def golden_cases() -> list[str]:
    return sorted(p.name for p in GOLDEN.iterdir() if (p / "input.yaml").exists())


def golden_expected(case: str) -> str:
    """The children a golden case's input renders to, with the operator's defaults."""
    (document,) = yamlio.load_all((GOLDEN / case / "input.yaml").read_text(encoding="utf-8"))
    return yamlio.dump_all(render(resolve(document), OperatorSettings()))


def crd() -> str:
    return yamlio.dump(build_crd())


def readme() -> str:
    """README.md with its values table, between the markers, made from the chart's model."""
    text = README.read_text(encoding="utf-8")
    before, found, rest = text.partition(TABLE_START)
    _, end, after = rest.partition(TABLE_END)
    if not (found and end):
        raise ValueError(f"README.md lacks {TABLE_START.strip()} ... {TABLE_END}")
    return before + TABLE_START + values_table() + TABLE_END + after


def install_yaml() -> str:
    """manifests/install.yaml (manifests/generate.py, which `make manifests` also runs
    for a user's image)."""
    return install_manifest.install_manifest()


def generators() -> dict[Path, Generator]:
    """Every generated file and how to make it, without making it yet (one needs helm)."""
    files: dict[Path, Generator] = {
        GOLDEN / case / "expected.yaml": partial(golden_expected, case) for case in golden_cases()
    }
    files[ROOT / "manifests" / "crds" / CRD_FILE] = crd
    files[CHART / "crds" / CRD_FILE] = crd
    files[CHART / "values.yaml"] = values_yaml
    files[CHART / "values.schema.json"] = values_schema_json
    files[README] = readme
    files[ROOT / "manifests" / "install.yaml"] = install_yaml
    return files


def stale(*, write: bool = False) -> list[tuple[Path, str]]:
    """The generated files whose content differs from what they should hold, with it.

    With `write`, each is written before the next is made: install.yaml is rendered by
    helm from the chart's CRD file, so it must see the CRD just written, not the old one.
    """
    out: list[tuple[Path, str]] = []
    for path, make in generators().items():
        wanted = make()
        if not path.exists() or path.read_text(encoding="utf-8") != wanted:
            out.append((path, wanted))
            if write:
                path.write_text(wanted, encoding="utf-8")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if stale")
    args = parser.parse_args(argv)
    changed = stale(write=not args.check)
    for path, _ in changed:
        name = path.relative_to(ROOT)
        print(f"stale: {name}" if args.check else f"wrote {name} (review the diff)")
    if not changed:
        print(f"{len(generators())} generated files, all current")
    return 1 if args.check and changed else 0


if __name__ == "__main__":
    sys.exit(main())
