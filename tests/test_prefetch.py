"""Model cache prefetch (spec.storage.modelCache.prefetch): the download Job as rendered,
its program run for real on local directories, the API's refusals, and the reconcile
against the in-memory API server (the Ray resource waits for the Job)."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import SAMPLES, load_one
from fakeapi import FakeApiServer, RecordingKubeApi, job_path, llmd_path, ray_path
from llm_operator.api.validation import SpecError, resolve
from llm_operator.api.vocabulary import ConditionType, Phase, Reason
from llm_operator.render import names, render, render_children
from llm_operator.render.download_program import MARKER, PARTIAL_SUFFIX, PROGRAM
from llm_operator.render.pods import container_security
from llm_operator.render.serve import serve_config
from llm_operator.render.sources import model_key
from test_reconciler import conditions, reconcile, stored_body

Body = dict[str, Any]


def prefetching(sample: str = "llama-8b-l4", **model: Any) -> Body:
    body = load_one(SAMPLES / f"{sample}.yaml")
    body["metadata"]["namespace"] = "team-a"
    cache = body["spec"].setdefault("storage", {}).setdefault("modelCache", {})
    cache["prefetch"] = True
    body["spec"]["model"].update(model)
    return body


def kinds(children: list[Body]) -> list[str]:
    return [c["kind"] for c in children]


def the_job(body: Body) -> Body:
    job = render_children(resolve(body)).prefetch
    assert job is not None
    return job


def env_of(container: Body) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


# --- render ------------------------------------------------------------------------------


def test_the_job_comes_after_the_claim_and_before_the_ray_service() -> None:
    children = render(resolve(prefetching()))
    assert kinds(children) == ["PersistentVolumeClaim", "Job", "RayService"]


def test_without_prefetch_there_is_no_job() -> None:
    body = load_one(SAMPLES / "llama-8b-l4.yaml")
    assert "Job" not in kinds(render(resolve(body)))
    assert render_children(resolve(body)).prefetch is None


def test_the_job_downloads_the_source_into_the_claim_at_the_ray_pods_mount() -> None:
    body = prefetching(revision="v1.2", tokenSecretRef={"name": "hf", "key": "token"})
    children = render_children(resolve(body))
    job = children.prefetch
    assert job is not None
    assert job["apiVersion"] == "batch/v1"
    assert job["metadata"]["labels"] == names.labels("llama-8b", "model-prefetch")
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] == ["python", "-c", PROGRAM]
    cache_path = body["spec"]["storage"]["modelCache"].get("mountPath", "/models")
    key = model_key(body["spec"]["model"]["source"], "v1.2")
    env = env_of(container)
    assert env["LLMOP_SOURCE"] == body["spec"]["model"]["source"]
    assert env["LLMOP_REVISION"] == "v1.2"
    assert env["LLMOP_TARGET"] == f"{cache_path}/prefetched/{key}"
    assert env["HF_TOKEN"] == {"secretKeyRef": {"name": "hf", "key": "token"}}
    # The claim is the Ray pods' own, mounted where they mount it.
    worker = children.ray["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]
    ray_container = worker["template"]["spec"]["containers"][0]
    (mount,) = container["volumeMounts"]
    assert mount in ray_container["volumeMounts"]
    claims = {v["name"]: v for v in worker["template"]["spec"]["volumes"]}
    assert pod["volumes"] == [claims[names.MODEL_CACHE_VOLUME]]
    assert container["securityContext"] == container_security()
    assert container["securityContext"] == ray_container["securityContext"]
    assert pod["restartPolicy"] == "Never"
    assert job["spec"]["backoffLimit"] == 3
    assert job["spec"]["activeDeadlineSeconds"] == 21600


def test_the_engine_loads_from_the_cache_not_the_hub() -> None:
    body = prefetching(revision="v1.2")
    (app,) = serve_config(resolve(body))["applications"]
    (config,) = app["args"]["llm_configs"]
    env = env_of(the_job(body)["spec"]["template"]["spec"]["containers"][0])
    assert config["model_loading_config"]["model_source"] == env["LLMOP_TARGET"]
    # The directory is of that revision already: vLLM is not asked for one.
    assert "revision" not in config["engine_kwargs"]
    plain = load_one(SAMPLES / "llama-8b-l4.yaml")
    plain["spec"]["model"]["revision"] = "v1.2"
    (app,) = serve_config(resolve(plain))["applications"]
    assert app["args"]["llm_configs"][0]["engine_kwargs"]["revision"] == "v1.2"


def test_a_pvc_source_is_copied_from_its_claim_which_the_ray_pods_then_do_not_mount() -> None:
    body = prefetching(source="pvc://model-store/meta-llama/Llama-3.1-8B-Instruct")
    children = render_children(resolve(body))
    job = children.prefetch
    assert job is not None
    pod = job["spec"]["template"]["spec"]
    env = env_of(pod["containers"][0])
    assert env["LLMOP_LOCAL_SOURCE"] == "/model-source/meta-llama/Llama-3.1-8B-Instruct"
    source = {"claimName": "model-store", "readOnly": True}
    assert {"name": names.MODEL_SOURCE_VOLUME, "persistentVolumeClaim": source} in pod["volumes"]
    worker = children.ray["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]
    volumes = [v["name"] for v in worker["template"]["spec"]["volumes"]]
    assert names.MODEL_SOURCE_VOLUME not in volumes


def test_a_new_source_or_revision_is_a_new_job_and_directory() -> None:
    first = the_job(prefetching())
    revised = the_job(prefetching(revision="v2"))
    moved = the_job(prefetching(source="s3://acme-models/llama"))
    named = {j["metadata"]["name"] for j in (first, revised, moved)}
    assert len(named) == 3
    containers = [j["spec"]["template"]["spec"]["containers"][0] for j in (first, revised, moved)]
    targets = {env_of(c)["LLMOP_TARGET"] for c in containers}
    assert len(targets) == 3


def test_the_longest_name_makes_a_job_name_of_at_most_63_characters() -> None:
    body = prefetching()
    body["metadata"]["name"] = "a" * 47
    name = the_job(body)["metadata"]["name"]
    assert len(name) == 63
    assert name.startswith("a" * 47 + "-prefetch-")


def test_the_job_bounds_are_typed_fields() -> None:
    body = prefetching()
    body["spec"]["storage"]["modelCache"]["prefetchJob"] = {
        "backoffLimit": 0,
        "activeDeadlineSeconds": 600,
    }
    spec = the_job(body)["spec"]
    assert (spec["backoffLimit"], spec["activeDeadlineSeconds"]) == (0, 600)


# --- the API's refusals -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"prefetch": False, "prefetchJob": {"backoffLimit": 1}}, "modelCache.prefetchJob"),
        ({"prefetchJob": {"backoffLimit": -1}}, "backoffLimit"),
        ({"prefetchJob": {"activeDeadlineSeconds": 0}}, "activeDeadlineSeconds"),
        ({"prefetch": "yes"}, "prefetch"),
    ],
)
def test_bad_prefetch_fields_are_refused_by_name(change: Body, field: str) -> None:
    body = prefetching()
    body["spec"]["storage"]["modelCache"].update(change)
    with pytest.raises(SpecError, match=field):
        resolve(body)


def test_prefetch_is_refused_in_mode_job() -> None:
    body = load_one(SAMPLES / "finetune-job.yaml")
    body["spec"]["model"] = {"source": "hf://Qwen/Qwen2.5-0.5B"}
    body["spec"]["storage"]["modelCache"] = {"prefetch": True}
    with pytest.raises(SpecError, match=r"spec\.storage\.modelCache\.prefetch does not apply"):
        resolve(body)


# --- the program, run for real on local directories ---------------------------------------


def run_program(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", PROGRAM],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def pvc_env(source: Path, target: Path) -> dict[str, str]:
    return {
        "LLMOP_SOURCE": "pvc://model-store/org/model",
        "LLMOP_REVISION": "",
        "LLMOP_LOCAL_SOURCE": str(source),
        "LLMOP_TARGET": str(target),
    }


def test_the_program_copies_a_pvc_source_and_marks_it(tmp_path: Path) -> None:
    source = tmp_path / "source"
    (source / "sub").mkdir(parents=True)
    (source / "config.json").write_text('{"model_type": "llama"}')
    (source / "sub" / "weights.safetensors").write_bytes(b"\0" * 1024)
    target = tmp_path / "cache" / "prefetched" / "abc"
    done = run_program(pvc_env(source, target))
    assert done.returncode == 0, done.stderr
    assert (target / "config.json").read_text() == '{"model_type": "llama"}'
    assert (target / "sub" / "weights.safetensors").stat().st_size == 1024
    marker = json.loads((target / MARKER).read_text())
    assert marker == {"source": "pvc://model-store/org/model", "revision": ""}
    assert sorted(p.name for p in target.parent.iterdir()) == ["abc"]
    # A second run finds it cached and leaves it as it is.
    (source / "config.json").write_text("changed")
    again = run_program(pvc_env(source, target))
    assert again.returncode == 0, again.stderr
    assert "already cached" in again.stdout
    assert (target / "config.json").read_text() == '{"model_type": "llama"}'


def test_a_failed_download_leaves_no_model_and_fails(tmp_path: Path) -> None:
    target = tmp_path / "cache" / "prefetched" / "abc"
    target.parent.mkdir(parents=True)
    stale = target.parent / f"abc{PARTIAL_SUFFIX}dead"
    stale.mkdir()
    done = run_program(pvc_env(tmp_path / "missing", target))
    assert done.returncode == 1
    assert "download failed" in done.stderr
    assert not target.exists()
    # The earlier attempt's partial directory is gone; this one's is left (a retry's
    # pod removes it), never renamed to the target.
    left = [p.name for p in target.parent.iterdir()]
    assert all(name.startswith(f"abc{PARTIAL_SUFFIX}") for name in left)
    assert f"abc{PARTIAL_SUFFIX}dead" not in left


def test_a_target_of_another_source_is_replaced(tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    (source / "new.bin").write_bytes(b"new")
    target = tmp_path / "cache" / "abc"
    target.mkdir(parents=True)
    (target / MARKER).write_text(json.dumps({"source": "hf://other/model", "revision": ""}))
    (target / "old.bin").write_bytes(b"old")
    done = run_program(pvc_env(source, target))
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in target.iterdir()) == sorted([MARKER, "new.bin"])


def test_an_unknown_scheme_fails(tmp_path: Path) -> None:
    env = {"LLMOP_SOURCE": "ftp://x/y", "LLMOP_TARGET": str(tmp_path / "t")}
    done = run_program(env)
    assert done.returncode != 0
    assert not (tmp_path / "t").exists()


# --- the reconcile ----------------------------------------------------------------------


def jobs(server: FakeApiServer) -> dict[str, Body]:
    return {p: o for p, o in server.objects.items() if "/batch/v1/" in p}


def finish(server: FakeApiServer, path: str, kind: str, message: str = "") -> None:
    """The Job controller's verdict on a Job (its terminal condition)."""
    condition = {"type": kind, "status": "True", "reason": kind, "message": message}
    server.objects[path]["status"] = {"conditions": [condition]}


def store(server: FakeApiServer, body: Body) -> str:
    return stored_body(server, copy.deepcopy(body))


def edit(server: FakeApiServer, name: str, **model: Any) -> None:
    live = server.objects[llmd_path(name)]
    live["spec"]["model"].update(model)
    live["metadata"]["generation"] += 1


SERVICE = ray_path("rayservices", "llama-8b")


def test_the_job_is_created_first_and_no_ray_service(
    server: FakeApiServer, api: RecordingKubeApi
) -> None:
    name = store(server, prefetching())
    status = reconcile(server, name, api)
    (job,) = jobs(server).values()
    assert job["metadata"]["ownerReferences"][0]["controller"] is True
    assert job["metadata"]["ownerReferences"][0]["kind"] == "LLMDeployment"
    assert SERVICE not in server.objects
    assert status["phase"] == Phase.PENDING
    cached = conditions(status)[ConditionType.MODEL_CACHED]
    assert (cached["status"], cached["reason"]) == ("False", Reason.DOWNLOADING)
    ready = conditions(status)[ConditionType.READY]
    assert ready["reason"] == Reason.DOWNLOADING
    assert "cachedModel" not in status
    # A reconcile while it downloads changes nothing.
    before = len(server.writes)
    reconcile(server, name, api)
    assert server.writes[before:] == []


def test_a_complete_job_lets_the_ray_service_be_made(
    server: FakeApiServer, api: RecordingKubeApi
) -> None:
    name = store(server, prefetching())
    reconcile(server, name, api)
    (path,) = jobs(server)
    finish(server, path, "Complete")
    status = reconcile(server, name, api)
    assert SERVICE in server.objects
    cached = conditions(status)[ConditionType.MODEL_CACHED]
    assert (cached["status"], cached["reason"]) == ("True", Reason.CACHED)
    target = env_of(server.objects[path]["spec"]["template"]["spec"]["containers"][0])
    assert status["cachedModel"] == target["LLMOP_TARGET"]
    assert target["LLMOP_TARGET"] in server.objects[SERVICE]["spec"]["serveConfigV2"]
    # Now KubeRay's turn: the RayService has no status yet.
    assert conditions(status)[ConditionType.READY]["reason"] == Reason.WAITING_FOR_KUBERAY
    # Cached is recorded: the Job's deletion later deletes nothing and downloads nothing.
    server.objects.pop(path)
    again = reconcile(server, name, api)
    assert jobs(server) == {}
    assert SERVICE in server.objects
    assert conditions(again)[ConditionType.MODEL_CACHED]["reason"] == Reason.CACHED


def test_a_failed_job_says_why_and_makes_no_ray_service(
    server: FakeApiServer, api: RecordingKubeApi
) -> None:
    name = store(server, prefetching())
    reconcile(server, name, api)
    (path,) = jobs(server)
    finish(server, path, "Failed", "Job has reached the specified backoff limit")
    status = reconcile(server, name, api)
    assert SERVICE not in server.objects
    cached = conditions(status)[ConditionType.MODEL_CACHED]
    assert (cached["status"], cached["reason"]) == ("False", Reason.DOWNLOAD_FAILED)
    assert "Job has reached the specified backoff limit" in cached["message"]
    progressing = conditions(status)[ConditionType.PROGRESSING]
    assert (progressing["status"], progressing["reason"]) == ("False", Reason.DOWNLOAD_FAILED)
    assert status["phase"] == Phase.PENDING
    # Deleting the failed Job downloads again.
    server.objects.pop(path)
    reconcile(server, name, api)
    assert list(jobs(server)) == [path]


def test_a_new_source_downloads_again_while_the_old_model_keeps_serving(
    server: FakeApiServer, api: RecordingKubeApi
) -> None:
    name = store(server, prefetching())
    reconcile(server, name, api)
    (first,) = jobs(server)
    finish(server, first, "Complete")
    old = reconcile(server, name, api)
    served = copy.deepcopy(server.objects[SERVICE]["spec"])

    edit(server, name, revision="v2")
    status = reconcile(server, name, api)
    (second,) = jobs(server)
    assert second != first  # the old Job is deleted, a new one made
    assert server.objects[SERVICE]["spec"] == served  # held: the new files are not there
    assert conditions(status)[ConditionType.MODEL_CACHED]["reason"] == Reason.DOWNLOADING
    assert status["cachedModel"] == old["cachedModel"]

    finish(server, second, "Complete")
    done = reconcile(server, name, api)
    assert done["cachedModel"] != old["cachedModel"]
    assert done["cachedModel"] in server.objects[SERVICE]["spec"]["serveConfigV2"]
    # A failure of a later download never deletes the Ray resource.
    edit(server, name, revision="v3")
    reconcile(server, name, api)
    (third,) = jobs(server)
    finish(server, third, "Failed", "DeadlineExceeded")
    failed = reconcile(server, name, api)
    assert SERVICE in server.objects
    assert conditions(failed)[ConditionType.MODEL_CACHED]["reason"] == Reason.DOWNLOAD_FAILED


def test_turning_prefetch_off_deletes_its_jobs_and_condition(
    server: FakeApiServer, api: RecordingKubeApi
) -> None:
    name = store(server, prefetching())
    reconcile(server, name, api)
    (path,) = jobs(server)
    finish(server, path, "Complete")
    reconcile(server, name, api)
    live = server.objects[llmd_path(name)]
    live["spec"]["storage"]["modelCache"]["prefetch"] = False
    live["metadata"]["generation"] += 1
    status = reconcile(server, name, api)
    assert jobs(server) == {}
    assert ConditionType.MODEL_CACHED not in conditions(status)
    assert "cachedModel" not in status
    assert "/prefetched/" not in server.objects[SERVICE]["spec"]["serveConfigV2"]


def test_without_prefetch_no_job_is_asked_for(server: FakeApiServer, api: RecordingKubeApi) -> None:
    name = store(server, load_one(SAMPLES / "llama-8b-l4.yaml"))
    status = reconcile(server, name, api)
    reconcile(server, name, api)
    assert [a for a in server.accesses if a.group == "batch"] == []
    assert ConditionType.MODEL_CACHED not in conditions(status)
    assert job_path("x").startswith("/apis/batch/v1/")


def test_the_operator_watches_its_own_jobs_and_their_changes_reconcile_the_parent() -> None:
    import kopf

    from llm_operator.controller import handlers, reconciler

    assert handlers is not None
    watching = [
        (h.selector.plural or h.selector.any_name, h.labels)
        for h in kopf.get_default_registry()._watching.get_all_handlers()
        if h.selector is not None and h.selector.group == "batch"
    ]
    assert watching == [("jobs", handlers.CHILD_LABELS)]
    job = the_job(prefetching())
    assert reconciler.parent_of(job) == ("team-a", "llama-8b")
    assert reconciler.redundant_child_event("ADDED", "Job")
    assert not reconciler.redundant_child_event("MODIFIED", "Job")


# --- the CLI ----------------------------------------------------------------------------
GOLDEN_INPUT = Path(__file__).resolve().parent / "golden" / "prefetch" / "input.yaml"


def test_render_prints_the_job_and_plan_mentions_it(capsys: pytest.CaptureFixture[str]) -> None:
    from llm_operator.cli import EXIT_OK, main

    assert main(["render", "-f", str(GOLDEN_INPUT)]) == EXIT_OK
    rendered = capsys.readouterr().out
    assert kinds(list(yaml.safe_load_all(rendered))) == [
        "PersistentVolumeClaim",
        "Job",
        "RayService",
    ]
    assert main(["plan", "-f", str(GOLDEN_INPUT)]) == EXIT_OK
    planned = capsys.readouterr().out
    assert "model prefetch:     Job llama-8b-prefetch-prefetch-" in planned
    assert "the RayService is made once it is cached" in planned
