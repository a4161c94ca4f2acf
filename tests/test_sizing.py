"""GPU layout and memory fit: the sizing rules of DESIGN.md as numbers."""

from __future__ import annotations

from typing import Any

import pytest

from llm_operator.sizing import (
    LayoutError,
    MemoryFit,
    gpu_layout,
    memory_fit,
    resolve_accelerator,
)


@pytest.mark.parametrize(
    ("tp", "pp", "per_node", "hosts", "per_host"),
    [
        (1, 1, 4, 1, 1),  # small model, one GPU
        (4, 1, 8, 1, 4),  # 70B: TP4 inside an 8-GPU A100 node
        (8, 1, 8, 1, 8),  # a full node
        (8, 2, 8, 2, 8),  # 405B: TP8 x PP2 over two H100 nodes
        (4, 4, 8, 2, 8),  # two stages per node
        (2, 2, 8, 1, 4),  # PP stages on one node when they fit
        (4, 3, 4, 3, 4),  # one stage per node, three hosts
    ],
)
def test_layout(tp: int, pp: int, per_node: int, hosts: int, per_host: int) -> None:
    layout = gpu_layout(tp, pp, per_node)
    assert layout.gpus_per_replica == tp * pp
    assert (layout.hosts_per_replica, layout.gpus_per_host) == (hosts, per_host)
    assert layout.gpus_per_host <= per_node
    assert layout.gpus_per_host % tp == 0
    assert layout.multi_host is (hosts > 1)


def test_tensor_parallel_larger_than_a_node_is_refused() -> None:
    with pytest.raises(LayoutError) as caught:
        gpu_layout(16, 1, 8)
    assert caught.value.field == "spec.engine.tensorParallelSize"
    assert "never spans nodes" in caught.value.message


@pytest.mark.parametrize(
    ("tp", "pp", "per_node", "suggestion"),
    [
        (4, 3, 8, "2 or 4"),  # 12 GPUs would need pods of 6: not whole TP4 groups
        (2, 3, 4, "2 or 4"),  # 6 GPUs over two 4-GPU nodes: 3 per pod
        (1, 3, 2, "2 or 4"),
    ],
)
def test_uneven_split_names_pipeline_size_and_suggests(
    tp: int, pp: int, per_node: int, suggestion: str
) -> None:
    with pytest.raises(LayoutError) as caught:
        gpu_layout(tp, pp, per_node)
    assert caught.value.field == "spec.engine.pipelineParallelSize"
    assert caught.value.message.endswith(f"use pipelineParallelSize {suggestion}")
    for fixed in suggestion.split(" or "):
        gpu_layout(tp, int(fixed), per_node)  # the suggestions themselves are valid


def _fit(billions: float | None, accelerator: str, gpus: int, **kw: Any) -> MemoryFit:
    args: dict[str, Any] = {"dtype": "auto", "gpu_memory_utilization": 0.9, "engine_args": {}}
    args.update(kw)
    resolved = resolve_accelerator(accelerator, "nvidia.com/gpu", 8)
    return memory_fit(
        parameters_billions=billions, accelerator=resolved, gpus_per_replica=gpus, **args
    )


def test_budget_arithmetic() -> None:
    # Worked by hand: 8e9 parameters x 2 bytes = 16e9 bytes = 16e9 / 2^30 = 14.901 GiB; an
    # L4 has 24 GiB, 21.6 at gpuMemoryUtilization 0.9, and 17.28 after the 20% the
    # engine keeps for its KV cache.
    fit = _fit(8, "L4", 1)
    assert fit.weights_gib_per_gpu == pytest.approx(14.901161193847656)
    assert fit.usable_gib_per_gpu == pytest.approx(21.6)
    assert fit.fits is True and fit.reason == "Fits"
    assert "14.9 GiB of weights" in fit.message
    assert "21.6 GiB per GPU" in fit.message
    assert "17.3 GiB after 20% KV-cache headroom" in fit.message


@pytest.mark.parametrize(
    ("billions", "fits"),
    [
        # 9e9 x 2 / 2^30 = 16.764 GiB <= 17.28: fits only with headroom 22.4% or less.
        (9, True),
        # 10e9 x 2 / 2^30 = 18.626 GiB > 17.28, though within the 21.6 GiB the engine may
        # use: refused with any headroom over 13.8%.
        (10, False),
    ],
)
def test_kv_cache_headroom_decides_near_the_budget(billions: float, fits: bool) -> None:
    fit = _fit(billions, "L4", 1)
    assert fit.fits is fits
    assert fit.min_gpus == (1 if fits else 2)


def test_70b_needs_more_than_one_a100() -> None:
    one = _fit(70, "A100-80G", 1)
    assert one.fits is False and one.reason == "InsufficientGPUMemory"
    # 130.4 GiB of weights / (80 * 0.9 * 0.8 = 57.6 GiB) -> 3 GPUs at least
    assert one.min_gpus == 3
    assert "spec.engine.tensorParallelSize" in one.message
    assert _fit(70, "A100-80G", 4).fits is True


def test_405b_fits_sixteen_h100_but_not_eight() -> None:
    assert _fit(405, "H100", 16).fits is True
    assert _fit(405, "H100", 8).fits is False


def test_quantization_and_dtype_change_bytes_per_parameter() -> None:
    assert _fit(70, "A100-80G", 1, engine_args={"quantization": "awq"}).fits is True
    assert _fit(8, "L4", 1, dtype="float32").fits is False
    unknown = _fit(8, "L4", 1, engine_args={"quantization": "mystery"})
    assert (unknown.fits, unknown.reason) == (None, "QuantizationUnknown")


def test_unknowns_are_not_checked() -> None:
    assert _fit(None, "L4", 1).reason == "SizeUnknown"
    assert _fit(8, "Intel-GAUDI", 1).reason == "AcceleratorMemoryUnknown"
    assert _fit(8, "Intel-GAUDI", 1).fits is None
