"""The container images, checked without a container engine: hadolint on both Dockerfiles,
then the properties the chart and the operator rely on, read with a Dockerfile parser.

Operator image: pinned slim Python base, wheel built in a build stage, final stage free of
build tools, non-root uid/gid 65532 (the chart's runAsUser), `llm-operator run`; pip uses
PyPI unless build arguments point it at local wheels (images/operator/build.sh does).
Ray LLM image: Ray version and tag form equal to the operator's defaults, Ray's own user.

Each checker returns a list of problems, so the tests at the end can feed it broken
Dockerfiles and show it rejects them.
"""

from __future__ import annotations

import io
import json
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from dockerfile_parse import DockerfileParser

from llm_operator import __version__
from llm_operator.settings import DEFAULT_RAY_IMAGE, DEFAULT_RAY_VERSION

ROOT = Path(__file__).resolve().parent.parent
OPERATOR_DOCKERFILE = ROOT / "images" / "operator" / "Dockerfile"
RAY_DOCKERFILE = ROOT / "images" / "ray-llm" / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

OPERATOR_UID = 65532  # charts/llm-operator/templates/deployment.yaml runAsUser/runAsGroup
RAY_USERS = {"1000", "ray"}  # the rayproject images' own non-root user
OPERATOR_PORTS = {"8080", "9090"}  # kopf liveness, Prometheus metrics (chart defaults)
REQUIRED_LABELS = (
    "org.opencontainers.image.title",
    "org.opencontainers.image.source",
    "org.opencontainers.image.licenses",
    "org.opencontainers.image.version",
)

# name[:tag][@sha256:digest]; registry hosts with a port are not used here.
_IMAGE_REF = re.compile(
    r"^(?P<name>[a-z0-9][a-z0-9._/-]*)"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?"
    r"(?:@(?P<digest>[a-z0-9]+:[A-Za-z0-9]+))?$"
)
_BUILD_TOOLS = re.compile(
    r"(?<![\w.-])(gcc|g\+\+|clang|cc|make|cmake|build-essential|[\w.-]*-dev|"
    r"pip[\d.]*\s+wheel|-m\s+build|pip[\d.]*\s+install\b[^;&|]*\b(build|setuptools|wheel)\b)"
    r"(?![\w.-])"
)
_RAY_EXTRA = re.compile(r"\[[^\]]*\bray\b[^\]]*\]")


@dataclass
class Stage:
    """One FROM ... up to the next FROM."""

    image: str  # as resolved from ARG defaults
    from_value: str  # the FROM line as written
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def values(self, instruction: str) -> list[str]:
        return [value for name, value in self.instructions if name == instruction]

    def args(self) -> dict[str, str]:
        """ARG name -> default ("" when it has none)."""
        return dict(_arg(value) for value in self.values("ARG"))


def _arg(value: str) -> tuple[str, str]:
    key, _, default = value.partition("=")
    return key.strip(), default.strip().strip('"')


@dataclass
class Dockerfile:
    stages: list[Stage]
    global_args: dict[str, str]
    labels: dict[str, str]  # final stage, variables resolved
    envs: dict[str, str]  # final stage, variables resolved

    @property
    def final(self) -> Stage:
        return self.stages[-1]


def parse(text: str) -> Dockerfile:
    parser = DockerfileParser(fileobj=io.BytesIO(text.encode("utf-8")))
    images = iter(parser.parent_images)
    stages: list[Stage] = []
    global_args: dict[str, str] = {}
    for item in parser.structure:
        name, value = item["instruction"], item["value"]
        if name == "COMMENT":
            continue
        if name == "FROM":
            stages.append(Stage(image=next(images), from_value=value))
        elif stages:
            stages[-1].instructions.append((name, value))
        elif name == "ARG":
            key, default = _arg(value)
            global_args[key] = default
    return Dockerfile(stages, global_args, dict(parser.labels), dict(parser.envs))


def image_problems(ref: str) -> list[str]:
    """A base image must name a release: a version tag (not `latest`), optionally a digest."""
    match = _IMAGE_REF.match(ref)
    if "$" in ref or not match:
        return [f"{ref!r}: not a resolvable image reference"]
    tag, digest = match["tag"], match["digest"]
    problems = []
    if tag is None:
        problems.append(f"{ref!r}: no tag")
    elif tag == "latest" or not re.search(r"\d+\.\d+", tag):
        problems.append(f"{ref!r}: tag {tag!r} is not a version")
    if digest is not None and not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
        problems.append(f"{ref!r}: malformed digest")
    return problems


def label_problems(dockerfile: Dockerfile, version: str) -> list[str]:
    labels = dockerfile.labels
    problems = [f"label {key} missing" for key in REQUIRED_LABELS if not labels.get(key)]
    if labels.get("org.opencontainers.image.licenses", "Apache-2.0") != "Apache-2.0":
        problems.append("license label is not Apache-2.0")
    if labels.get("org.opencontainers.image.version", version) != version:
        problems.append(f"version label is not {version}")
    source = labels.get("org.opencontainers.image.source", "https://")
    if not source.startswith("https://"):
        problems.append("source label is not a URL")
    return problems


def _exec_form(value: str) -> list[str] | None:
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        return None
    return parsed if isinstance(parsed, list) else None


def operator_problems(text: str) -> list[str]:
    dockerfile = parse(text)
    if len(dockerfile.stages) < 2:
        return ["not a multi-stage build"]
    problems = [p for stage in dockerfile.stages for p in image_problems(stage.image)]
    build, final = dockerfile.stages[0], dockerfile.final
    if not build.image.startswith("python:3.11") or "-slim-" not in build.image:
        problems.append(f"build stage base {build.image!r} is not a python:3.11 slim image")
    if final.image != build.image:
        problems.append("final stage does not use the build stage's base image")
    if not any(
        re.search(r"pip\s+wheel\b.*--no-deps|-m\s+build\b", run) for run in build.values("RUN")
    ):
        problems.append("build stage does not build the project's wheel")
    problems += _operator_final_stage_problems(dockerfile)
    problems += _pip_source_problems(dockerfile)
    problems += label_problems(dockerfile, __version__)
    return problems


_OFF = frozenset({"", "0", "false", "no", "off"})
PIP_SOURCE_ARGS = ("PIP_NO_INDEX", "PIP_FIND_LINKS")


def _pip_source_problems(dockerfile: Dockerfile) -> list[str]:
    """Where pip finds packages: PyPI unless the build says otherwise, through build
    arguments (so a registry-free build, images/operator/build.sh, can point every pip
    at local wheels) and never through ENV (which would stay in the image)."""
    problems = []
    defaults = dockerfile.global_args
    if defaults.get("PIP_NO_INDEX", "missing").lower() not in _OFF:
        problems.append("PIP_NO_INDEX default is not off: a plain build would not use PyPI")
    if defaults.get("PIP_FIND_LINKS", "missing") != "":
        problems.append("PIP_FIND_LINKS default is not empty")
    for index, stage in enumerate(dockerfile.stages):
        runs_pip = any(re.search(r"\bpip\b", run) for run in stage.values("RUN"))
        if runs_pip and (missing := sorted(set(PIP_SOURCE_ARGS) - set(stage.args()))):
            problems.append(f"stage {index} runs pip without ARG {', '.join(missing)}")
    for key in (*PIP_SOURCE_ARGS, "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL"):
        if key in dockerfile.envs:
            problems.append(f"ENV sets {key}: it would stay in the image")
    return problems


def _operator_final_stage_problems(dockerfile: Dockerfile) -> list[str]:
    final, problems = dockerfile.final, []
    final_runs = final.values("RUN")
    for run in final_runs:
        if tool := _BUILD_TOOLS.search(run):
            problems.append(f"final stage uses build tooling: {tool.group(0)!r}")
        if _RAY_EXTRA.search(run):
            problems.append("final stage installs the ray extra")
    if not any(re.search(r"pip\s+install\b.*\.whl", run) for run in final_runs):
        problems.append("final stage does not install the built wheel")

    users = final.values("USER")
    if not users or users[-1] != f"{OPERATOR_UID}:{OPERATOR_UID}":
        problems.append(f"final USER is {users[-1:]}, not {OPERATOR_UID}:{OPERATOR_UID}")
    if _exec_form((final.values("ENTRYPOINT") or [""])[-1]) != ["llm-operator"]:
        problems.append('ENTRYPOINT is not ["llm-operator"]')
    if _exec_form((final.values("CMD") or [""])[-1]) != ["run"]:
        problems.append('CMD is not ["run"]')
    exposed = {port for value in final.values("EXPOSE") for port in value.split()}
    if missing := OPERATOR_PORTS - exposed:
        problems.append(f"ports not exposed: {sorted(missing)}")
    for env in ("PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED"):
        if dockerfile.envs.get(env) != "1":
            problems.append(f"{env} is not 1")
    return problems


def ray_problems(text: str) -> list[str]:
    dockerfile = parse(text)
    if len(dockerfile.stages) != 1:
        return ["expected a single stage"]
    stage = dockerfile.final
    problems = image_problems(stage.image)
    version = dockerfile.global_args.get("RAY_VERSION")
    if version != DEFAULT_RAY_VERSION:
        problems.append(f"RAY_VERSION default {version!r} is not {DEFAULT_RAY_VERSION}")
    # Same tag form as the operator's default, with the version taken from the ARG.
    template = DEFAULT_RAY_IMAGE.replace(DEFAULT_RAY_VERSION, "${RAY_VERSION}")
    if stage.from_value.split()[0] != template:
        problems.append(f"FROM {stage.from_value!r} is not {template!r}")
    if stage.image != DEFAULT_RAY_IMAGE:
        problems.append(f"base image {stage.image!r} is not {DEFAULT_RAY_IMAGE!r}")
    if stage.args().get("EXTRA_PIP_PACKAGES", "missing") != "":
        problems.append("no EXTRA_PIP_PACKAGES build argument defaulting to empty")
    if not any(
        "--no-cache-dir" in run and "EXTRA_PIP_PACKAGES" in run for run in stage.values("RUN")
    ):
        problems.append("EXTRA_PIP_PACKAGES is not installed with pip --no-cache-dir")
    users = stage.values("USER")
    if not users or users[-1] not in RAY_USERS:
        problems.append(f"final USER is {users[-1:]}, not Ray's own user (1000)")
    problems += label_problems(dockerfile, version or "")
    return problems


# --- .dockerignore -------------------------------------------------------------------------


def _ignore_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern as a regex (`**` spans directories, `*` and `?` do not)."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[" and "]" in pattern[i:]:
            end = pattern.index("]", i)
            out.append(pattern[i : end + 1])
            i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + "$")


def context_excludes(dockerignore: str, path: str) -> bool:
    """Whether the build context leaves `path` out: the last pattern that matches the path or
    one of its parent directories decides, `!` re-includes."""
    parts = path.split("/")
    candidates = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    excluded = False
    for raw in dockerignore.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        regex = _ignore_regex(line.lstrip("!").strip("/"))
        if any(regex.match(candidate) for candidate in candidates):
            excluded = not negate
    return excluded


# Large or private directories that must never be sent to the builder.
KEPT_OUT = (
    ".venv/bin/python",
    ".git/HEAD",
    ".e2e/bin/helm",
    "operator/src/llm_operator/__pycache__/cli.cpython-311.pyc",
    "operator/src/llm_operator.egg-info/PKG-INFO",
)


def copied_files() -> list[str]:
    """Every file the operator build stage COPYs from the context, relative to the root."""
    sources = []
    for value in parse(OPERATOR_DOCKERFILE.read_text(encoding="utf-8")).stages[0].values("COPY"):
        words = [word for word in shlex.split(value) if not word.startswith("--")]
        sources += words[:-1]
    files = []
    for source in sources:
        path = ROOT / source
        candidates = sorted(path.rglob("*")) if path.is_dir() else [path]
        files += [
            p.relative_to(ROOT).as_posix()
            for p in candidates
            if p.is_file() and "__pycache__" not in p.parts and ".egg-info" not in str(p)
        ]
    return files


def dockerignore_problems(dockerignore: str, needed: list[str]) -> list[str]:
    problems = [f"{path} is sent" for path in KEPT_OUT if not context_excludes(dockerignore, path)]
    problems += [f"{path} is left out" for path in needed if context_excludes(dockerignore, path)]
    return problems


# --- hadolint ------------------------------------------------------------------------------


def hadolint(target: Path | str, tmp_path: Path) -> tuple[int, list[dict[str, object]]]:
    """Run the pinned hadolint on a file (Path) or on Dockerfile text (str); every finding,
    down to style, fails. HOME points at tmp_path so no personal config weakens it."""
    binary = Path(sys.executable).with_name("hadolint")
    found = str(binary) if binary.exists() else shutil.which("hadolint")
    if found is None:
        pytest.fail("hadolint not found: install the dev extra (pip install -e '.[dev]')")
    is_text = isinstance(target, str)
    options = ["--no-color", "--format", "json", "--failure-threshold", "style"]
    result = subprocess.run(
        [found, *options, "-" if is_text else str(target)],
        input=target if is_text else None,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={
            "PATH": "/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "HOME": str(tmp_path),
            "XDG_CONFIG_HOME": str(tmp_path),
        },
        timeout=60,
        check=False,
    )
    assert result.stdout.strip(), result.stderr
    return result.returncode, json.loads(result.stdout)


# --- tests ---------------------------------------------------------------------------------

DOCKERFILES = {"operator": OPERATOR_DOCKERFILE, "ray-llm": RAY_DOCKERFILE}


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_hadolint_clean(name: str, tmp_path: Path) -> None:
    status, findings = hadolint(DOCKERFILES[name], tmp_path)
    assert findings == []
    assert status == 0


def test_hadolint_rejects_a_bad_dockerfile(tmp_path: Path) -> None:
    status, findings = hadolint("FROM python:latest\nRUN pip install requests\n", tmp_path)
    assert status != 0
    assert {"DL3007", "DL3013", "DL3042"} <= {finding["code"] for finding in findings}


def test_operator_dockerfile() -> None:
    assert operator_problems(OPERATOR_DOCKERFILE.read_text(encoding="utf-8")) == []


def test_ray_dockerfile() -> None:
    assert ray_problems(RAY_DOCKERFILE.read_text(encoding="utf-8")) == []


def test_dockerignore() -> None:
    needed = copied_files()
    assert "pyproject.toml" in needed
    assert "operator/src/llm_operator/__init__.py" in needed
    assert dockerignore_problems(DOCKERIGNORE.read_text(encoding="utf-8"), needed) == []


@pytest.mark.parametrize(
    ("ref", "ok"),
    [
        ("python:3.11.16-slim-trixie@sha256:" + "ab" * 32, True),
        ("rayproject/ray-llm:2.60.0-py311-cu128", True),
        ("python", False),
        ("python:latest", False),
        ("python:slim", False),
        ("python:3.11-slim@sha256:abc", False),
        ("${PYTHON_IMAGE}", False),
    ],
)
def test_image_pinning(ref: str, ok: bool) -> None:
    assert (image_problems(ref) == []) is ok


def _replace(old: str, new: str) -> Callable[[str], str]:
    def mutate(text: str) -> str:
        assert old in text, f"mutation no longer applies: {old!r}"
        return text.replace(old, new)

    return mutate


def _add_to_final_stage(line: str) -> Callable[[str], str]:
    return _replace("\nUSER 65532:65532", f"\n{line}\nUSER 65532:65532")


def _final_stage_only(text: str) -> str:
    head, _, final = text.rpartition("\nFROM ${PYTHON_IMAGE}\n")
    assert head
    return head.split("\nFROM ")[0] + "\nFROM ${PYTHON_IMAGE}\n" + final


PINNED_ARG = re.compile(r"^ARG PYTHON_IMAGE=.*$", re.MULTILINE)

OPERATOR_BREAKAGES = {
    "root user": (_replace("USER 65532:65532", "USER root"), "final USER"),
    "uid without gid": (_replace("USER 65532:65532", "USER 65532"), "final USER"),
    "no user": (_replace("USER 65532:65532\n", ""), "final USER"),
    "latest base": (
        lambda text: PINNED_ARG.sub("ARG PYTHON_IMAGE=python:latest", text),
        "is not a version",
    ),
    "other final base": (
        _replace("\nFROM ${PYTHON_IMAGE}\n", "\nFROM python:3.12.1-slim-trixie\n"),
        "build stage's base image",
    ),
    "single stage": (_final_stage_only, "multi-stage"),
    "no wheel build": (_replace("pip wheel --no-deps", "pip install"), "project's wheel"),
    "gcc": (_add_to_final_stage("RUN apt-get install -y --no-install-recommends gcc"), "gcc"),
    "build-essential": (
        _add_to_final_stage("RUN apt-get install -y build-essential"),
        "build-essential",
    ),
    "pip wheel": (_add_to_final_stage("RUN pip wheel --no-deps ."), "build tooling"),
    "python -m build": (_add_to_final_stage("RUN python -m build"), "build tooling"),
    "ray extra": (_replace("llm_operator-*.whl", "llm_operator-*.whl[ray]"), "ray extra"),
    "entrypoint": (
        _replace('ENTRYPOINT ["llm-operator"]', 'ENTRYPOINT ["python", "-m", "llm_operator"]'),
        "ENTRYPOINT",
    ),
    "shell-form entrypoint": (
        _replace('ENTRYPOINT ["llm-operator"]', "ENTRYPOINT llm-operator"),
        "ENTRYPOINT",
    ),
    "cmd": (_replace('CMD ["run"]', 'CMD ["render"]'), "CMD"),
    "metrics port": (_replace("EXPOSE 8080 9090", "EXPOSE 8080"), "9090"),
    "buffered": (_replace("PYTHONUNBUFFERED=1", "PYTHONUNBUFFERED=0"), "PYTHONUNBUFFERED"),
    "license": (_replace('licenses="Apache-2.0"', 'licenses="MIT"'), "Apache-2.0"),
    "version": (_replace("ARG VERSION=", "ARG VERSION=9"), "version label"),
    "offline by default": (
        _replace("ARG PIP_NO_INDEX=0", "ARG PIP_NO_INDEX=1"),
        "PIP_NO_INDEX default",
    ),
    "local wheels by default": (
        _replace('ARG PIP_FIND_LINKS=""', "ARG PIP_FIND_LINKS=/mnt"),
        "PIP_FIND_LINKS default",
    ),
    "build stage deaf to the wheels": (
        _replace("AS build\nARG PIP_NO_INDEX\nARG PIP_FIND_LINKS\n", "AS build\n"),
        "stage 0 runs pip without ARG PIP_FIND_LINKS, PIP_NO_INDEX",
    ),
    "pip source in ENV": (_add_to_final_stage("ENV PIP_NO_INDEX=1"), "ENV sets PIP_NO_INDEX"),
}


@pytest.mark.parametrize("case", sorted(OPERATOR_BREAKAGES))
def test_operator_checker_rejects(case: str) -> None:
    mutate, expected = OPERATOR_BREAKAGES[case]
    problems = operator_problems(mutate(OPERATOR_DOCKERFILE.read_text(encoding="utf-8")))
    assert any(expected in problem for problem in problems), problems


RAY_BREAKAGES = {
    "other ray version": (
        _replace(f"ARG RAY_VERSION={DEFAULT_RAY_VERSION}", "ARG RAY_VERSION=2.59.0"),
        "RAY_VERSION default",
    ),
    "other tag form": (_replace("-py311-cu128", "-py310-cu121"), "is not"),
    "latest": (
        _replace("ray-llm:${RAY_VERSION}-py311-cu128", "ray-llm:latest"),
        "is not a version",
    ),
    "root user": (_replace("USER 1000", "USER root"), "final USER"),
    "no user": (_replace("USER 1000\n", ""), "final USER"),
    "pip cache": (_replace("--no-cache-dir ", ""), "--no-cache-dir"),
    "no extra packages arg": (_replace('ARG EXTRA_PIP_PACKAGES=""', ""), "EXTRA_PIP_PACKAGES"),
    "no license label": (
        _replace('org.opencontainers.image.licenses="Apache-2.0"', "a=b"),
        "licenses missing",
    ),
}


@pytest.mark.parametrize("case", sorted(RAY_BREAKAGES))
def test_ray_checker_rejects(case: str) -> None:
    mutate, expected = RAY_BREAKAGES[case]
    problems = ray_problems(mutate(RAY_DOCKERFILE.read_text(encoding="utf-8")))
    assert any(expected in problem for problem in problems), problems


def test_dockerignore_checker_rejects() -> None:
    needed = copied_files()
    assert ".venv/bin/python is sent" in dockerignore_problems("", needed)
    everything_out = dockerignore_problems("*\n!pyproject.toml\n", needed)
    assert "operator/src/llm_operator/__init__.py is left out" in everything_out
    assert "operator/src/llm_operator/__pycache__/cli.cpython-311.pyc is sent" in (
        dockerignore_problems("*\n!operator/src\n", needed)
    )
