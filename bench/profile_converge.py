"""Where the operator's CPU goes while it converges N LLMDeployments on the local
control plane (`make bench-profile`, after `make cluster-up`): py-spy samples the running
operator (kopf, the Kubernetes client and our reconcile together) while N quick starts
are created and converge, and writes a flame graph to bench/results/operator_converge.svg.

bench/reconcile_cpu.py profiles the reconcile alone against an in-memory API; this is
the rest of the path that the scale benchmark's CPU per LLMDeployment measures.
"""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path

from bench.scale import ROOT, STATE, delete_and_wait, make_namespace, pid_of, time_operator
from kubernetes import client, config

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=1000, help="LLMDeployments to converge")
    parser.add_argument("--out", type=Path, default=RESULTS / "operator_converge.svg")
    args = parser.parse_args()
    config.load_kube_config(str(STATE / "kubeconfig"))
    core, custom = client.CoreV1Api(), client.CustomObjectsApi()
    namespace = make_namespace(core, "bench-profile")
    spy = subprocess.Popen(
        ["py-spy", "record", "--pid", str(pid_of("llm-operator")), "--rate", "50",
         "--subprocesses", "--output", str(args.out), "--format", "flamegraph"],
    )  # fmt: skip
    try:
        seconds = time_operator(custom, namespace, args.n)
    finally:
        spy.send_signal(2)  # py-spy writes the flame graph on SIGINT
        spy.wait(timeout=120)
        delete_and_wait(core, [namespace])
    # The graph names the operator's command line and its own path: keep the checkout's
    # location out of a committed file.
    graph = args.out.read_text(encoding="utf-8")
    args.out.write_text(graph.replace(f"{ROOT}/", ""), encoding="utf-8")
    print(f"N={args.n} converged in {seconds:.1f} s under py-spy; flame graph: {args.out}")


if __name__ == "__main__":
    main()
