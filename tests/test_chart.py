"""The Helm chart: generated values and schema, lint, every ci/ scenario rendered and
checked (restricted pod security, least-privilege RBAC, arguments the CLI accepts), bad
values refused, and manifests/install.yaml generated from it without drift.

Needs `helm` on PATH (`make helm` builds the pinned one; the Makefile puts it first).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from manifests import generate as install_generator
from tools.chart_values import (
    CHART_NAME,
)

from conftest import ROOT
from llm_operator import __version__
from llm_operator.cli import build_parser
from llm_operator.settings import OperatorSettings
from llm_operator.yamlio import Manifest

CHART = ROOT / "charts" / CHART_NAME
INSTALL_YAML = ROOT / "manifests" / "install.yaml"
# helm built from source reports an old default Kubernetes version; render for ours.
KUBE_VERSION = "1.36.3"
INSTALL_NAMESPACE = "llm-system"
SCENARIOS = sorted(p.name for p in (CHART / "ci").glob("*-values.yaml"))


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("helm")
    if binary is None:
        pytest.fail("helm is not on PATH: run `make helm` (the Makefile puts it on PATH)")
    return subprocess.run([binary, *args], capture_output=True, text=True, check=False)


def render(*values_args: str, release: str = CHART_NAME) -> list[Manifest]:
    result = helm(
        "template", release, str(CHART), "--namespace", INSTALL_NAMESPACE,
        "--kube-version", KUBE_VERSION, *values_args,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def scenario(name: str) -> list[Manifest]:
    return render("--values", str(CHART / "ci" / name))


def of_kind(docs: list[Manifest], kind: str) -> list[Manifest]:
    return [doc for doc in docs if doc["kind"] == kind]


def the(docs: list[Manifest], kind: str) -> Manifest:
    (found,) = of_kind(docs, kind)
    return found


def operator_container(docs: list[Manifest]) -> Manifest:
    (container,) = the(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    return container


def rules(docs: list[Manifest]) -> Iterator[tuple[str, str, Manifest]]:
    for role in of_kind(docs, "ClusterRole") + of_kind(docs, "Role"):
        for rule in role["rules"]:
            yield role["kind"], role["metadata"].get("namespace", ""), rule


# --- generated files ---------------------------------------------------------------


# Maps whose entries are data, not settings: their keys carry no `# --` of their own.
FREE_FORM = {"gpuMemoryGiB", "resources", "requests", "limits", "labels"}
KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z][\w.-]*):")


def test_every_value_is_documented() -> None:
    lines = (CHART / "values.yaml").read_text(encoding="utf-8").splitlines()
    parents: list[tuple[int, str]] = []  # (indent, key) of the enclosing keys
    checked = 0
    for index, line in enumerate(lines):
        match = KEY.match(line)
        if not match:
            continue
        indent = len(match["indent"])
        parents = [(i, k) for i, k in parents if i < indent]
        if not (parents and parents[-1][1] in FREE_FORM):
            assert lines[index - 1].lstrip().startswith("# -- "), f"undocumented: {line}"
            checked += 1
        parents.append((indent, match["key"]))
    assert checked >= 40


def test_chart_version_is_the_operator_version() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text(encoding="utf-8"))
    assert chart["apiVersion"] == "v2"
    assert chart["version"] == chart["appVersion"] == __version__


def test_install_yaml_is_of_the_chart_namespace() -> None:
    # tests/test_generated.py checks the committed file; tests/test_install.py what the
    # generator writes for a user's image.
    assert install_generator.NAMESPACE == INSTALL_NAMESPACE


# --- lint and scenarios ------------------------------------------------------------


@pytest.mark.parametrize("name", SCENARIOS)
def test_helm_lint_is_clean(name: str) -> None:
    result = helm(
        "lint", str(CHART), "--strict", "--kube-version", KUBE_VERSION,
        "--values", str(CHART / "ci" / name),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_scenarios_cover_what_the_issue_lists() -> None:
    assert {"default", "namespaced", "monitoring", "peering"} <= {
        name.removesuffix("-values.yaml") for name in SCENARIOS
    }


@pytest.mark.parametrize("name", SCENARIOS)
def test_every_resource_carries_the_chart_labels(name: str) -> None:
    for doc in scenario(name):
        labels = doc["metadata"].get("labels", {})
        assert labels.get("app.kubernetes.io/name") == CHART_NAME, doc["metadata"]["name"]
        assert labels.get("app.kubernetes.io/managed-by") == "Helm"
        assert labels.get("helm.sh/chart") == f"{CHART_NAME}-{__version__}"


@pytest.mark.parametrize("name", SCENARIOS)
def test_operator_pod_meets_restricted_pod_security(name: str) -> None:
    """The Pod Security Standards' restricted profile, item by item."""
    pod = the(scenario(name), "Deployment")["spec"]["template"]["spec"]
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        assert not pod.get(field)
    assert all("hostPath" not in volume for volume in pod.get("volumes", []))
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for container in pod["containers"]:
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False
        assert context["readOnlyRootFilesystem"] is True
        assert context["capabilities"] == {"drop": ["ALL"]}
        assert not context.get("privileged")
        assert "ports" in container and all("hostPort" not in p for p in container["ports"])
        assert container["resources"]["requests"] and container["resources"]["limits"]
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"


@pytest.mark.parametrize("name", SCENARIOS)
def test_operator_arguments_and_settings_are_what_the_cli_accepts(name: str) -> None:
    container = operator_container(scenario(name))
    args = build_parser().parse_args(container["args"])
    assert args.command == "run"
    env = {item["name"]: item["value"] for item in container["env"]}
    assert OperatorSettings.from_env(env) == OperatorSettings()
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert args.liveness == f"http://0.0.0.0:{ports['health']}/healthz"
    assert args.metrics_address == f"0.0.0.0:{ports['metrics']}"


def test_watch_namespaces_become_namespace_flags_and_roles() -> None:
    docs = scenario("namespaced-values.yaml")
    args = build_parser().parse_args(operator_container(docs)["args"])
    assert args.namespace == ["team-a", "team-b"] and not args.all_namespaces
    assert sorted(r["metadata"]["namespace"] for r in of_kind(docs, "Role")) == [
        "team-a",
        "team-b",
    ]
    assert len(of_kind(docs, "RoleBinding")) == 2
    # Cluster-wide, the operator may only discover CRDs.
    cluster_rules = [rule for kind, _, rule in rules(docs) if kind == "ClusterRole"]
    assert cluster_rules == [
        {
            "apiGroups": ["apiextensions.k8s.io"],
            "resources": ["customresourcedefinitions"],
            "verbs": ["list", "watch"],
        }
    ]


@pytest.mark.parametrize("name", SCENARIOS)
def test_rbac_rules_name_resources_plainly(name: str) -> None:
    """Rules by group, resource and verb only; tests/test_rbac.py checks that they are
    exactly the ones the operator's calls and kopf need."""
    for _, _, rule in rules(scenario(name)):
        assert set(rule) == {"apiGroups", "resources", "verbs"}, rule
        assert "*" not in rule["apiGroups"] + rule["resources"] + rule["verbs"], rule


def test_peering_scenario_runs_replicas_with_kopf_peering() -> None:
    docs = scenario("peering-values.yaml")
    deployment = the(docs, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    args = build_parser().parse_args(operator_container(docs)["args"])
    assert args.peering == CHART_NAME
    crd = the(docs, "CustomResourceDefinition")
    assert crd["metadata"]["name"] == "clusterkopfpeerings.kopf.dev"
    peering = the(docs, "ClusterKopfPeering")
    assert peering["metadata"]["annotations"]["helm.sh/hook"] == "post-install,post-upgrade"
    assert ("kopf.dev", "clusterkopfpeerings") in {
        (g, r) for _, _, rule in rules(docs) for g in rule["apiGroups"] for r in rule["resources"]
    }


def test_default_runs_one_operator_without_peering() -> None:
    docs = scenario("default-values.yaml")
    deployment = the(docs, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert build_parser().parse_args(operator_container(docs)["args"]).peering is None
    assert not of_kind(docs, "CustomResourceDefinition")
    for kind in ("ServiceMonitor", "PodMonitor", "ConfigMap", "PodDisruptionBudget"):
        assert not of_kind(docs, kind)


def test_monitoring_scenario_scrapes_operator_and_ray_pods() -> None:
    docs = scenario("monitoring-values.yaml")
    monitor = the(docs, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert monitor["spec"]["endpoints"][0]["honorLabels"] is True
    service = the(docs, "Service")
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert {"metrics"} <= {p["name"] for p in service["spec"]["ports"]}
    roles = set()
    for pod_monitor in of_kind(docs, "PodMonitor"):
        expressions = {e["key"]: e for e in pod_monitor["spec"]["selector"]["matchExpressions"]}
        assert expressions["llmops.dev/deployment"]["operator"] == "Exists"
        roles.update(expressions["ray.io/node-type"]["values"])
        assert pod_monitor["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"
    assert roles == {"head", "worker"}
    dashboard = the(docs, "ConfigMap")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["llm-operator.json"])["panels"]
    assert the(docs, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1


def test_helm_test_hooks_check_the_api_and_the_operator() -> None:
    pods = {d["metadata"]["name"]: d for d in scenario("default-values.yaml") if d["kind"] == "Pod"}
    assert set(pods) == {"llm-operator-test-api", "llm-operator-test-health"}
    for pod in pods.values():
        assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
        # One container each: `helm test --logs` reads a pod's log without naming one.
        assert len(pod["spec"]["containers"]) == 1
    (api,) = pods["llm-operator-test-api"]["spec"]["containers"]
    assert api["command"] + api["args"] == [
        "kubectl", "get", "--raw", "/apis/llmops.dev/v1alpha1/llmdeployments?limit=1"
    ]  # fmt: skip
    assert pods["llm-operator-test-api"]["spec"]["serviceAccountName"] == "llm-operator"
    health = pods["llm-operator-test-health"]
    (curl,) = health["spec"]["containers"]
    assert curl["args"][-1] == "http://llm-operator-metrics:8080/healthz"
    # curl refuses `--option=value` (its values are separate arguments).
    assert not [arg for arg in curl["args"] if arg.startswith("--") and "=" in arg], curl["args"]
    assert health["spec"]["automountServiceAccountToken"] is False


# --- bad values --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (["--set", "operator.bogus=1"], "additional properties 'bogus' not allowed"),
        (["--set", "operatr.replicas=1"], "additional properties 'operatr' not allowed"),
        (["--set", "operator.replicas=-1"], "minimum"),
        (["--set-string", "operator.replicas=two"], "/operator/replicas"),
        (["--set", "operator.logLevel=trace"], "/operator/logLevel"),
        (["--set", "metrics.port=70000"], "/metrics/port"),
        (["--set", "operator.replicas=2"], "operator.replicas > 1 needs peering.enabled=true"),
        (
            ["--set", "serviceAccount.create=false"],
            "serviceAccount.create=false needs serviceAccount.name",
        ),
    ],
)
def test_bad_values_are_refused_with_the_field(values: list[str], message: str) -> None:
    result = helm("template", "x", str(CHART), "--kube-version", KUBE_VERSION, *values)
    assert result.returncode != 0
    assert message in result.stderr


def test_crds_in_the_chart_are_the_generated_ones() -> None:
    chart_crds = sorted(p.name for p in (CHART / "crds").iterdir())
    assert chart_crds == ["llmops.dev_llmdeployments.yaml"]
    committed = (ROOT / "manifests" / "crds" / chart_crds[0]).read_text(encoding="utf-8")
    assert (CHART / "crds" / chart_crds[0]).read_text(encoding="utf-8") == committed


def _paths(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file())


def test_one_resource_kind_per_template() -> None:
    for template in (CHART / "templates").rglob("*.yaml"):
        kinds = {
            line.split(":", 1)[1].strip()
            for line in template.read_text(encoding="utf-8").splitlines()
            if line.startswith("kind:")
        }
        assert len(kinds) == 1, f"{template.name}: {kinds}"
    assert "NOTES.txt" in _paths(CHART / "templates")
    assert "_helpers.tpl" in _paths(CHART / "templates")
