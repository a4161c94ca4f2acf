"""Mode Job against the in-memory API server: the RayJob is made once, mirrored, and a
finished run is a record that no resync, restart or spec change runs again."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from conftest import sample_plan
from fakeapi import FakeApiServer, RecordingKubeApi, claim_path, llmd_path, ray_path
from llm_operator.api import rules
from llm_operator.api.crd import build_crd
from llm_operator.api.validation import SpecError, resolve, validate
from llm_operator.api.vocabulary import ConditionType, Phase, RayKind, Reason
from llm_operator.controller import status
from llm_operator.render import names, render_children
from test_reconciler import conditions, reconcile, stored, writes_since

Body = dict[str, Any]
JOB = "finetune-job"
SPEC_RULES = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"][
    "x-kubernetes-validations"
]


def ray_job_path(name: str = JOB) -> str:
    return ray_path("rayjobs", names.ray_job_name(name))


def kuberay_reports(server: FakeApiServer, **job_status: Any) -> None:
    """KubeRay's part: the RayJob's status as its controller writes it."""
    server.objects[ray_job_path()]["status"] = job_status


def test_the_plan_is_the_job_strategy() -> None:
    plan = sample_plan(JOB)
    assert (plan.ray_kind, plan.serves, plan.runs_to_completion) == (RayKind.RAY_JOB, False, True)
    children = render_children(plan)
    assert children.kind is RayKind.RAY_JOB
    cluster = children.ray["spec"]["rayClusterSpec"]
    (group,) = cluster["workerGroupSpecs"]
    # replicas x tensor parallel: 2 replicas of 2 L4s each, one pod per replica.
    assert (group["replicas"], group["numOfHosts"]) == (2, 1)
    assert (
        group["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "2"
    )
    for pod in (cluster["headGroupSpec"]["template"], group["template"]):
        (container,) = pod["spec"]["containers"]
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["LLMOP_CHECKPOINT_DIR"] == "/checkpoints"
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        assert mounts[names.CHECKPOINTS_VOLUME] == "/checkpoints"
        assert pod["metadata"]["annotations"]["prometheus.io/scrape"] == "true"


def test_first_reconcile_creates_the_claims_then_the_ray_job(
    server: FakeApiServer, api: RecordingKubeApi
) -> None:
    name = stored(server, JOB)
    status_ = reconcile(server, name, api)
    writes = [(w.access.resource, w.access.verb) for w in server.writes]
    assert writes == [
        ("persistentvolumeclaims", "create"),
        ("persistentvolumeclaims", "create"),
        ("rayjobs", "create"),
        ("llmdeployments/status", "patch"),
    ]
    # The checkpoints claim outlives the deployment by default, for the next run.
    claim = server.objects[claim_path(names.checkpoints_claim(name))]
    assert "ownerReferences" not in claim["metadata"]
    assert (status_["phase"], status_["rayJob"]) == (Phase.PENDING, name)
    assert "endpoint" not in status_ and "rayService" not in status_


def test_an_unchanged_job_writes_nothing(server: FakeApiServer, api: RecordingKubeApi) -> None:
    name = stored(server, JOB)
    reconcile(server, name, api)
    start = len(server.accesses)
    reconcile(server, name, api)
    assert writes_since(server, start) == []


# (jobDeploymentStatus, jobStatus) -> (phase, Ready, Progressing, reason)
KUBERAY_STATES = [
    ("", "", Phase.PENDING, "False", "True", Reason.JOB_PENDING),
    ("Initializing", "", Phase.PENDING, "False", "True", Reason.JOB_PENDING),
    ("Waiting", "", Phase.PENDING, "False", "True", Reason.JOB_PENDING),
    ("Suspending", "", Phase.PENDING, "False", "True", Reason.SUSPENDED),
    ("Suspended", "", Phase.PENDING, "False", "True", Reason.SUSPENDED),
    ("Running", "PENDING", Phase.RUNNING, "True", "True", Reason.JOB_RUNNING),
    ("Running", "RUNNING", Phase.RUNNING, "True", "True", Reason.JOB_RUNNING),
    ("Retrying", "FAILED", Phase.RUNNING, "False", "True", Reason.JOB_RETRYING),
    ("Complete", "SUCCEEDED", Phase.SUCCEEDED, "True", "False", Reason.JOB_SUCCEEDED),
    ("Complete", "FAILED", Phase.FAILED, "False", "False", Reason.JOB_FAILED),
    ("Complete", "STOPPED", Phase.FAILED, "False", "False", Reason.JOB_FAILED),
    ("Failed", "FAILED", Phase.FAILED, "False", "False", Reason.JOB_FAILED),
    ("ValidationFailed", "", Phase.FAILED, "False", "False", Reason.JOB_FAILED),
]


@pytest.mark.parametrize(
    "case", KUBERAY_STATES, ids=[f"{d or 'New'}-{j or 'none'}" for d, j, *_ in KUBERAY_STATES]
)
def test_status_mirrors_each_kuberay_job_state(
    server: FakeApiServer, api: RecordingKubeApi, case: tuple[str, str, Phase, str, str, Reason]
) -> None:
    deployment, job, phase, ready, progressing, reason = case
    name = stored(server, JOB)
    reconcile(server, name, api)
    kuberay_reports(
        server,
        jobDeploymentStatus=deployment,
        jobStatus=job,
        message="said by KubeRay",
        startTime="2026-11-26T10:00:00Z",
        endTime="2026-11-26T10:05:00Z" if deployment == "Complete" else None,
        dashboardURL="finetune-job-abc-head-svc.team-a.svc.cluster.local:8265",
        rayClusterName="finetune-job-abc",
    )
    found = reconcile(server, name, api)
    assert found["phase"] == phase
    said = conditions(found)
    assert (said["Ready"]["status"], said["Progressing"]["status"]) == (ready, progressing)
    assert said["Progressing"]["reason"] == reason
    assert "said by KubeRay" in said["Ready"]["message"]
    assert f"jobDeploymentStatus {deployment or 'New'}" in said["Ready"]["message"]
    mirrored = found["job"]
    assert mirrored["startTime"] == "2026-11-26T10:00:00Z"
    assert mirrored["dashboardURL"].endswith(":8265")
    assert mirrored["rayCluster"] == found["rayCluster"] == "finetune-job-abc"
    assert mirrored.get("jobStatus") == (job or None)
    finished = deployment in ("Complete", "Failed")
    assert ("finishedGeneration" in mirrored) is finished


def _finish(server: FakeApiServer, api: RecordingKubeApi) -> str:
    name = stored(server, JOB)
    reconcile(server, name, api)
    kuberay_reports(server, jobDeploymentStatus="Complete", jobStatus="SUCCEEDED")
    found = reconcile(server, name, api)
    assert (found["phase"], found["job"]["finishedGeneration"]) == (Phase.SUCCEEDED, 1)
    return name


def test_a_finished_job_is_not_run_again_when_its_ray_job_is_gone(
    server: FakeApiServer, api: RecordingKubeApi
) -> None:
    """A resync or an operator restart (the same reconcile, from the stored status) after
    the RayJob was deleted: nothing is created, the record stays."""
    name = _finish(server, api)
    del server.objects[ray_job_path()]
    start = len(server.accesses)
    found = reconcile(server, name, api)
    assert writes_since(server, start) == []
    assert ray_job_path() not in server.objects
    assert found["phase"] == Phase.SUCCEEDED


def test_a_finished_job_is_never_patched(server: FakeApiServer, api: RecordingKubeApi) -> None:
    """KubeRay finished the run before the status said so: a spec change of that moment
    leaves the RayJob as it ran."""
    name = stored(server, JOB)
    reconcile(server, name, api)
    kuberay_reports(server, jobDeploymentStatus="Failed", jobStatus="FAILED", reason="AppFailed")
    ran = copy.deepcopy(server.objects[ray_job_path()]["spec"])
    body = server.objects[llmd_path(name)]
    body["spec"]["job"]["entrypoint"] = "python -m my_trainer.finetune --epochs 4"
    body["metadata"]["generation"] = 2
    found = reconcile(server, name, api)
    assert server.objects[ray_job_path()]["spec"] == ran
    assert found["phase"] == Phase.FAILED
    assert "reason AppFailed" in conditions(found)["Ready"]["message"]


def test_a_spec_change_after_the_run_is_refused_with_one_warning(
    server: FakeApiServer, api: RecordingKubeApi
) -> None:
    name = _finish(server, api)
    api.events.clear()
    ran = copy.deepcopy(server.objects[ray_job_path()]["spec"])
    body = server.objects[llmd_path(name)]
    body["spec"]["job"]["entrypoint"] = "python -m my_trainer.finetune --epochs 4"
    body["metadata"]["generation"] = 2
    found = reconcile(server, name, api)
    assert server.objects[ray_job_path()]["spec"] == ran
    progressing = conditions(found)[ConditionType.PROGRESSING]
    assert progressing["reason"] == Reason.JOB_FINISHED_SPEC_CHANGE_REFUSED
    assert "delete and re-create" in progressing["message"]
    assert (found["phase"], found["observedGeneration"]) == (Phase.SUCCEEDED, 2)
    assert [e.reason for e in api.events] == [Reason.JOB_FINISHED_SPEC_CHANGE_REFUSED]
    start = len(server.accesses)
    reconcile(server, name, api)
    assert writes_since(server, start) == [], "refused once; a resync changes nothing"
    assert len(api.events) == 1


def test_a_phase_move_of_the_job_posts_an_event(
    server: FakeApiServer, api: RecordingKubeApi
) -> None:
    name = stored(server, JOB)
    reconcile(server, name, api)
    kuberay_reports(server, jobDeploymentStatus="Running", jobStatus="RUNNING")
    reconcile(server, name, api)
    kuberay_reports(server, jobDeploymentStatus="Failed", jobStatus="FAILED", message="boom")
    reconcile(server, name, api)
    assert [(e.type, e.reason) for e in api.events] == [
        ("Normal", Phase.RUNNING),
        ("Warning", Phase.FAILED),
    ]


# --- what does not apply to mode Job -------------------------------------------------------
def _job(**spec: Any) -> Body:
    body: Body = {
        "apiVersion": "llmops.dev/v1alpha1",
        "kind": "LLMDeployment",
        "metadata": {"name": "train"},
        "spec": {
            "mode": "Job",
            "job": {"entrypoint": "python t.py"},
            "accelerator": {"type": "L4"},
        },
    }
    body["spec"].update(spec)
    return body


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        ({"autoscaling": {"maxReplicas": 2}}, "spec.autoscaling"),
        ({"routing": {"policy": "PowerOfTwoChoices"}}, "spec.routing"),
        ({"lora": {"source": "s3://bucket/adapters"}}, "spec.lora"),
        ({"upgradeStrategy": "None"}, "spec.upgradeStrategy"),
        ({"engine": {"args": {"enforce_eager": True}}}, "spec.engine.args"),
        ({"engine": {"maxModelLen": 4096}}, "spec.engine.maxModelLen"),
        ({"engine": {"type": "custom", "importPath": "a.b:c"}}, "spec.engine.importPath"),
        ({"disaggregation": {}}, "spec.disaggregation"),
        ({"exposure": {"gateway": {"parentRefs": [{"name": "public"}]}}},
         "spec.exposure.gateway"),
        ({"accelerator": {"type": "H100", "fallbacks": [{"type": "L4", "gpusPerNode": 4}]}},
         "spec.accelerator.fallbacks"),
        ({"job": None}, "spec.job.entrypoint"),
        ({"job": {"entrypoint": "x", "suspend": True, "shutdownAfterJobFinishes": False}},
         "spec.job.suspend"),
        ({"job": {"entrypoint": "x", "ttlSecondsAfterFinished": 60,
                  "shutdownAfterJobFinishes": False}}, "spec.job.ttlSecondsAfterFinished"),
    ],
)  # fmt: skip
def test_fields_that_do_not_apply_to_a_job_are_named(edit: Body, field: str) -> None:
    body = _job(**edit)
    if body["spec"].get("job") is None:
        del body["spec"]["job"]
    with pytest.raises(SpecError) as caught:
        validate(body)
    assert field in str(caught.value), str(caught.value)


def test_disaggregation_is_refused_as_not_for_a_job() -> None:
    # Not only as Serve-LLM-only: the message says why a job has no use for it.
    with pytest.raises(SpecError, match=r"spec\.disaggregation does not apply to mode Job"):
        validate(_job(disaggregation={"prefill": {"replicas": 2}}))


def test_fallbacks_are_refused_as_not_for_a_job() -> None:
    # A job's workers are a fixed set; the message says why, not only that it is refused.
    body = _job(accelerator={"type": "H100", "fallbacks": [{"type": "L4", "gpusPerNode": 4}]})
    with pytest.raises(SpecError, match=r"spec\.accelerator\.fallbacks does not apply to mode Job"):
        validate(body)


def test_a_route_is_refused_in_mode_job_by_both_rules_alike() -> None:
    # The route's own rule (mode Service only) and mode Job's both refuse it, each naming
    # the field and telling to remove it; both are in the CRD, so admission agrees.
    body = _job(exposure={"gateway": {"parentRefs": [{"name": "public"}]}})
    with pytest.raises(SpecError, match=r"spec\.exposure\.gateway is only for mode Service"):
        validate(body)
    job_rule = dict(zip(rules.JOB_REFUSED_FIELDS, rules.JOB_REFUSED, strict=True))
    (refusal,) = [r for (field, _, _), r in job_rule.items() if field == "exposure.gateway"]
    for rule in (refusal, rules.EXPOSURE_ONLY_SERVICE):
        assert rule.message.startswith("spec.exposure.gateway ") and "remove it" in rule.message
        assert rule.as_schema() in SPEC_RULES
    assert "mode Job" in refusal.message and "Job" in rules.EXPOSURE_ONLY_SERVICE.message


def test_a_job_renders_no_route_and_one_worker_group() -> None:
    children = render_children(resolve(_job()))
    assert children.route is None
    groups = children.ray["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    assert [g["groupName"] for g in groups] == [names.worker_group(None)]


def test_a_job_needs_no_model_and_the_other_modes_do() -> None:
    plan_body = validate(_job())
    assert plan_body.spec.model is None
    serving = _job(mode="Service")
    del serving["spec"]["job"]
    with pytest.raises(SpecError, match=r"spec\.model is required"):
        validate(serving)
    with pytest.raises(SpecError, match=r"spec\.job is only for mode Job"):
        validate(_job(mode="Cluster", model={"source": "hf://a/b"}))


def test_job_finished_reads_kuberays_terminal_states() -> None:
    def job(deployment: str) -> Body:
        return {"status": {"jobDeploymentStatus": deployment}}

    assert status.job_finished(job("Complete")) and status.job_finished(job("Failed"))
    assert not any(status.job_finished(job(d)) for d in ("Running", "Retrying", "Suspended", ""))
