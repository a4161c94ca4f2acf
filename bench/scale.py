"""Scale benchmark on the local control plane (`make bench`, after `make cluster-up`).

With the KubeRay operator stopped, so only this operator reacts, for each N:
  1. create N LLMDeployments and time until every one has its RayService and a status
     with observedGeneration == generation (a watch sees the statuses arrive);
  2. create the same N RayServices directly through the same client, and time that;
  3. restart the operator (kopf resumes every LLMDeployment: a full resync) and stay
     idle for the rest of the steady-state window;
  4. count, from the API server's audit log, the writes the operator's service account
     made in step 1 (per LLMDeployment, by resource) and in step 3 (the target is none);
  5. report the ratio, the operator's CPU time while converging, its RSS (before and
     after the resync), how long the resync took and its CPU over the window's last minute;
  6. the floor: with the operator stopped, the ideal controller of bench/ideal.py (a watch
     and the operator's two writes per object, rendered beforehand) converges N more,
     and the operator's time over its time is the `ideal_ratio`;
  7. the peer: with our operator stopped and KubeRay running, create N RayServices in a
     namespace KubeRay watches and time until each has its RayCluster; KubeRay's CPU
     seconds, its audited writes and RSS per object go next to ours.
Then, at each steady arrival rate (LLMDeployments created per second for a minute, on a
schedule, not as fast as possible), the latency of every one from its create request to
its RayService appearing and to its status being written (p50/p95/p99, from watches).
Results go to bench/results/scale.json. Both operators run again afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import concurrent.futures
import copy
import json
import math
import os
import platform
import subprocess
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import urllib3
from bench import ideal
from e2e import audit, support  # the e2e suite's audit-log reader, endpoints, scraping
from kubernetes import client, config, watch

from llm_operator import yamlio
from llm_operator.api.constants import GROUP, PLURAL, VERSION
from llm_operator.api.validation import resolve
from llm_operator.render import names, render
from llm_operator.settings import OperatorSettings

ROOT = Path(__file__).resolve().parent.parent
STATE = ROOT / ".e2e"
CLUSTER = ROOT / "e2e" / "cluster.sh"
RESULTS = Path(__file__).resolve().parent / "results" / "scale.json"
SAMPLE = ROOT / "manifests" / "samples" / "quickstart.yaml"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
CONVERGE_TIMEOUT_SECONDS = 1800
IDLE_SECONDS = 60.0
CLUSTER_NAME = "llmop"  # e2e/cluster/settings.env
# KubeRay watches only the e2e pool's namespaces (e2e/cluster.sh): the peer path takes the
# pool's last one (E2E_NAMESPACE_PREFIX, E2E_NAMESPACE_COUNT in e2e/cluster/settings.env).
KUBERAY_NAMESPACE = "llmop-e2e-40"
# The Kubernetes Python client's user agent: the benchmark's own writes.
PYTHON_CLIENT_AGENT = "OpenAPI-Generator/"


def pid_of(component: str) -> int:
    return int((STATE / f"{component}.pid").read_text(encoding="utf-8"))


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text(encoding="utf-8").splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8").rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


def control_plane_pid(component: str) -> int:
    """A kwokctl component's pid (the binary runtime keeps pid files in its work dir)."""
    pid_file = STATE / "kwok" / "clusters" / CLUSTER_NAME / "pids" / f"{component}.pid"
    return int(pid_file.read_text(encoding="utf-8"))


def control_plane_cpu() -> float:
    """CPU seconds kube-apiserver and etcd have used so far."""
    return sum(cpu_seconds(control_plane_pid(c)) for c in ("kube-apiserver", "etcd"))


def cluster(*args: str) -> None:
    subprocess.run(["bash", str(CLUSTER), *args], check=True, capture_output=True)


def bodies(namespace: str, count: int) -> list[dict[str, Any]]:
    (base,) = yamlio.load_all(SAMPLE.read_text(encoding="utf-8"))
    out = []
    for index in range(count):
        body = copy.deepcopy(base)
        body["metadata"] = {"name": f"m-{index:04d}", "namespace": namespace}
        out.append(body)
    return out


def make_namespace(core: client.CoreV1Api, prefix: str) -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": name}})
    return name


class ConvergenceWatch(threading.Thread):
    """Watches a namespace's LLMDeployments until `count` report their generation."""

    def __init__(self, custom: client.CustomObjectsApi, namespace: str, count: int) -> None:
        super().__init__(daemon=True)
        self.custom, self.namespace, self.count = custom, namespace, count
        self.done_at: float | None = None
        self.ready = threading.Event()

    def run(self) -> None:
        converged: set[str] = set()
        stream = watch.Watch()
        self.ready.set()
        for event in stream.stream(
            self.custom.list_namespaced_custom_object,
            GROUP,
            VERSION,
            self.namespace,
            PLURAL,
            timeout_seconds=CONVERGE_TIMEOUT_SECONDS,
        ):
            item = event["object"]
            meta = item["metadata"]
            if (item.get("status") or {}).get("observedGeneration") == meta["generation"]:
                converged.add(meta["name"])
            if len(converged) == self.count:
                self.done_at = time.monotonic()
                stream.stop()


class FirstSeen(threading.Thread):
    """Watches one kind in a namespace and notes when each object first meets `done`."""

    def __init__(self, list_call: Any, args: tuple[Any, ...], done: Any) -> None:
        super().__init__(daemon=True)
        self.list_call, self.args, self.done = list_call, args, done
        self.at: dict[str, float] = {}
        self.ready = threading.Event()
        self.stopped = threading.Event()
        self.stream = watch.Watch()

    def run(self) -> None:
        self.ready.set()
        try:
            for event in self.stream.stream(
                self.list_call, *self.args, timeout_seconds=CONVERGE_TIMEOUT_SECONDS
            ):
                item = event["object"]
                name = item["metadata"]["name"]
                if name not in self.at and self.done(item):
                    self.at[name] = time.monotonic()
        except urllib3.exceptions.ProtocolError:
            if not self.stopped.is_set():
                raise  # a watch cut short other than by `stop`

    def stop(self) -> None:
        self.stopped.set()
        self.stream.stop()


def status_written(item: dict[str, Any]) -> bool:
    return (item.get("status") or {}).get("observedGeneration") == item["metadata"]["generation"]


def percentiles(samples: list[float]) -> dict[str, float | None]:
    """Nearest-rank p50/p95/p99 in milliseconds."""
    ordered = sorted(samples)

    def rank(p: float) -> float | None:
        if not ordered:
            return None
        return round(1000 * ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)], 1)

    return {"p50_ms": rank(50), "p95_ms": rank(95), "p99_ms": rank(99)}


def measure_latency(
    core: client.CoreV1Api, custom: client.CustomObjectsApi, rate: float, seconds: float
) -> dict[str, Any]:
    """Create `rate` LLMDeployments a second for `seconds`, each at its scheduled instant
    (a few client threads keep the schedule when one create is slow), and take each one's
    latency from its create request to its RayService and to its written status."""
    namespace = make_namespace(core, "bench-rate")
    count = int(rate * seconds)
    services = FirstSeen(
        custom.list_namespaced_custom_object,
        (names.RAY_GROUP, names.RAY_VERSION, namespace, "rayservices"),
        lambda item: True,
    )
    statuses = FirstSeen(
        custom.list_namespaced_custom_object, (GROUP, VERSION, namespace, PLURAL), status_written
    )
    for watcher in (services, statuses):
        watcher.start()
        watcher.ready.wait()
    sent: dict[str, float] = {}
    rendered = {f"rate-{i:05d}": body for i, body in enumerate(bodies(namespace, count))}
    for name, body in rendered.items():
        body["metadata"]["name"] = name

    def create(name: str) -> None:
        sent[name] = time.monotonic()
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, rendered[name])

    started = time.monotonic()
    lag = 0.0
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        futures = []
        for index, name in enumerate(rendered):
            due = started + index / rate
            time.sleep(max(0.0, due - time.monotonic()))
            lag = max(lag, time.monotonic() - due)
            futures.append(pool.submit(create, name))
        for future in futures:
            future.result()
    deadline = time.monotonic() + CONVERGE_TIMEOUT_SECONDS
    while len(statuses.at) < count and time.monotonic() < deadline:
        time.sleep(0.5)
    for watcher in (services, statuses):
        watcher.stop()
    to_service = [services.at[n] - sent[n] for n in sent if n in services.at]
    to_status = [statuses.at[n] - sent[n] for n in sent if n in statuses.at]
    delete_and_wait(core, [namespace])
    return {
        "rate_per_second": rate,
        "seconds": seconds,
        "created": count,
        # How far the schedule slipped: the client's own lag, not the operator's.
        "schedule_lag_ms_max": round(1000 * lag, 1),
        "rayservice_seen": len(to_service),
        "status_written": len(to_status),
        "create_to_rayservice": percentiles(to_service),
        "create_to_status": percentiles(to_status),
    }


def ray_services(custom: client.CustomObjectsApi, namespace: str) -> set[str]:
    listing = custom.list_namespaced_custom_object(
        names.RAY_GROUP, names.RAY_VERSION, namespace, "rayservices"
    )
    return {item["metadata"]["name"] for item in listing["items"]}


def time_operator(custom: client.CustomObjectsApi, namespace: str, count: int) -> float:
    watcher = ConvergenceWatch(custom, namespace, count)
    watcher.start()
    watcher.ready.wait()
    started = time.monotonic()
    for body in bodies(namespace, count):
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    watcher.join(CONVERGE_TIMEOUT_SECONDS)
    if watcher.done_at is None:
        raise RuntimeError(f"{namespace}: not every LLMDeployment converged")
    missing = count - len(ray_services(custom, namespace))
    if missing:
        raise RuntimeError(f"{namespace}: {missing} LLMDeployments converged without a RayService")
    return watcher.done_at - started


def time_direct(custom: client.CustomObjectsApi, namespace: str, count: int) -> float:
    services = []
    for body in bodies(namespace, count):
        (service,) = [c for c in render(resolve(body)) if c["kind"] == "RayService"]
        services.append(service)
    started = time.monotonic()
    for service in services:
        custom.create_namespaced_custom_object(
            names.RAY_GROUP, names.RAY_VERSION, namespace, "rayservices", service
        )
    return time.monotonic() - started


def time_ideal(namespace: str, count: int) -> float:
    """The ideal controller's time for `count` LLMDeployments (our operator stopped)."""
    now_ = now().strftime("%Y-%m-%dT%H:%M:%SZ")
    settings = OperatorSettings()
    prepared = {
        body["metadata"]["name"]: ideal.prepare(body, settings, now_)
        for body in bodies(namespace, count)
    }
    configuration = client.Configuration.get_default_copy()
    custom = client.CustomObjectsApi()
    watcher = ConvergenceWatch(custom, namespace, count)
    watcher.start()
    watcher.ready.wait()

    async def go() -> None:
        started_watch = asyncio.Event()
        controller = asyncio.create_task(
            ideal.run(configuration, namespace, prepared, started_watch)
        )
        await started_watch.wait()
        loop = asyncio.get_running_loop()
        for body in bodies(namespace, count):
            await loop.run_in_executor(
                None,
                lambda body=body: custom.create_namespaced_custom_object(
                    GROUP, VERSION, namespace, PLURAL, body
                ),
            )
        await controller

    started = time.monotonic()
    asyncio.run(go())
    watcher.join(CONVERGE_TIMEOUT_SECONDS)
    if watcher.done_at is None:
        raise RuntimeError(f"{namespace}: the ideal controller did not converge every one")
    return watcher.done_at - started


def time_kuberay(custom: client.CustomObjectsApi, namespace: str, count: int) -> float:
    """KubeRay's time from the first of `count` RayServices to each having its RayCluster
    (a RayCluster owned by it)."""
    services = []
    for body in bodies(namespace, count):
        (service,) = [c for c in render(resolve(body)) if c["kind"] == "RayService"]
        services.append(service)
    owners: set[str] = set()
    stream = watch.Watch()
    done = threading.Event()

    def follow() -> None:
        for event in stream.stream(
            custom.list_namespaced_custom_object, names.RAY_GROUP, names.RAY_VERSION,
            namespace, "rayclusters", timeout_seconds=CONVERGE_TIMEOUT_SECONDS,
        ):  # fmt: skip
            refs = event["object"]["metadata"].get("ownerReferences") or []
            owners.update(r["name"] for r in refs if r.get("kind") == "RayService")
            if len(owners) >= count:
                done.set()
                stream.stop()

    threading.Thread(target=follow, daemon=True).start()
    started = time.monotonic()
    for service in services:
        custom.create_namespaced_custom_object(
            names.RAY_GROUP, names.RAY_VERSION, namespace, "rayservices", service
        )
    if not done.wait(CONVERGE_TIMEOUT_SECONDS):
        raise RuntimeError(f"{namespace}: {count - len(owners)} RayServices got no RayCluster")
    return time.monotonic() - started


def agent_writes(namespace: str, since: datetime, until: datetime) -> collections.Counter[str]:
    """Writes in `namespace` by anything but the benchmark's own client (KubeRay's, as the
    admin user the local KubeRay runs as), by verb and resource."""
    found: collections.Counter[str] = collections.Counter()
    for entry in audit.entries():
        ref = entry.get("objectRef") or {}
        if entry.get("verb") not in audit.WRITE_VERBS or ref.get("namespace") != namespace:
            continue
        if str(entry.get("userAgent", "")).startswith(PYTHON_CLIENT_AGENT):
            continue
        at = datetime.fromisoformat(entry["requestReceivedTimestamp"])
        if since <= at <= until:
            subresource = ref.get("subresource")
            resource = ref["resource"] + (f"/{subresource}" if subresource else "")
            found[f"{entry['verb']} {resource}"] += 1
    return found


def measure_ideal(core: client.CoreV1Api, count: int) -> dict[str, Any]:
    """The ideal controller's run, with our operator stopped."""
    namespace = make_namespace(core, "bench-ideal")
    cluster("stop", "llm-operator")
    try:
        seconds = time_ideal(namespace, count)
        # Gone before our operator restarts, which would resume every one of them.
        delete_and_wait(core, [namespace])
    finally:
        cluster("start", "llm-operator")
    return {"ideal_seconds": round(seconds, 2)}


def measure_kuberay(
    core: client.CoreV1Api, custom: client.CustomObjectsApi, count: int
) -> dict[str, Any]:
    """KubeRay alone: our operator stopped, KubeRay running, N RayServices."""
    cluster("stop", "llm-operator")
    cluster("start", "kuberay-operator")
    try:
        core.create_namespace({"metadata": {"name": KUBERAY_NAMESPACE}})
        pid = pid_of("kuberay-operator")
        since, cpu_before = now(), cpu_seconds(pid)
        rss_before = rss_mib(pid)
        seconds = time_kuberay(custom, KUBERAY_NAMESPACE, count)
        cpu = cpu_seconds(pid) - cpu_before
        rss = rss_mib(pid)
        writes = agent_writes(KUBERAY_NAMESPACE, since, now())
        delete_and_wait(core, [KUBERAY_NAMESPACE])
    finally:
        cluster("stop", "kuberay-operator")
        cluster("start", "llm-operator")
    return {
        "kuberay_seconds": round(seconds, 2),
        "kuberay_cpu_seconds": round(cpu, 2),
        "kuberay_cpu_ms_per_rayservice": round(1000 * cpu / count, 2),
        "kuberay_writes_per_rayservice": round(sum(writes.values()) / count, 2),
        "kuberay_writes": dict(sorted(writes.items())),
        "kuberay_rss_mib_before": round(rss_before, 1),
        "kuberay_rss_mib_converged": round(rss, 1),
    }


def delete_and_wait(core: client.CoreV1Api, namespaces: list[str]) -> None:
    """The next run must not pay for this one's garbage collection."""
    for namespace in namespaces:
        core.delete_namespace(namespace)
    while any(gone_pending(core, namespace) for namespace in namespaces):
        time.sleep(1)


def reconciles_done() -> float:
    """Reconciles the (restarted) operator has finished, from its /metrics."""
    series = support.scrape(support.operator_metrics_url())
    return sum(value for (name, _), value in series.items() if name == "llmop_reconciles_total")


def audited_writes(namespace: str, since: datetime, until: datetime) -> collections.Counter[str]:
    """The operator's writes in `namespace` between two instants, by verb and resource."""
    return collections.Counter(
        f"{write.verb} {write.resource}"
        for write in audit.writes(namespace, since)
        if write.user == audit.OPERATOR_USER and write.at <= until
    )


def now() -> datetime:
    return datetime.now(UTC)


def measure(core: client.CoreV1Api, custom: client.CustomObjectsApi, count: int,
            steady_seconds: float, peer_max: int) -> dict[str, Any]:  # fmt: skip
    ours = make_namespace(core, "bench-op")
    direct = make_namespace(core, "bench-direct")
    converge_from = now()
    cpu_converging = cpu_seconds(pid_of("llm-operator"))
    server_cpu = control_plane_cpu()
    operator_seconds = time_operator(custom, ours, count)
    cpu_converging = cpu_seconds(pid_of("llm-operator")) - cpu_converging
    server_cpu_operator = control_plane_cpu() - server_cpu
    converge_until = now()
    server_cpu = control_plane_cpu()
    direct_seconds = time_direct(custom, direct, count)
    server_cpu_direct = control_plane_cpu() - server_cpu
    rss_converged = rss_mib(pid_of("llm-operator"))
    # Steady state: restart the operator, so kopf resumes (re-reconciles) every one, then
    # stay idle for the rest of the window.
    steady_from = now()
    cluster("stop", "llm-operator")
    cluster("start", "llm-operator")
    resync_started = time.monotonic()
    while reconciles_done() < count:
        time.sleep(0.5)
    resync_seconds = time.monotonic() - resync_started
    operator_pid = pid_of("llm-operator")
    # Idle CPU over the window's last minute, well clear of the resync's tail.
    time.sleep(max(0.0, steady_seconds - IDLE_SECONDS - (now() - steady_from).total_seconds()))
    cpu_before, clock_before = cpu_seconds(operator_pid), time.monotonic()
    time.sleep(max(0.0, steady_seconds - (now() - steady_from).total_seconds()))
    idle_cpu = cpu_seconds(operator_pid) - cpu_before
    idle_clock = time.monotonic() - clock_before
    steady_until = now()
    during_convergence = audited_writes(ours, converge_from, converge_until)
    during_steady_state = audited_writes(ours, steady_from, steady_until)
    result = {
        "n": count,
        "operator_seconds": round(operator_seconds, 2),
        "direct_seconds": round(direct_seconds, 2),
        "ratio": round(operator_seconds / direct_seconds, 2),
        "writes_per_llmdeployment": round(sum(during_convergence.values()) / count, 2),
        "writes_during_convergence": dict(sorted(during_convergence.items())),
        "steady_state_seconds": steady_seconds,
        "steady_state_writes": sum(during_steady_state.values()),
        "steady_state_writes_by_kind": dict(sorted(during_steady_state.items())),
        "operator_cpu_seconds_converging": round(cpu_converging, 2),
        # Where the time goes: the API server and etcd's CPU in each path.
        "apiserver_etcd_cpu_seconds_operator_path": round(server_cpu_operator, 2),
        "apiserver_etcd_cpu_seconds_direct_path": round(server_cpu_direct, 2),
        "operator_rss_mib_converged": round(rss_converged, 1),
        "resync_seconds": round(resync_seconds, 2),
        "operator_rss_mib_after_resync": round(rss_mib(operator_pid), 1),
        "idle_seconds": round(idle_clock, 1),
        "idle_cpu_percent": round(100 * idle_cpu / idle_clock, 2),
    }
    delete_and_wait(core, [ours, direct])
    result.update(measure_ideal(core, count))
    result["ideal_ratio"] = round(operator_seconds / result["ideal_seconds"], 2)
    result["operator_cpu_ms_per_llmdeployment"] = round(1000 * cpu_converging / count, 2)
    if count <= peer_max:
        result.update(measure_kuberay(core, custom, count))
    return result


def gone_pending(core: client.CoreV1Api, namespace: str) -> bool:
    try:
        core.read_namespace(namespace)
    except client.ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return True


def summary(run: dict[str, Any]) -> str:
    peer = (
        f"KubeRay's {run['kuberay_cpu_ms_per_rayservice']} ms per RayService "
        f"({run['kuberay_seconds']} s to every RayCluster, "
        f"{run['kuberay_writes_per_rayservice']} writes each, RSS "
        f"{run['kuberay_rss_mib_converged']} MiB)"
        if "kuberay_seconds" in run
        else "KubeRay's not measured at this N (--peer-max)"
    )
    return (
        f"N={run['n']}: ratio {run['ratio']} (operator {run['operator_seconds']} s, direct "
        f"{run['direct_seconds']} s; CPU of kube-apiserver and etcd "
        f"{run['apiserver_etcd_cpu_seconds_operator_path']} s vs "
        f"{run['apiserver_etcd_cpu_seconds_direct_path']} s, of the operator "
        f"{run['operator_cpu_seconds_converging']} s); writes per LLMDeployment "
        f"{run['writes_per_llmdeployment']} {run['writes_during_convergence']}; steady-state "
        f"writes {run['steady_state_writes']} in {run['steady_state_seconds']:.0f} s (resync "
        f"{run['resync_seconds']} s); RSS {run['operator_rss_mib_converged']} MiB, "
        f"{run['operator_rss_mib_after_resync']} MiB after resync; idle CPU "
        f"{run['idle_cpu_percent']} %; operator/ideal {run['ideal_ratio']} (ideal "
        f"{run['ideal_seconds']} s); CPU per object: ours "
        f"{run['operator_cpu_ms_per_llmdeployment']} ms, {peer}"
    )


def tool_versions() -> list[str]:
    """The pinned tool builds in use: e2e/tools.sh links .e2e/bin/* into <group>-<version>."""
    return sorted({link.resolve().parent.name for link in (STATE / "bin").iterdir()})


def latency_summary(run: dict[str, Any]) -> str:
    service, status = run["create_to_rayservice"], run["create_to_status"]
    return (
        f"{run['rate_per_second']}/s for {run['seconds']:.0f} s ({run['created']} created, "
        f"schedule lag at most {run['schedule_lag_ms_max']} ms): to RayService p50/p95/p99 "
        f"{service['p50_ms']}/{service['p95_ms']}/{service['p99_ms']} ms, to status "
        f"{status['p50_ms']}/{status['p95_ms']}/{status['p99_ms']} ms"
    )


def run(
    counts: list[int],
    steady_seconds: float,
    rates: list[float],
    rate_seconds: float,
    peer_max: int,
) -> dict[str, Any]:
    if not audit.LOG.exists():
        raise SystemExit(
            f"{audit.LOG} is missing: recreate the cluster (make cluster-down cluster-up)"
        )
    config.load_kube_config(str(STATE / "kubeconfig"))
    core, custom = client.CoreV1Api(), client.CustomObjectsApi()
    cluster("stop", "kuberay-operator")
    runs, latency = [], []
    try:
        for count in (c for c in counts if c > 0):  # -n 0: only the arrival rates
            runs.append(measure(core, custom, count, steady_seconds, peer_max))
            print(summary(runs[-1]), flush=True)
        for rate in rates:
            latency.append(measure_latency(core, custom, rate, rate_seconds))
            print(latency_summary(latency[-1]), flush=True)
    finally:
        subprocess.run(["bash", str(CLUSTER), "up"], check=False, capture_output=True)
    return {
        "machine": {"cpus": os.cpu_count(), "system": platform.system(),
                    "python": platform.python_version(),
                    "memory_gib": round(os.sysconf("SC_PAGE_SIZE")
                                        * os.sysconf("SC_PHYS_PAGES") / 2**30)},
        "tools": tool_versions(),
        "kubeRayOperator": "stopped except in its own (peer) path",
        "runs": runs,
        "latency": latency,
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, action="append", help="LLMDeployments (repeatable)")
    parser.add_argument("--steady-seconds", type=float, default=300.0)
    parser.add_argument("--rate", type=float, action="append", help="creates a second")
    parser.add_argument("--rate-seconds", type=float, default=60.0)
    # KubeRay makes each RayCluster's pods and services too, which the namespace's deletion
    # must then collect: at N=5000 that alone outlasts the rest of the run.
    parser.add_argument("--peer-max", type=int, default=1000, help="largest N of the peer path")
    args = parser.parse_args()
    result = run(
        args.n or [100, 1000, 5000],
        args.steady_seconds,
        args.rate or [5.0, 20.0, 50.0],
        args.rate_seconds,
        args.peer_max,
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
