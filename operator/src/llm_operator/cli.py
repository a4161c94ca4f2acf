"""`llm-operator`: render, validate and plan offline; print the CRD; run the operator.

The offline commands use the same parse -> validate -> render code as the controller.
Exit codes: 0 fine, 1 invalid input, 2 unreadable input or bad usage.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TextIO

import yaml

from llm_operator import __version__, yamlio
from llm_operator.api.crd import build_crd
from llm_operator.api.plan import Plan
from llm_operator.api.validation import SpecError, resolve
from llm_operator.listen import listen_address
from llm_operator.render import names, render
from llm_operator.render.serve import serve_config
from llm_operator.render.sources import prefetch_of
from llm_operator.settings import OperatorSettings
from llm_operator.sizing import GpuLayout

EXIT_OK, EXIT_INVALID, EXIT_USAGE = 0, 1, 2


class InputError(Exception):
    """The file cannot be read or is not YAML."""


@dataclass(frozen=True)
class Document:
    label: str
    body: Any


def _read(path: str) -> str:
    try:
        if path == "-":
            return sys.stdin.read()
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except OSError as exc:
        raise InputError(f"{path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text") from exc


def load_documents(path: str) -> list[Document]:
    try:
        bodies = yamlio.load_all(_read(path))
    except yaml.YAMLError as exc:
        raise InputError(f"{path}: not valid YAML: {exc}") from exc
    if not bodies:
        raise InputError(f"{path}: no YAML documents")
    return [Document(_label(path, index, body), body) for index, body in enumerate(bodies)]


def _label(path: str, index: int, body: Any) -> str:
    name = body.get("metadata", {}).get("name") if isinstance(body, dict) else None
    if isinstance(name, str):
        return f"{path}: {name}"
    return f"{path}: document {index + 1}"


def _print_problems(label: str, problems: Sequence[object], out: TextIO) -> None:
    print(f"{label}: invalid", file=out)
    for item in problems:
        print(f"  - {item}", file=out)


def _validated(
    documents: Sequence[Document], settings: OperatorSettings
) -> tuple[list[tuple[Document, Plan]], int]:
    """The plans of the documents that validate, and the exit status (problems go to
    stderr)."""
    valid: list[tuple[Document, Plan]] = []
    status = EXIT_OK
    for doc in documents:
        try:
            valid.append((doc, resolve(doc.body, settings.gpu_memory_gib)))
        except SpecError as exc:
            _print_problems(doc.label, exc.errors, sys.stderr)
            status = EXIT_INVALID
    return valid, status


def cmd_validate(args: argparse.Namespace, settings: OperatorSettings) -> int:
    from llm_operator import raycheck

    deep = not args.no_ray and raycheck.ray_available()
    valid, status = _validated(load_documents(args.file), settings)
    for doc, plan in valid:
        if deep and plan.serves:
            problems = raycheck.serve_config_errors(serve_config(plan))
            if problems:
                _print_problems(doc.label, problems, sys.stderr)
                status = EXIT_INVALID
                continue
        checked = "schema, semantics and Ray's Serve models" if deep else "schema and semantics"
        print(f"{doc.label}: valid ({checked})")
    return status


def cmd_render(args: argparse.Namespace, settings: OperatorSettings) -> int:
    valid, status = _validated(load_documents(args.file), settings)
    if status != EXIT_OK:
        return status
    children = [child for _, plan in valid for child in render(plan, settings)]
    if args.output == "json":
        print(json.dumps({"apiVersion": "v1", "kind": "List", "items": children}, indent=2))
    else:
        sys.stdout.write(yamlio.dump_all(children))
    return EXIT_OK


def plan_lines(doc_label: str, body: Any, settings: OperatorSettings) -> list[str]:
    plan = resolve(body, settings.gpu_memory_gib)
    fit, accelerator = plan.fit, plan.accelerator
    verdict = FIT_VERDICT[fit.fits]
    return [
        f"{doc_label}",
        f"  accelerator:        {accelerator.type}, {accelerator.gpus_per_node} GPUs per node",
        *(_whole_model_lines(plan) if plan.kv_transfer is None else _disaggregated_lines(plan)),
        f"  GPUs at min:        {plan.gpus_at_min}",
        f"  GPUs at max:        {plan.gpus_at_max}",
        f"  worker pods at max: {sum(r.layout.worker_pods(r.max_replicas) for r in plan.roles)}",
        f"  memory fit:         {verdict}: {fit.message}",
        *fallback_lines(plan),
        *pattern_lines(plan),
    ]


FIT_VERDICT = {True: "fits", False: "does not fit", None: "not checked"}


def fallback_lines(plan: Plan) -> list[str]:
    """Each fallback type in preference order: its group, pods and memory fit."""
    lines: list[str] = []
    for fallback in plan.fallbacks:
        accelerator, layout = fallback.accelerator, fallback.layout
        lines.append(
            f"  fallback {fallback.index + 1}:".ljust(22)
            + f"{accelerator.type}, {accelerator.gpus_per_node} GPUs per node; worker group "
            f"{names.fallback_worker_group(accelerator.type)} 0.."
            f"{layout.worker_group_replicas(fallback.max_replicas)} of "
            f"{layout.hosts_per_replica} pod(s) x {layout.gpus_per_host} GPU(s); memory fit: "
            f"{FIT_VERDICT[fallback.fit.fits]}: {fallback.fit.message}"
        )
    if plan.fallbacks:
        lines.append(
            "  accelerator_type:   not pinned in the Serve config (replicas may run on any "
            "of the types)"
        )
    return lines


def _whole_model_lines(plan: Plan) -> list[str]:
    layout, spec = plan.layout, plan.llmd.spec
    scaling = "autoscaling" if spec.autoscaling else "fixed"
    return [
        f"  parallelism:        tensor {layout.tensor_parallel_size}"
        f" x pipeline {layout.pipeline_parallel_size}"
        + (f" x data {layout.data_parallel_size}" if layout.data_parallel_size > 1 else ""),
        f"  GPUs per replica:   {_gpus_per_replica(layout)}",
        f"  hosts per replica:  {layout.hosts_per_replica}"
        f" (GPUs per worker pod: {layout.gpus_per_host})",
        f"  replicas ({scaling}): min {spec.min_replicas}, max {spec.max_replicas}",
    ]


def _disaggregated_lines(plan: Plan) -> list[str]:
    """Prefill and decode, each sized on its own: engines, pods, GPUs."""
    assert plan.kv_transfer is not None
    lines = [
        f"  disaggregation:     {plan.serve_app}; KV cache from prefill to decode over "
        f"{plan.kv_transfer.connector} (kv_role {plan.kv_transfer.role})"
    ]
    for role in plan.roles:
        layout = role.layout
        scaling = "autoscaling" if role.autoscaling else "fixed"
        label = f"{role.name}:".ljust(19)
        lines.append(
            f"  {label} tensor {layout.tensor_parallel_size} x pipeline "
            f"{layout.pipeline_parallel_size} = {layout.gpus_per_replica} GPU(s) per engine on "
            f"{layout.hosts_per_replica} pod(s) of {layout.gpus_per_host} GPU(s); engines "
            f"({scaling}) min {role.min_replicas}, max {role.max_replicas}; worker group "
            f"{names.worker_group(role.name)} {layout.worker_group_replicas(role.min_replicas)}.."
            f"{layout.worker_group_replicas(role.max_replicas)}; GPUs "
            f"{role.gpus_at_min}..{role.gpus_at_max}"
        )
    return lines


def _gpus_per_replica(layout: GpuLayout) -> str:
    if layout.gpu_fraction is None:
        return str(layout.gpus_per_replica)
    return (
        f"{layout.gpu_fraction:g} (shared: {layout.replicas_per_pod} replicas per GPU worker pod)"
    )


def pattern_lines(plan: Plan) -> list[str]:
    """The serving patterns the plan uses, one line each; none for Ray's defaults."""
    lines: list[str] = []
    if plan.layout.data_parallel_size > 1:
        layout = plan.layout
        lines.append(
            f"  data parallel:      {plan.serve_app}; each replica is "
            f"{layout.data_parallel_size} gang-scheduled ranks of {layout.gpus_per_rank} "
            f"GPU(s) (Serve runs replicas x {layout.data_parallel_size} LLM servers)"
        )
    if plan.router is not None:
        kwargs = ", ".join(f"{k}={v:g}" for k, v in plan.router.kwargs.items())
        lines.append(
            f"  routing:            {plan.router.class_path}"
            + (f" ({kwargs})" if kwargs else " (Ray's defaults)")
        )
    if plan.lora is not None:
        lora = plan.lora
        lines.append(
            f"  LoRA adapters:      {lora.path}/<adapter> as model "
            f"{plan.llmd.served_model_id}:<adapter>; up to {lora.max_per_replica} per "
            f"replica, rank <= {lora.max_rank}"
        )
    prefetch = prefetch_of(plan.llmd)
    if prefetch is not None:
        name = names.prefetch_job_name(plan.llmd.name, prefetch.key)
        lines.append(
            f"  model prefetch:     Job {name} downloads {prefetch.source} into "
            f"{prefetch.path} first; the {plan.ray_kind} is made once it is cached"
        )
    return lines


def cmd_plan(args: argparse.Namespace, settings: OperatorSettings) -> int:
    status = EXIT_OK
    for doc in load_documents(args.file):
        try:
            print("\n".join(plan_lines(doc.label, doc.body, settings)))
        except SpecError as exc:
            _print_problems(doc.label, exc.errors, sys.stderr)
            status = EXIT_INVALID
    return status


def cmd_crd(args: argparse.Namespace, settings: OperatorSettings) -> int:
    sys.stdout.write(yamlio.dump(build_crd()))
    return EXIT_OK


def cmd_run(args: argparse.Namespace, settings: OperatorSettings) -> int:
    from llm_operator.controller.handlers import run

    run(
        namespaces=args.namespace or [],
        all_namespaces=args.all_namespaces,
        verbose=args.verbose,
        liveness_endpoint=args.liveness,
        peering=args.peering,
        metrics_address=args.metrics_address,
        settings=settings,
    )
    return EXIT_OK


def metrics_address(value: str) -> str:
    """Checks `--metrics-address` at parse time, so a typo is a usage error, not a crash."""
    try:
        listen_address(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llm-operator",
        description="Serve large language models on Ray through KubeRay.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def with_file(name: str, help_text: str) -> argparse.ArgumentParser:
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        cmd.add_argument(
            "-f", "--file", required=True, help="LLMDeployment YAML file, or - for stdin"
        )
        return cmd

    render_cmd = with_file("render", "Print the children an LLMDeployment becomes, in apply order.")
    render_cmd.add_argument("-o", "--output", choices=("yaml", "json"), default="yaml")
    render_cmd.set_defaults(handler=cmd_render)

    validate_cmd = with_file("validate", "Check an LLMDeployment; non-zero exit with field errors.")
    validate_cmd.add_argument(
        "--no-ray", action="store_true", help="skip validation with Ray's own Serve models"
    )
    validate_cmd.set_defaults(handler=cmd_validate)

    plan_cmd = with_file("plan", "Explain GPUs per replica, hosts, totals and memory fit.")
    plan_cmd.set_defaults(handler=cmd_plan)

    crd_cmd = sub.add_parser("crd", help="Print the LLMDeployment CRD.")
    crd_cmd.set_defaults(handler=cmd_crd)

    run_cmd = sub.add_parser(
        "run", help="Run the operator against the current kubeconfig or in-cluster."
    )
    run_cmd.add_argument(
        "-n", "--namespace", action="append", help="namespace to watch (repeatable; globs allowed)"
    )
    run_cmd.add_argument(
        "-A",
        "--all-namespaces",
        action="store_true",
        help="watch every namespace (default when no -n)",
    )
    run_cmd.add_argument(
        "--metrics-address",
        default="0.0.0.0:9090",
        type=metrics_address,
        metavar="HOST:PORT",
        help="serve Prometheus metrics at http://HOST:PORT/metrics (empty to disable)",
    )
    run_cmd.add_argument(
        "--peering",
        metavar="NAME",
        help="kopf peering object for several replicas (only the highest-priority one "
        "handles objects); default: standalone",
    )
    run_cmd.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    run_cmd.add_argument(
        "--liveness",
        default="http://0.0.0.0:8080/healthz",
        help="liveness endpoint URL (empty to disable)",
    )
    run_cmd.set_defaults(handler=cmd_run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = OperatorSettings.from_env()
    try:
        code: int = args.handler(args, settings)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return code


if __name__ == "__main__":
    sys.exit(main())
