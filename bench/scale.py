"""Scale benchmark on the local control plane (`make bench`, after `make cluster-up`).

With the KubeRay operator stopped, so only this operator reacts, for each N:
  1. create N LLMDeployments and time until every one has its RayService and a status
     with observedGeneration == generation;
  2. create the same N RayServices directly through the same client, and time that;
  3. report the ratio, the operator's RSS, and its CPU over a steady-state window.
Results go to bench/results/scale.json. KubeRay is restarted afterwards.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import signal
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

from kubernetes import client, config

from llm_operator import yamlio
from llm_operator.api.constants import GROUP, PLURAL, VERSION
from llm_operator.api.validation import validate
from llm_operator.render import names, render

ROOT = Path(__file__).resolve().parent.parent
STATE = ROOT / ".e2e"
RESULTS = Path(__file__).resolve().parent / "results" / "scale.json"
SAMPLE = ROOT / "manifests" / "samples" / "quickstart.yaml"
POLL_SECONDS = 0.5
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


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


def converged_count(custom: client.CustomObjectsApi, namespace: str) -> int:
    llmds = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"]
    services = custom.list_namespaced_custom_object(
        names.RAY_GROUP, names.RAY_VERSION, namespace, "rayservices"
    )["items"]
    have_service = {s["metadata"]["name"] for s in services}
    return sum(
        1
        for item in llmds
        if (item.get("status") or {}).get("observedGeneration") == item["metadata"]["generation"]
        and names.ray_service_name(item["metadata"]["name"]) in have_service
    )


def time_operator(custom: client.CustomObjectsApi, namespace: str, count: int) -> float:
    started = time.monotonic()
    for body in bodies(namespace, count):
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    while converged_count(custom, namespace) < count:
        time.sleep(POLL_SECONDS)
    return time.monotonic() - started


def time_direct(custom: client.CustomObjectsApi, namespace: str, count: int) -> float:
    services = []
    for body in bodies(namespace, count):
        (service,) = [c for c in render(validate(body)) if c["kind"] == "RayService"]
        services.append(service)
    started = time.monotonic()
    for service in services:
        custom.create_namespaced_custom_object(
            names.RAY_GROUP, names.RAY_VERSION, namespace, "rayservices", service
        )
    return time.monotonic() - started


def delete_namespace(core: client.CoreV1Api, name: str) -> None:
    core.delete_namespace(name)


def run(counts: list[int], steady_seconds: float) -> dict[str, Any]:
    config.load_kube_config(str(STATE / "kubeconfig"))
    core, custom = client.CoreV1Api(), client.CustomObjectsApi()
    operator_pid = pid_of("llm-operator")
    os.killpg(pid_of("kuberay-operator"), signal.SIGTERM)
    runs = []
    try:
        for count in counts:
            ours = make_namespace(core, "bench-op")
            direct = make_namespace(core, "bench-direct")
            operator_seconds = time_operator(custom, ours, count)
            direct_seconds = time_direct(custom, direct, count)
            cpu_before = cpu_seconds(operator_pid)
            time.sleep(steady_seconds)  # the steady-state window itself is the measurement
            steady_cpu = cpu_seconds(operator_pid) - cpu_before
            runs.append(
                {
                    "n": count,
                    "operator_seconds": round(operator_seconds, 2),
                    "direct_seconds": round(direct_seconds, 2),
                    "ratio": round(operator_seconds / direct_seconds, 2),
                    "operator_rss_mib": round(rss_mib(operator_pid), 1),
                    "steady_state_seconds": steady_seconds,
                    "steady_state_cpu_percent": round(100 * steady_cpu / steady_seconds, 2),
                }
            )
            print(json.dumps(runs[-1]), flush=True)
            delete_namespace(core, ours)
            delete_namespace(core, direct)
    finally:
        subprocess.run(["bash", str(ROOT / "e2e" / "cluster.sh"), "up"], check=False,
                       capture_output=True)  # fmt: skip
    return {
        "machine": {"cpus": os.cpu_count(), "system": platform.system(),
                    "python": platform.python_version()},
        "kubeRayOperator": "stopped during the runs",
        "runs": runs,
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, action="append", help="LLMDeployments (repeatable)")
    parser.add_argument("--steady-seconds", type=float, default=60.0)
    args = parser.parse_args()
    result = run(args.n or [100, 500, 1000], args.steady_seconds)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
