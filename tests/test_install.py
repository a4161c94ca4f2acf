"""Installing without a public image: the chart warns while its image is the placeholder,
`make manifests IMAGE=...` swaps in the user's image and nothing else, the README's
install starts by building and pushing the image, and the build script refuses
references the chart cannot take.

Needs `helm` on PATH (`make helm`). No image is built here: images/operator/build.sh is
exercised by the e2e suite (e2e/test_inpod.py) on the image the real node imports.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from manifests import generate as install_generator
from tools.chart_values import CHART_NAME, IMAGE_REPOSITORY

from conftest import ROOT
from llm_operator import __version__

CHART = ROOT / "charts" / CHART_NAME
NOTES = CHART / "templates" / "NOTES.txt"
BUILD_SCRIPT = ROOT / "images" / "operator" / "build.sh"
README = ROOT / "README.md"
YOUR_IMAGE = "registry.example.com/team/llm-operator:9.9.9"


def helm() -> str:
    binary = shutil.which("helm")
    if binary is None:
        pytest.fail("helm is not on PATH: run `make helm` (the Makefile puts it on PATH)")
    return binary


def notes(tmp_path: Path, *values: str) -> str:
    """NOTES.txt as `helm install` would print it: helm template skips NOTES.txt, so a
    copy of the chart renders the same text through a named template."""
    chart = tmp_path / "chart"
    shutil.copytree(CHART, chart)
    text = NOTES.read_text(encoding="utf-8")
    (chart / "templates" / "_notes_under_test.tpl").write_text(
        '{{- define "notes-under-test" -}}\n' + text + "\n{{- end -}}\n", encoding="utf-8"
    )
    (chart / "templates" / "notes-under-test.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes-under-test\n"
        'data:\n  notes: {{ include "notes-under-test" . | toJson }}\n',
        encoding="utf-8",
    )
    done = subprocess.run(
        [helm(), "template", "demo", str(chart), "--namespace", "llm-system",
         "--show-only", "templates/notes-under-test.yaml", *values],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    rendered: dict[str, Any] = yaml.safe_load(done.stdout)
    return str(rendered["data"]["notes"])


# --- NOTES.txt -------------------------------------------------------------------------


def test_notes_warn_while_the_image_is_the_placeholder(tmp_path: Path) -> None:
    text = notes(tmp_path)
    assert text.startswith("WARNING: the operator image is the chart's placeholder")
    assert f"{IMAGE_REPOSITORY}:{__version__}" in text
    assert "make image-push IMAGE=" in text
    assert "--set image.repository=" in text and "--set image.tag=" in text
    # The usual notes follow.
    assert "helm test demo -n llm-system" in text


@pytest.mark.parametrize(
    "values",
    [
        ["--set", "image.repository=registry.example.com/team/llm-operator"],
        ["--set", "operator.replicas=0"],  # no operator pod: nothing to pull
    ],
)
def test_notes_do_not_warn_otherwise(tmp_path: Path, values: list[str]) -> None:
    text = notes(tmp_path, *values)
    assert "WARNING" not in text
    assert text.startswith(f"llm-operator {__version__} is installed in namespace llm-system")


def test_notes_placeholder_is_the_charts_default_repository() -> None:
    # NOTES.txt cannot read the default apart from an override: it names the string.
    match = re.search(r'eq \.Values\.image\.repository "([^"]+)"', NOTES.read_text())
    assert match, "NOTES.txt no longer compares image.repository with the placeholder"
    assert match.group(1) == IMAGE_REPOSITORY


# --- make manifests IMAGE=... ------------------------------------------------------------


def _differences(left: Any, right: Any, path: str = "") -> list[str]:
    if isinstance(left, dict) and isinstance(right, dict):
        found = []
        for key in sorted(set(left) | set(right)):
            found += _differences(left.get(key), right.get(key), f"{path}.{key}")
        return found
    if isinstance(left, list) and isinstance(right, list) and len(left) == len(right):
        pairs = enumerate(zip(left, right, strict=True))
        return [found for i, (a, b) in pairs for found in _differences(a, b, f"{path}[{i}]")]
    return [] if left == right else [path]


def test_manifests_for_your_image_change_only_the_image() -> None:
    placeholder = install_generator.install_manifest()
    yours = install_generator.install_manifest(YOUR_IMAGE)
    assert "is a placeholder" in placeholder and "make manifests IMAGE=" in placeholder
    assert f"operator image\n# {YOUR_IMAGE}" in yours and "placeholder" not in yours
    left = [doc for doc in yaml.safe_load_all(placeholder) if doc]
    right = [doc for doc in yaml.safe_load_all(yours) if doc]
    assert [(d["kind"], d["metadata"]["name"]) for d in left] == [
        (d["kind"], d["metadata"]["name"]) for d in right
    ]
    changed = [
        (doc["kind"], where)
        for doc, other in zip(left, right, strict=True)
        for where in _differences(doc, other)
    ]
    assert changed == [("Deployment", ".spec.template.spec.containers[0].image")]
    (deployment,) = [doc for doc in right if doc["kind"] == "Deployment"]
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == YOUR_IMAGE


@pytest.mark.parametrize(
    "image",
    [
        "llm-operator:0.2.0",  # no registry
        "registry.example.com/team/llm-operator",  # no tag
        "localhost:5000/llm-operator",  # a port is not a tag
        "registry.example.com/team/llm-operator@sha256:" + "a" * 64,
    ],
)
def test_manifests_refuse_an_image_the_chart_cannot_name(image: str) -> None:
    with pytest.raises(ValueError, match="registry/repository:tag"):
        install_generator.split_image(image)


def test_manifests_split_a_registry_port_from_the_tag() -> None:
    assert install_generator.split_image("localhost:5000/team/op:1.2") == (
        "localhost:5000/team/op",
        "1.2",
    )


# --- make image-push ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "message"),
    [
        ("llm-operator:0.2.0", "name a registry and repository"),
        ("registry.example.com/team/llm-operator", "no tag"),
        ("registry.example.com/team/llm-operator@sha256:" + "a" * 64, "not a digest"),
    ],
)
def test_image_push_refuses_a_reference_before_building(image: str, message: str) -> None:
    done = subprocess.run(
        ["bash", str(BUILD_SCRIPT), "push", image],
        capture_output=True, text=True, check=False, timeout=30,
    )  # fmt: skip
    assert done.returncode != 0
    assert message in done.stderr
    assert "buildah" not in done.stderr and "debootstrap" not in done.stderr


def test_build_script_passes_only_build_arguments_the_dockerfile_declares() -> None:
    script = BUILD_SCRIPT.read_text(encoding="utf-8")
    dockerfile = (ROOT / "images" / "operator" / "Dockerfile").read_text(encoding="utf-8")
    declared = set(re.findall(r"^ARG (\w+)", dockerfile, re.MULTILINE))
    passed = set(re.findall(r'--build-arg "?(\w+)=', script))
    assert passed == {"PYTHON_IMAGE", "PIP_NO_INDEX", "PIP_FIND_LINKS"}
    assert passed <= declared


# --- README ------------------------------------------------------------------------------


def console_commands(block: str) -> list[str]:
    """The `$ ` commands of a console block, continuation lines joined, comments cut."""
    commands: list[str] = []
    continued = False
    for line in block.splitlines():
        if continued:
            commands[-1] += " " + line.strip()
        elif line.startswith("$ "):
            commands.append(line[2:])
        else:
            continue
        continued = commands[-1].endswith("\\")
        commands[-1] = commands[-1].removesuffix("\\").rstrip()
    return [command.split("  #", 1)[0].strip() for command in commands]


def test_readme_install_builds_and_pushes_the_image_first() -> None:
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## Install\n", 1)[1].split("\n## ", 1)[0]
    first_block = section.split("```console\n", 1)[1].split("```", 1)[0]
    commands = console_commands(first_block)
    assert commands[0] == "make image"
    assert commands[1].startswith("make image-push IMAGE=")
    install = next(c for c in commands if c.startswith("helm install "))
    assert "--set image.repository=" in install and "--set image.tag=" in install
    assert "no public image" in section.split("```", 1)[0].lower()


def test_readme_upgrade_applies_the_crd_first_then_names_the_new_image() -> None:
    """The Upgrade section, as e2e/test_inpod.py runs it from the previous release: the
    CRD by server-side apply that takes over Helm's fields, then `helm upgrade` with the
    image (given no values, helm would keep the old tag)."""
    text = README.read_text(encoding="utf-8")
    section = text.split("\n### Upgrade\n", 1)[1].split("\n### ", 1)[0]
    commands = console_commands(section.split("```console\n", 1)[1].split("```", 1)[0])
    assert [c.split()[:2] for c in commands] == [["kubectl", "apply"], ["helm", "upgrade"]]
    apply, upgrade = (c.split() for c in commands)
    assert {"--server-side", "--force-conflicts"} <= set(apply), apply
    assert apply[-2:] == ["-f", "charts/llm-operator/crds/"], apply
    assert "--reuse-values" not in upgrade, upgrade
    assert f"image.tag={__version__}" in upgrade and any(
        a.startswith("image.repository=") for a in upgrade
    ), upgrade


def test_readme_install_names_this_version_s_tag() -> None:
    section = README.read_text(encoding="utf-8").split("\n## Install\n", 1)[1]
    commands = console_commands(section.split("```console\n", 1)[1].split("```", 1)[0])
    install = next(c for c in commands if c.startswith("helm install "))
    assert f"--set image.tag={__version__}" in install, install


def test_previous_release_commit_is_at_chart_version_0_1_0() -> None:
    """e2e/node.sh names the previous release by commit; the upgrade test relies on it
    holding chart 0.1.0 (skipped in a clone without that history)."""
    script = (ROOT / "e2e" / "node.sh").read_text(encoding="utf-8")
    match = re.search(r"^PREVIOUS_RELEASE_COMMIT=([0-9a-f]{40})$", script, re.M)
    assert match, "e2e/node.sh names no PREVIOUS_RELEASE_COMMIT (40 hex digits)"
    shown = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{match[1]}:charts/{CHART_NAME}/Chart.yaml"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if shown.returncode != 0:
        pytest.skip(f"commit {match[1]} is not in this clone (shallow?): {shown.stderr.strip()}")
    previous = yaml.safe_load(shown.stdout)
    assert previous["version"] == "0.1.0", previous["version"]
    current = yaml.safe_load((CHART / "Chart.yaml").read_text(encoding="utf-8"))
    assert current["version"] != previous["version"], "the previous release is this version"
