"""Head and worker placement, the autoscaler sidecar's size and GCS fault tolerance:
validation (the API server's verdicts on pods, and KubeRay's on Redis settings), the
rendering onto KubeRay's fields, and the status that says whether fault tolerance is on.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import kopf
import pytest
import yaml

from conftest import BIN_DIR, GOLDEN, ROOT, SAMPLES, crd_schema, load_one, unknown_fields
from fakeapi import NAMESPACE, FakeApiServer, clients_of, llmd_path, ray_path
from llm_operator.api import rules
from llm_operator.api.crd import build_crd
from llm_operator.api.validation import SpecError, names_field, resolve, validate
from llm_operator.controller import kube, reconciler, status
from llm_operator.render import names, render
from llm_operator.settings import DEFAULT_AUTOSCALER_RESOURCES, OperatorSettings
from test_crd import PER_CALL_LIMIT, _estimated_cost

Body = dict[str, Any]
REQUIRED = "requiredDuringSchedulingIgnoredDuringExecution"
PREFERRED = "preferredDuringSchedulingIgnoredDuringExecution"
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


def quickstart(**ray_cluster: Any) -> Body:
    body = load_one(SAMPLES / "quickstart.yaml")
    body["spec"]["rayCluster"] = copy.deepcopy(ray_cluster)
    return body


def ray_cluster_spec(body: Body, settings: OperatorSettings | None = None) -> Body:
    """The rendered RayCluster spec (a RayService's rayClusterConfig in Service mode)."""
    main = render(resolve(body), settings)[-1]
    spec: Body = main["spec"]
    return spec.get("rayClusterConfig", spec)


def head_pod(body: Body) -> Body:
    pod: Body = ray_cluster_spec(body)["headGroupSpec"]["template"]["spec"]
    return pod


def worker_pod(body: Body) -> Body:
    pod: Body = ray_cluster_spec(body)["workerGroupSpecs"][0]["template"]["spec"]
    return pod


def refused(body: Body, field: str) -> list[str]:
    """The messages `validate` gives; one of them names `field`."""
    with pytest.raises(SpecError) as caught:
        validate(body)
    messages = [str(error) for error in caught.value.errors]
    assert any(names_field(m, field) for m in messages), (field, messages)
    return messages


# --- placement -----------------------------------------------------------------------------
HEAD_PLACEMENT: Body = {
    "nodeSelector": {"pool": "cpu-on-demand"},
    "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "head"}],
    "affinity": {
        "nodeAffinity": {
            REQUIRED: {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "cpu-gen", "operator": "Gt", "values": ["3"]}]}
                ]
            }
        }
    },
    "priorityClassName": "ray-head",
}


def test_the_head_gets_its_placement_and_no_gpu_toleration() -> None:
    pod = head_pod(quickstart(head=HEAD_PLACEMENT))
    assert pod["nodeSelector"] == {"pool": "cpu-on-demand"}
    assert pod["tolerations"] == [{"key": "dedicated", "operator": "Equal", "value": "head"}]
    assert pod["affinity"] == HEAD_PLACEMENT["affinity"]
    assert pod["priorityClassName"] == "ray-head"
    assert GPU_TOLERATION not in pod["tolerations"]


def test_by_default_the_head_has_no_placement_and_the_workers_the_accelerators() -> None:
    body = quickstart()
    head, worker = head_pod(body), worker_pod(body)
    assert not {"nodeSelector", "tolerations", "affinity", "priorityClassName"} & head.keys()
    assert worker["nodeSelector"] == {"ray.io/accelerator-type": "L4"}
    assert worker["tolerations"] == [GPU_TOLERATION]
    assert not {"affinity", "priorityClassName"} & worker.keys()


def test_worker_placement_merges_with_the_accelerators() -> None:
    body = quickstart(
        worker={
            "nodeSelector": {"cloud.google.com/gke-spot": "true"},
            "tolerations": [
                {"key": "spot", "operator": "Exists", "effect": "NoSchedule"},
                GPU_TOLERATION,  # also the operator's: kept once
                {"key": "zone-a", "operator": "Exists"},
            ],
            "priorityClassName": "batch",
        }
    )
    body["spec"]["accelerator"]["tolerations"] = [{"key": "zone-a", "operator": "Exists"}]
    pod = worker_pod(body)
    assert pod["nodeSelector"] == {
        "cloud.google.com/gke-spot": "true",
        "ray.io/accelerator-type": "L4",
    }
    assert pod["tolerations"] == [
        {"key": "zone-a", "operator": "Exists"},
        {"key": "spot", "operator": "Exists", "effect": "NoSchedule"},
        GPU_TOLERATION,
    ]
    assert pod["priorityClassName"] == "batch"


def test_the_default_accelerator_label_wins_over_the_workers() -> None:
    """The CRD cannot see the operator's label setting; the accelerator keeps its key."""
    pod = worker_pod(quickstart(worker={"nodeSelector": {"ray.io/accelerator-type": "A100"}}))
    assert pod["nodeSelector"] == {"ray.io/accelerator-type": "L4"}


def test_a_worker_selector_repeating_an_accelerator_key_is_refused() -> None:
    body = quickstart(worker={"nodeSelector": {"gpu": "l4", "pool": "spot"}})
    body["spec"]["accelerator"]["nodeSelector"] = {"gpu": "l4"}
    refused(body, "spec.rayCluster.worker.nodeSelector")
    crd_rules = [v["rule"] for v in SPEC["x-kubernetes-validations"]]
    assert rules.WORKER_SELECTOR_APART.rule in crd_rules


@pytest.mark.parametrize(
    ("toleration", "rule"),
    [
        ({"operator": "Equal", "value": "x"}, rules.TOLERATION_KEY_OR_EXISTS),
        ({"key": "", "effect": "NoSchedule"}, rules.TOLERATION_KEY_OR_EXISTS),
        ({"key": "k", "operator": "Exists", "value": "x"}, rules.TOLERATION_EXISTS_NO_VALUE),
        (
            {"key": "k", "operator": "Exists", "effect": "NoSchedule", "tolerationSeconds": 30},
            rules.TOLERATION_SECONDS_NO_EXECUTE,
        ),
        (
            {"key": "k", "operator": "Exists", "tolerationSeconds": 30},
            rules.TOLERATION_SECONDS_NO_EXECUTE,
        ),
    ],
    ids=[
        "no-key-equal",
        "empty-key-equal",
        "exists-with-value",
        "seconds-no-schedule",
        "seconds-no-effect",
    ],
)
@pytest.mark.parametrize("owner", ["accelerator", "head", "worker"])
def test_tolerations_the_pod_api_refuses_are_refused(
    toleration: Body, rule: rules.CelRule, owner: str
) -> None:
    body = quickstart()
    if owner == "accelerator":
        body["spec"]["accelerator"]["tolerations"] = [toleration]
        field = "spec.accelerator.tolerations[0]"
    else:
        body["spec"]["rayCluster"] = {owner: {"tolerations": [toleration]}}
        field = f"spec.rayCluster.{owner}.tolerations[0]"
    messages = refused(body, field)
    assert any(rule.message in m for m in messages)


def test_tolerations_the_pod_api_accepts_are_accepted() -> None:
    for toleration in (
        {"operator": "Exists"},
        {"key": "k", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 0},
        {"key": "k", "value": "", "effect": "PreferNoSchedule"},
        {"key": "k", "operator": "Exists", "value": ""},
    ):
        validate(quickstart(head={"tolerations": [toleration]}))


def _node_requirement(requirement: Body) -> Body:
    term = {"matchExpressions": [requirement]}
    return quickstart(
        head={"affinity": {"nodeAffinity": {REQUIRED: {"nodeSelectorTerms": [term]}}}}
    )


NODE_EXPRESSION = (
    f"spec.rayCluster.head.affinity.nodeAffinity.{REQUIRED}"
    ".nodeSelectorTerms[0].matchExpressions[0]"
)


@pytest.mark.parametrize(
    "requirement",
    [
        {"key": "a", "operator": "In"},
        {"key": "a", "operator": "NotIn", "values": []},
        {"key": "a", "operator": "Exists", "values": ["x"]},
        {"key": "a", "operator": "DoesNotExist", "values": ["x"]},
        {"key": "a", "operator": "Gt"},
        {"key": "a", "operator": "Gt", "values": ["1", "2"]},
        {"key": "a", "operator": "Lt", "values": ["one"]},
    ],
    ids=lambda r: f"{r['operator']}-{len(r.get('values', []))}",
)
def test_node_requirements_take_the_values_their_operator_needs(requirement: Body) -> None:
    messages = refused(_node_requirement(requirement), NODE_EXPRESSION)
    assert any(rules.NODE_REQUIREMENT_VALUES.message in m for m in messages)


def test_node_requirements_the_pod_api_accepts_are_accepted() -> None:
    for requirement in (
        {"key": "a", "operator": "In", "values": ["x", "y"]},
        {"key": "a", "operator": "Exists"},
        {"key": "a", "operator": "Lt", "values": ["10"]},
    ):
        validate(_node_requirement(requirement))


def _pod_anti_affinity(term: Body) -> Body:
    return quickstart(worker={"affinity": {"podAntiAffinity": {REQUIRED: [term]}}})


def test_label_selector_requirements_and_topology_keys() -> None:
    field = f"spec.rayCluster.worker.affinity.podAntiAffinity.{REQUIRED}[0]"
    term = {
        "topologyKey": "kubernetes.io/hostname",
        "labelSelector": {"matchExpressions": [{"key": "app", "operator": "In"}]},
    }
    messages = refused(_pod_anti_affinity(term), f"{field}.labelSelector.matchExpressions[0]")
    assert any(rules.LABEL_REQUIREMENT_VALUES.message in m for m in messages)
    refused(_pod_anti_affinity({"labelSelector": {}}), f"{field}.topologyKey")
    refused(_pod_anti_affinity({"topologyKey": ""}), f"{field}.topologyKey")
    # Gt is for nodes only.
    term["labelSelector"] = {"matchExpressions": [{"key": "a", "operator": "Gt", "values": ["1"]}]}
    refused(_pod_anti_affinity(term), f"{field}.labelSelector.matchExpressions[0].operator")


@pytest.mark.parametrize(
    ("affinity", "field"),
    [
        ({"nodeAffinity": {REQUIRED: {"nodeSelectorTerms": []}}}, "nodeSelectorTerms"),
        ({"nodeAffinity": {REQUIRED: {"nodeSelectorTerms": [{}]}}}, "matchExpressions"),
        ({"nodeAffinity": {PREFERRED: [{"weight": 0, "preference": {}}]}}, "weight"),
        ({"podAffinity": {PREFERRED: [{"weight": 101}]}}, "weight"),
        ({"nodeAffinity": {REQUIRED: {"nodeSelectorTerms": [{"matchFields": []}]}}}, "matchFields"),
        (
            {"podAffinity": {REQUIRED: [{"topologyKey": "z", "namespaceSelector": {}}]}},
            "namespaceSelector",
        ),
    ],
    ids=["no-terms", "empty-term", "weight-0", "weight-101", "match-fields", "namespace-selector"],
)
def test_affinity_outside_the_typed_subset_is_refused(affinity: Body, field: str) -> None:
    with pytest.raises(SpecError) as caught:
        validate(quickstart(head={"affinity": affinity}))
    assert any(field in e.field for e in caught.value.errors), caught.value.errors


def test_a_full_affinity_renders_as_written() -> None:
    affinity = {
        "nodeAffinity": {
            REQUIRED: {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]},
                    {"matchExpressions": [{"key": "spot", "operator": "DoesNotExist"}]},
                ]
            },
            PREFERRED: [
                {
                    "weight": 10,
                    "preference": {"matchExpressions": [{"key": "x", "operator": "Exists"}]},
                }
            ],
        },
        "podAffinity": {
            PREFERRED: [
                {
                    "weight": 1,
                    "podAffinityTerm": {
                        "topologyKey": "topology.kubernetes.io/zone",
                        "namespaces": ["cache"],
                        "labelSelector": {"matchLabels": {"app": "redis"}},
                    },
                }
            ]
        },
        "podAntiAffinity": {
            REQUIRED: [
                {
                    "topologyKey": "kubernetes.io/hostname",
                    "labelSelector": {
                        "matchExpressions": [
                            {
                                "key": "app.kubernetes.io/component",
                                "operator": "In",
                                "values": ["ray-head"],
                            }
                        ]
                    },
                }
            ]
        },
    }
    assert head_pod(quickstart(head={"affinity": affinity}))["affinity"] == affinity


def test_priority_class_name_is_an_object_name() -> None:
    refused(
        quickstart(head={"priorityClassName": "High"}), "spec.rayCluster.head.priorityClassName"
    )


# --- the autoscaler sidecar --------------------------------------------------------------
def test_the_autoscaler_sidecar_gets_the_operators_default() -> None:
    options = ray_cluster_spec(quickstart())["autoscalerOptions"]
    assert options["resources"] == DEFAULT_AUTOSCALER_RESOURCES
    # Requests equal limits: a head with equal requests and limits stays Guaranteed.
    assert options["resources"]["requests"] == options["resources"]["limits"]


def test_the_users_autoscaler_resources_replace_the_default() -> None:
    resources = {"requests": {"cpu": "50m", "memory": "300Mi"}}
    options = ray_cluster_spec(quickstart(autoscaler={"resources": resources}))["autoscalerOptions"]
    assert options["resources"] == resources
    assert options["idleTimeoutSeconds"] == 60


def test_the_operator_wide_default_comes_from_the_environment() -> None:
    value = {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"memory": "1Gi"}}
    settings = OperatorSettings.from_env({"LLMOP_AUTOSCALER_RESOURCES": json.dumps(value)})
    assert ray_cluster_spec(quickstart(), settings)["autoscalerOptions"]["resources"] == value
    with pytest.raises(ValueError, match="quantity"):
        OperatorSettings.from_env({"LLMOP_AUTOSCALER_RESOURCES": '{"limits": {"cpu": "lots"}}'})


def test_the_chart_passes_its_default_to_the_operator() -> None:
    values = yaml.safe_load((ROOT / "charts/llm-operator/values.yaml").read_text(encoding="utf-8"))
    assert values["operator"]["rayAutoscaler"]["resources"] == DEFAULT_AUTOSCALER_RESOURCES
    template = (ROOT / "charts/llm-operator/templates/deployment.yaml").read_text(encoding="utf-8")
    assert "LLMOP_AUTOSCALER_RESOURCES" in template
    assert ".Values.operator.rayAutoscaler.resources | toJson" in template


def test_gpus_in_the_autoscaler_resources_are_refused() -> None:
    body = quickstart(autoscaler={"resources": {"limits": {"nvidia.com/gpu": 1}}})
    refused(body, "spec.rayCluster.autoscaler.resources.limits")


# --- GCS fault tolerance -----------------------------------------------------------------
GCS = {
    "redisAddress": "redis.ray-system.svc.cluster.local:6379",
    "redisPasswordSecretRef": {"name": "redis-auth", "key": "password"},
}


@pytest.mark.parametrize("mode", ["Service", "Cluster"])
def test_gcs_fault_tolerance_becomes_kuberays_options(mode: str) -> None:
    body = quickstart(gcsFaultTolerance=GCS)
    body["spec"]["mode"] = mode
    spec = ray_cluster_spec(body)
    assert spec["gcsFaultToleranceOptions"] == {
        "redisAddress": "redis.ray-system.svc.cluster.local:6379",
        "redisPassword": {"valueFrom": {"secretKeyRef": {"name": "redis-auth", "key": "password"}}},
    }
    # KubeRay sets the Redis variables itself and refuses a head that sets them too.
    for group in (spec["headGroupSpec"], spec["workerGroupSpecs"][0]):
        env = group["template"]["spec"]["containers"][0].get("env", [])
        assert not {e["name"] for e in env} & {"RAY_REDIS_ADDRESS", "REDIS_PASSWORD"}
        assert "redis-password" not in group["rayStartParams"]


def test_without_a_password_and_in_cluster_mode_with_a_storage_namespace() -> None:
    body = quickstart(
        gcsFaultTolerance={
            "redisAddress": "rediss://10.0.0.7:6380",
            "externalStorageNamespace": "team-a",
        }
    )
    body["spec"]["mode"] = "Cluster"
    assert ray_cluster_spec(body)["gcsFaultToleranceOptions"] == {
        "redisAddress": "rediss://10.0.0.7:6380",
        "externalStorageNamespace": "team-a",
    }


def test_without_gcs_fault_tolerance_no_options_are_rendered() -> None:
    assert "gcsFaultToleranceOptions" not in ray_cluster_spec(quickstart())


def test_a_storage_namespace_is_refused_with_a_rayservice() -> None:
    body = quickstart(gcsFaultTolerance={**GCS, "externalStorageNamespace": "shared"})
    messages = refused(body, "spec.rayCluster.gcsFaultTolerance.externalStorageNamespace")
    assert any("two Ray clusters" in m for m in messages)


@pytest.mark.parametrize(
    "address",
    [
        "redis",
        "redis:0",
        "redis:70000",
        "redis://:hunter2@redis:6379",
        "tcp://redis:6379",
        "999.1.2.3:6379",
    ],
)
def test_a_malformed_redis_address_is_refused_naming_the_field(address: str) -> None:
    messages = refused(
        quickstart(gcsFaultTolerance={"redisAddress": address}),
        "spec.rayCluster.gcsFaultTolerance.redisAddress",
    )
    assert any("redisPasswordSecretRef" in m for m in messages)


def test_a_literal_password_has_no_field() -> None:
    body = quickstart(gcsFaultTolerance={"redisAddress": "redis:6379", "redisPassword": "hunter2"})
    refused(body, "spec.rayCluster.gcsFaultTolerance.redisPassword")
    body = quickstart(
        gcsFaultTolerance={"redisAddress": "redis:6379", "redisPasswordSecretRef": "x"}
    )
    refused(body, "spec.rayCluster.gcsFaultTolerance.redisPasswordSecretRef")


@pytest.mark.parametrize(
    "name",
    ["RAY_REDIS_ADDRESS", "REDIS_PASSWORD", "REDIS_USERNAME", "RAY_external_storage_namespace"],
)
def test_the_redis_variables_are_refused_in_env(name: str) -> None:
    messages = refused(quickstart(env=[{"name": name, "value": "x"}]), "spec.rayCluster.env")
    assert any("gcsFaultTolerance" in m for m in messages)
    crd_rules = [v["rule"] for v in RAY_CLUSTER["env"]["x-kubernetes-validations"]]
    assert rules.NO_GCS_FT_ENV.rule in crd_rules


# --- the rendered fields are KubeRay v1.6.1's own -------------------------------------------
KUBERAY_CRDS = BIN_DIR / "kuberay-crds"


def _kuberay_schema(plural: str) -> Body:
    return crd_schema(
        KUBERAY_CRDS / f"ray.io_{plural}.yaml", "`e2e/tools.sh kuberay` installs KubeRay's CRDs"
    )


FULL_JOB: Body = {
    "entrypoint": "python /opt/train.py",
    "runtimeEnv": {"env_vars": {"WANDB_MODE": "offline"}},
    "submitterResources": {"requests": {"cpu": "200m"}, "limits": {"memory": "1Gi"}},
    "activeDeadlineSeconds": 3600,
    "backoffLimit": 2,
    "shutdownAfterJobFinishes": True,
    "ttlSecondsAfterFinished": 600,
}
# The kind's CRD, and where the kind keeps its Ray cluster's spec.
KUBERAY_KIND = {
    "Service": ("RayService", "rayservices", "rayClusterConfig"),
    "Cluster": ("RayCluster", "rayclusters", None),
    "Job": ("RayJob", "rayjobs", "rayClusterSpec"),
}


@pytest.mark.parametrize("mode", ["Service", "Cluster", "Job"])
def test_every_rendered_field_is_in_kuberays_crd(mode: str) -> None:
    body = load_one(GOLDEN / "head-placement-gcs-ft" / "input.yaml")
    body["spec"]["mode"] = mode
    if mode == "Job":
        del body["spec"]["engine"]["maxModelLen"]  # a serving setting, refused in a job
        body["spec"]["job"] = FULL_JOB
        body["spec"]["storage"] = {"checkpoints": {"size": "10Gi"}}
    kind, plural, cluster_at = KUBERAY_KIND[mode]
    (main,) = [c for c in render(resolve(body)) if c["kind"] == kind]
    schema = _kuberay_schema(plural)
    assert unknown_fields(main, schema, "") == []
    misspelt = {"spec": {"rayClusterConfig": {"gcsFaultToleranceOption": {}}}}
    assert unknown_fields(misspelt, _kuberay_schema("rayservices"), "") != []  # guard
    cluster = main["spec"] if cluster_at is None else main["spec"][cluster_at]
    assert {"gcsFaultToleranceOptions", "autoscalerOptions"} <= cluster.keys()
    if mode == "Job":
        # Each field of spec.job is rendered (these two under KubeRay's own names).
        assert FULL_JOB.keys() - {"runtimeEnv", "submitterResources"} <= main["spec"].keys()
        assert {"runtimeEnvYAML", "submitterPodTemplate", "suspend"} <= main["spec"].keys()
        assert unknown_fields({"spec": {"runtimeEnvYaml": ""}}, schema, "") != []  # guard


# --- status: is it on? -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("requested", "serving", "state"),
    [
        (True, True, "Enabled"),
        (False, True, "Enabled"),  # turned off, until the new cluster serves
        (True, False, "Pending"),
        (True, None, "Pending"),
        (False, False, "Disabled"),
        (False, None, "Disabled"),
    ],
)
def test_the_state_follows_the_serving_cluster(
    requested: bool, serving: bool | None, state: str
) -> None:
    assert status.gcs_fault_tolerance_state(requested, serving) == state


def test_a_ray_cluster_reports_what_its_spec_asks_for() -> None:
    with_ft = {
        "metadata": {"name": "c"},
        "spec": {"gcsFaultToleranceOptions": {"redisAddress": "r:1"}},
    }
    assert status.observe_ray_cluster(with_ft, 1).gcs_fault_tolerance is True
    ready = {"metadata": {"name": "c"}, "spec": {}, "status": {"state": "ready"}}
    assert status.observe_ray_cluster(ready, 1).gcs_fault_tolerance is False
    assert status.has_gcs_fault_tolerance(None) is None


def _store(server: FakeApiServer, body: Body) -> str:
    body["metadata"]["namespace"] = NAMESPACE
    server.put(llmd_path(body["metadata"]["name"]), body)
    return str(body["metadata"]["name"])


def _reconcile(server: FakeApiServer, name: str, clients: kube.Clients) -> Body:
    body = copy.deepcopy(server.objects[llmd_path(name)])
    reconciler.reconcile(body, kube.KubeApi(clients), OperatorSettings())
    found: Body = server.objects[llmd_path(name)]["status"]
    return found


def _serving_cluster(server: FakeApiServer, service: str, *, with_ft: bool) -> None:
    """KubeRay's part: a serving cluster made from the RayService, named in its status."""
    made = server.objects[ray_path("rayservices", service)]
    spec = copy.deepcopy(made["spec"]["rayClusterConfig"])
    if not with_ft:
        spec.pop("gcsFaultToleranceOptions", None)
    cluster_name = f"{service}-{'ft' if with_ft else 'plain'}"
    cluster = {
        "kind": "RayCluster",
        "metadata": {"name": cluster_name, "namespace": NAMESPACE},
        "spec": spec,
    }
    server.put(ray_path("rayclusters", cluster_name), cluster)
    made["status"] = {"activeServiceStatus": {"rayClusterName": cluster_name}}


def test_status_says_whether_the_serving_cluster_has_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kopf, "event", lambda *args, **kwargs: None)
    server = FakeApiServer()
    clients = clients_of(server)
    name = _store(server, quickstart(gcsFaultTolerance=GCS))
    assert _reconcile(server, name, clients)["gcsFaultTolerance"] == "Pending"
    # The active cluster was made before GCS fault tolerance was asked for.
    _serving_cluster(server, names.ray_service_name(name), with_ft=False)
    assert _reconcile(server, name, clients)["gcsFaultTolerance"] == "Pending"
    _serving_cluster(server, names.ray_service_name(name), with_ft=True)
    assert _reconcile(server, name, clients)["gcsFaultTolerance"] == "Enabled"

    plain = quickstart()
    plain["metadata"]["name"] = "plain"
    name = _store(server, plain)
    assert _reconcile(server, name, clients)["gcsFaultTolerance"] == "Disabled"

    batch = quickstart(gcsFaultTolerance=GCS)
    batch["metadata"]["name"] = "batch"
    batch["spec"]["mode"] = "Cluster"
    name = _store(server, batch)
    assert _reconcile(server, name, clients)["gcsFaultTolerance"] == "Enabled"


def test_the_state_is_a_wide_column_and_documented() -> None:
    columns = {c["name"]: c for c in build_crd()["spec"]["versions"][0]["additionalPrinterColumns"]}
    assert columns["GCS-FT"]["jsonPath"] == ".status.gcsFaultTolerance"
    assert columns["GCS-FT"]["priority"] == 1
    field = SCHEMA["properties"]["status"]["properties"]["gcsFaultTolerance"]
    assert field["enum"] == ["Enabled", "Disabled", "Pending"]


# --- the CRD's rules stay cheap where lists multiply them -----------------------------------
SCHEMA = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
SPEC = SCHEMA["properties"]["spec"]
RAY_CLUSTER = SPEC["properties"]["rayCluster"]["properties"]
STRING_RULES = {
    rule.rule: rule
    for rule in vars(rules).values()
    if isinstance(rule, rules.CelRule) and rule.check is not None
}


def _rules_with_cardinality(node: Body, times: int, path: str) -> list[tuple[str, Body, int, str]]:
    """(rule, the node it sits on, how many such nodes one object may hold, path)."""
    found = [(v["rule"], node, times, path) for v in node.get("x-kubernetes-validations", [])]
    for name, child in node.get("properties", {}).items():
        found += _rules_with_cardinality(child, times, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        found += _rules_with_cardinality(node["items"], times * node["maxItems"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        more = times * node["maxProperties"]
        found += _rules_with_cardinality(node["additionalProperties"], more, f"{path}{{}}")
    return found


def test_string_rules_times_their_cardinality_stay_within_one_call() -> None:
    """Every list and map that holds a rule is bounded, and each string rule, as often as
    one object may hold it, stays within the API server's per-call cost limit."""
    checked = 0
    for rule, node, times, path in _rules_with_cardinality(SPEC, 1, "spec"):
        string_rule = STRING_RULES.get(rule)
        if string_rule is None or string_rule.check is None:
            continue
        if node.get("type") == "string":  # a rule on the string itself
            cost = _estimated_cost(string_rule.check, 4 * node["maxLength"], 1)
        elif rule.startswith("self.all(k, "):  # a rule on each key of a map
            key_cost = _estimated_cost(string_rule.check, 4 * rules.QUALIFIED_NAME_MAX_LENGTH, 1)
            cost = key_cost * node["maxProperties"]
        else:
            continue
        assert cost * times <= PER_CALL_LIMIT, (path, cost, times)
        checked += 1
    assert checked >= 40
