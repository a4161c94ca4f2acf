"""bench/ideal.py, the scale benchmark's ideal controller: it must make exactly the writes
the operator's first reconcile makes, or the ratio it anchors measures nothing."""

from __future__ import annotations

import copy
import json

import pytest
from bench import ideal
from kubernetes import client

from conftest import SAMPLES, load_one
from fakeapi import NAMESPACE, FakeApiServer, cluster_api, llmd_path
from llm_operator.controller import reconciler
from llm_operator.settings import OperatorSettings

NOW = "2026-01-01T00:00:00Z"
SETTINGS = OperatorSettings()


@pytest.mark.parametrize("sample", ["quickstart", "prefill-decode", "custom-engine"])
def test_the_ideal_controller_writes_what_the_operator_writes(
    sample: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = load_one(SAMPLES / f"{sample}.yaml")
    body["metadata"]["namespace"] = NAMESPACE
    prepared = ideal.prepare(copy.deepcopy(body), SETTINGS, NOW)

    server = FakeApiServer()
    stored = server.put(llmd_path(body["metadata"]["name"]), copy.deepcopy(body))
    monkeypatch.setattr(reconciler, "_now", lambda: NOW)
    reconciler.reconcile(copy.deepcopy(stored), cluster_api(server), SETTINGS)

    operator = [
        (w.path, w.content_type or "application/json", w.field_manager, w.body)
        for w in server.writes
    ]
    wanted = [
        # The client sends the body as JSON; compare what arrives.
        (r.path, r.content_type, "llm-operator", json.loads(json.dumps(r.body)))
        for r in prepared.requests(stored["metadata"]["uid"])
    ]
    assert operator == wanted


def test_a_sample_with_claims_is_refused() -> None:
    body = load_one(SAMPLES / "llama-8b-l4.yaml")
    with pytest.raises(ValueError, match="no claims"):
        ideal.prepare(body, SETTINGS, NOW)


def test_session_parts_carry_the_kubeconfigs_token() -> None:
    configuration = client.Configuration()
    configuration.host = "https://api.test"
    configuration.api_key = {"authorization": "Bearer abc"}
    host, _, headers = ideal.session_parts(configuration)
    assert (host, headers) == ("https://api.test", {"Authorization": "Bearer abc"})
