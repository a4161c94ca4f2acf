"""bench/scale.py's pure parts: the percentiles its latency figures are reported with."""

from __future__ import annotations

from bench.scale import percentiles


def test_percentiles_are_nearest_rank_in_milliseconds() -> None:
    samples = [index / 1000 for index in range(1, 101)]  # 1 ms .. 100 ms
    assert percentiles(samples) == {"p50_ms": 50.0, "p95_ms": 95.0, "p99_ms": 99.0}


def test_a_single_sample_is_every_percentile() -> None:
    assert percentiles([0.25]) == {"p50_ms": 250.0, "p95_ms": 250.0, "p99_ms": 250.0}


def test_no_samples_have_no_percentiles() -> None:
    assert percentiles([]) == {"p50_ms": None, "p95_ms": None, "p99_ms": None}
