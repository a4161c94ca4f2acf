"""CPU per reconcile, without a cluster (`make bench-reconcile`).

The operator's reconcile (`reconciler.reconcile`) runs against the in-memory API server
of the unit tests (tests/fakeapi.py), behind the real Kubernetes client, for every
sample in manifests/samples and three kinds of event:

  create  the first reconcile of a new LLMDeployment (creates its children, one status);
  resync  a reconcile with nothing to do (a restart's resume): reads only, no write;
  child   a child's event as `handlers.on_child_event` handles it: read the parent, then
          reconcile after KubeRay wrote the RayService's status (one status write).

It reports CPU milliseconds per reconcile (`time.process_time`, the median), less the fake API
server's own share (what a real API server would spend, not the operator), and what
else the operator spends per event outside the reconcile: our LLMDeployment event
handler (the metrics' record of the object) and the JSON work of the synchronous
Kubernetes client and of a watch event. `--profile` adds cProfile's top functions.
Results are merged into bench/results/reconcile_cpu.json under `--label`.

A flame graph: py-spy record -o bench/results/reconcile_cpu.svg -- \
    .venv/bin/python -m bench.reconcile_cpu --rounds 300 --label profiled --no-write
"""

from __future__ import annotations

import argparse
import copy
import cProfile
import io
import json
import os
import platform
import pstats
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kopf
import kubernetes
import pydantic
import yaml
from prometheus_client import CollectorRegistry
from tests.fakeapi import NAMESPACE, FakeApiServer, RecordingKubeApi, llmd_path, ray_path

from llm_operator import yamlio
from llm_operator.api.vocabulary import RayKind
from llm_operator.controller import kube, reconciler
from llm_operator.controller.metrics import OperatorMetrics, record_of
from llm_operator.render import names
from llm_operator.settings import OperatorSettings

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "manifests" / "samples"
RESULTS = Path(__file__).resolve().parent / "results" / "reconcile_cpu.json"
SETTINGS = OperatorSettings()
SCENARIOS = ("create", "resync", "child")
Body = dict[str, Any]


class TimedServer(FakeApiServer):
    """The fake API server, keeping the CPU it spends answering (not the operator's)."""

    def __init__(self) -> None:
        super().__init__()
        self.cpu = 0.0

    def handle(self, method: str, url: str, headers: dict[str, str], body: Any) -> Any:
        started = time.process_time()
        try:
            return super().handle(method, url, headers, body)
        finally:
            self.cpu += time.process_time() - started


def samples() -> dict[str, Body]:
    out = {}
    for path in sorted(SAMPLES.glob("*.yaml")):
        (body,) = yamlio.load_all(path.read_text(encoding="utf-8"))
        body["metadata"].update(namespace=NAMESPACE, uid=f"uid-{path.stem}")
        body["metadata"].setdefault("generation", 1)
        out[path.stem] = body
    return out


def kuberay_status(service: Body, round_: int) -> Body:
    """What KubeRay writes on a new RayService: its pending cluster, not yet ready."""
    cluster = f"{service['metadata']['name']}-{round_:05d}"
    return {
        "observedGeneration": 1,
        "pendingServiceStatus": {"rayClusterName": cluster},
        "conditions": [
            {"type": "Ready", "status": "False", "reason": "Initializing", "message": ""},
            {"type": "UpgradeInProgress", "status": "False", "reason": "NoActiveCluster"},
        ],
    }


class Sample:
    """One sample's LLMDeployment in a fresh fake API server, with the operator's API."""

    def __init__(self, body: Body) -> None:
        self.server = TimedServer()
        self.clients = kube.Clients(*_clients(self.server))
        self.api = RecordingKubeApi(self.clients)
        self.name = body["metadata"]["name"]
        self.server.put(llmd_path(self.name), copy.deepcopy(body))

    def stored(self) -> Body:
        """The LLMDeployment as kopf hands it over (its own copy)."""
        return copy.deepcopy(self.server.objects[llmd_path(self.name)])

    def ray_path(self) -> str | None:
        for kind, plural in kube.RAY_PLURALS.items():
            name = (
                names.ray_service_name if kind == RayKind.RAY_SERVICE else names.ray_cluster_name
            )(self.name)
            if ray_path(plural, name) in self.server.objects:
                return ray_path(plural, name)
        return None


def _clients(server: FakeApiServer) -> tuple[Any, Any, Any]:
    from tests.fakeapi import clients_of

    clients = clients_of(server)
    return clients.custom, clients.core, clients.batch


def timed(sample: Sample, run: Callable[[], object]) -> tuple[float, float, int]:
    """(CPU seconds in all, of which the fake server's, writes) of one call."""
    writes, server_cpu = len(sample.server.writes), sample.server.cpu
    started = time.process_time()
    run()
    total = time.process_time() - started
    return total, sample.server.cpu - server_cpu, len(sample.server.writes) - writes


def child_event(sample: Sample) -> None:
    """`handlers.on_child_event` after its filters: read the parent, reconcile it."""
    parent = kube.get_llm_deployment(sample.clients, NAMESPACE, sample.name)
    if parent is not None and reconciler.parent_needs_reconcile(parent):
        reconciler.reconcile(parent, sample.api, SETTINGS)


def one_round(body: Body, round_: int) -> dict[str, tuple[float, float, int]]:
    sample = Sample(body)
    created = sample.stored()
    out = {"create": timed(sample, lambda: reconciler.reconcile(created, sample.api, SETTINGS))}
    resumed = sample.stored()
    out["resync"] = timed(sample, lambda: reconciler.reconcile(resumed, sample.api, SETTINGS))
    path = sample.ray_path()
    if path is not None and path.split("/")[-2] == "rayservices":
        live = sample.server.objects[path]
        sample.server.put(path, {**live, "status": kuberay_status(live, round_)})
        out["child"] = timed(sample, lambda: child_event(sample))
    return out


def measure(bodies: dict[str, Body], rounds: int) -> dict[str, Any]:
    per_sample: dict[str, Any] = {}
    pooled: dict[str, list[tuple[float, float, int]]] = {s: [] for s in SCENARIOS}
    for case, body in bodies.items():
        found: dict[str, list[tuple[float, float, int]]] = {s: [] for s in SCENARIOS}
        for round_ in range(rounds):
            for scenario, figures in one_round(body, round_).items():
                found[scenario].append(figures)
        per_sample[case] = {s: summarise(v) for s, v in found.items() if v}
        for scenario, values in found.items():
            pooled[scenario] += values
    return {
        "all_samples": {s: summarise(v) for s, v in pooled.items() if v},
        "per_sample": per_sample,
    }


def summarise(values: list[tuple[float, float, int]]) -> dict[str, float]:
    # Medians: the machine's other load shows up as outliers, not as a shift.
    total = statistics.median(v[0] for v in values)
    server = statistics.median(v[1] for v in values)
    return {
        "cpu_ms": round(1000 * total, 3),
        "fake_server_cpu_ms": round(1000 * server, 3),
        "operator_cpu_ms": round(1000 * (total - server), 3),
        "writes": round(statistics.fmean(v[2] for v in values), 2),
    }


def per_call_ms(run: Callable[[], object], repeat: int) -> float:
    started = time.process_time()
    for _ in range(repeat):
        run()
    return round(1000 * (time.process_time() - started) / repeat, 4)


def around_the_reconcile(bodies: dict[str, Body], repeat: int) -> dict[str, Any]:
    """CPU per event outside `reconcile`, for the quick-start sample: our LLMDeployment
    event handler (`count_in_metrics`: every ADDED/MODIFIED event, a listing's
    included), a watch event's JSON parse (kopf reads every event of both kinds), and the
    synchronous client's request and response work for the RayService."""
    sample = Sample(bodies["quickstart"])
    reconciler.reconcile(sample.stored(), sample.api, SETTINGS)
    body = sample.stored()
    path = sample.ray_path()
    assert path is not None
    service = copy.deepcopy(sample.server.objects[path])
    metrics = OperatorMetrics(registry=CollectorRegistry())
    api_client = sample.clients.custom.api_client
    service_json = json.dumps(service)
    event_lines = {
        kind: json.dumps({"type": "MODIFIED", "object": obj})
        for kind, obj in (("llmdeployment", body), ("rayservice", service))
    }
    counter = iter(range(10**9))

    def track() -> None:
        # A new resourceVersion each time, as a watch delivers (no cached answer).
        meta = {**body["metadata"], "resourceVersion": str(next(counter))}
        metrics.track("MODIFIED", {**body, "metadata": meta}, SETTINGS.gpu_memory_gib)

    return {
        "sample": "quickstart",
        "metrics_event_handler_ms": per_call_ms(track, repeat),
        "metrics_event_handler_ms_by_llmdeployments_in_namespace": {
            str(n): metrics_with(n, body, repeat) for n in (1, 1000, 5000)
        },
        "watch_event_json_loads_ms": {
            kind: per_call_ms(lambda line=line: json.loads(line), repeat)
            for kind, line in event_lines.items()
        },
        "client_request_sanitize_and_dumps_rayservice_ms": per_call_ms(
            lambda: json.dumps(api_client.sanitize_for_serialization(service)), repeat
        ),
        "client_response_deserialize_rayservice_ms": per_call_ms(
            lambda: api_client.deserialize(service_json, "object", "application/json"), repeat
        ),
        "reconciler_plain_copy_of_body_ms": per_call_ms(lambda: reconciler._plain(body), repeat),
        "serve_config_yaml_ms": per_call_ms(
            lambda: yaml.safe_dump(
                yaml.safe_load(service["spec"]["serveConfigV2"]), sort_keys=False
            ),
            repeat,
        ),
    }


def metrics_with(count: int, body: Body, repeat: int) -> float:
    """CPU of `count_in_metrics` when `count` LLMDeployments share the namespace, for an
    event that changes the object's record (its phase), as the status write's does."""
    metrics = OperatorMetrics(registry=CollectorRegistry())
    record = record_of(body, SETTINGS.gpu_memory_gib)
    for index in range(count - 1):
        metrics.observe(NAMESPACE, f"other-{index}", f"uid-{index}", record)
    phases = iter(range(10**9))

    def track() -> None:
        phase = ("Pending", "Ready")[next(phases) % 2]
        metrics.track("MODIFIED", {**body, "status": {"phase": phase}}, SETTINGS.gpu_memory_gib)

    return per_call_ms(track, repeat)


def profile(bodies: dict[str, Body], rounds: int, top: int) -> dict[str, list[dict[str, Any]]]:
    profiler = cProfile.Profile()
    profiler.enable()
    measure(bodies, rounds)
    profiler.disable()
    stats = pstats.Stats(profiler, stream=io.StringIO())
    total = stats.total_tt  # type: ignore[attr-defined]
    rows = []
    for (filename, line, function), (_, calls, tottime, cumtime, _) in stats.stats.items():  # type: ignore[attr-defined]
        rows.append(
            {
                "function": f"{_short(filename)}:{line}({function})",
                "calls": calls,
                "own_percent": round(100 * tottime / total, 1),
                "cumulative_percent": round(100 * cumtime / total, 1),
            }
        )
    by = {
        view: sorted(rows, key=lambda r: r[f"{view}_percent"], reverse=True)[:top]
        for view in ("cumulative", "own")
    }
    return by


def _short(filename: str) -> str:
    for marker in ("site-packages/", "src/", "lib/python3"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return Path(filename).name


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "system": platform.system(),
        "python": platform.python_version(),
        "versions": {
            "kopf": kopf.__version__ if hasattr(kopf, "__version__") else "1.45.2",
            "kubernetes": kubernetes.__version__,
            "pydantic": pydantic.VERSION,
            "PyYAML": yaml.__version__,
            "libyaml": yaml.__with_libyaml__,
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=30, help="reconciles per sample and kind")
    parser.add_argument("--label", default="current", help="key of this run in the results")
    parser.add_argument("--profile", action="store_true", help="add cProfile's top functions")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    bodies = samples()
    measure(bodies, 2)  # warm up: imports, pydantic's and the client's caches
    result: dict[str, Any] = {
        "rounds_per_sample": args.rounds,
        **measure(bodies, args.rounds),
        "around_the_reconcile": around_the_reconcile(bodies, 10 * args.rounds),
    }
    if args.profile:
        result["cprofile_top"] = profile(bodies, max(1, args.rounds // 3), args.top)
    for scenario, figures in result["all_samples"].items():
        print(f"{scenario:7} {figures}")
    print(json.dumps(result["around_the_reconcile"], indent=1))
    for view, rows in result.get("cprofile_top", {}).items():
        print(f"cProfile, by {view} time: cumulative %, own %, calls, function")
        for row in rows:
            print(
                f"{row['cumulative_percent']:6.1f} {row['own_percent']:6.1f} {row['calls']:8} "
                f"{row['function']}"
            )
    if args.no_write:
        return
    recorded = json.loads(RESULTS.read_text(encoding="utf-8")) if RESULTS.exists() else {}
    recorded["machine"] = machine()
    recorded.setdefault("runs", {})[args.label] = result
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(recorded, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
