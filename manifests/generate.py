"""manifests/install.yaml: the chart rendered with its defaults, plus a namespace that
enforces the restricted Pod Security level, for `kubectl apply --server-side`.

    python manifests/generate.py --out manifests/install.yaml      # `make manifests`
    python manifests/generate.py --image REF --out dist/install.yaml
                                             # `make manifests IMAGE=REF`: your image

The chart's image is a placeholder (no public image is published); the second form
names the image you built and pushed (`make image`, `make image-push IMAGE=REF`) and
changes nothing else. tests/test_chart.py checks that the committed file is the first
form's output, and that the second differs from it only there.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml
from tools.chart_values import CHART_NAME, IMAGE_REPOSITORY

from llm_operator import __version__, yamlio

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / CHART_NAME
NAMESPACE = "llm-system"
# helm built from source reports an old default Kubernetes version; render for ours.
KUBE_VERSION = "1.36.3"
PLACEHOLDER_IMAGE = f"{IMAGE_REPOSITORY}:{__version__}"
EXAMPLE_IMAGE = f"registry.example.com/team/{CHART_NAME}:{__version__}"


def split_image(image: str) -> tuple[str, str]:
    """registry/repository:tag -> (registry/repository, tag); a tag is required, a
    digest is not accepted (the chart joins image.repository and image.tag)."""
    name = image.rsplit("/", 1)[-1]
    if "@" in image or ":" not in name or "/" not in image:
        raise ValueError(f"{image!r}: expected registry/repository:tag, e.g. {EXAMPLE_IMAGE}")
    repository, tag = image.rsplit(":", 1)
    return repository, tag


def header(image: str | None) -> str:
    if image is None:
        return (
            "# llm-operator install manifest: `kubectl apply --server-side -f install.yaml`.\n"
            "# Generated from charts/llm-operator with default values (`make generate`).\n"
            f"# The operator image it names, {PLACEHOLDER_IMAGE}, is a placeholder:\n"
            "# no public image is published. Build and push your own (`make image`, then\n"
            f"# `make image-push IMAGE={EXAMPLE_IMAGE}`); then\n"
            f"# `make manifests IMAGE={EXAMPLE_IMAGE}` writes\n"
            "# dist/install.yaml, this file with that image.\n"
        )
    return (
        "# llm-operator install manifest: `kubectl apply --server-side -f install.yaml`.\n"
        "# Generated from charts/llm-operator with default values and the operator image\n"
        f"# {image} (`make manifests IMAGE={image}`).\n"
    )


def render(*values: str, helm: str | None = None) -> list[dict[str, Any]]:
    binary = helm or shutil.which("helm")
    if binary is None:
        raise SystemExit("helm is not on PATH: run `make helm` (the Makefile puts it on PATH)")
    done = subprocess.run(
        [binary, "template", CHART_NAME, str(CHART), "--namespace", NAMESPACE,
         "--kube-version", KUBE_VERSION, "--include-crds", "--skip-tests", *values],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"helm template failed: {done.stderr}")
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def install_manifest(image: str | None = None, helm: str | None = None) -> str:
    """The install manifest, with the chart's placeholder image or with `image`."""
    values: list[str] = []
    if image is not None:
        repository, tag = split_image(image)
        values = ["--set", f"image.repository={repository}", "--set", f"image.tag={tag}"]
    namespace = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": NAMESPACE, "labels": {
            "pod-security.kubernetes.io/enforce": "restricted"}},
    }  # fmt: skip
    return header(image) + yamlio.dump_all([namespace, *render(*values, helm=helm)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image", help=f"your operator image, e.g. {EXAMPLE_IMAGE}")
    parser.add_argument("--out", type=Path, required=True, help="file to write")
    args = parser.parse_args(argv)
    try:
        text = install_manifest(args.image)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out}: kubectl apply --server-side -f {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
