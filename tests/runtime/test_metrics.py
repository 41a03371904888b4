"""The batch-size histogram sums the workers' reports."""

from __future__ import annotations

from prometheus_client import generate_latest

from runtime.control import ScalerMetrics


def test_batch_sizes_sum_the_latest_report_of_each_worker() -> None:
    metrics = ScalerMetrics()
    metrics.batch_sizes.report("w1", "demo.embed", {1: 2, 32: 1})
    metrics.batch_sizes.report("w2", "demo.embed", {4: 1})
    metrics.batch_sizes.report("w1", "demo.embed", {1: 3, 32: 2})  # a later report replaces
    text = generate_latest(metrics.registry).decode()
    assert 'autan_batch_size_bucket{function="demo.embed",le="1"} 3.0' in text
    assert 'autan_batch_size_bucket{function="demo.embed",le="4"} 4.0' in text
    assert 'autan_batch_size_bucket{function="demo.embed",le="32"} 6.0' in text
    assert 'autan_batch_size_count{function="demo.embed"} 6.0' in text
    assert 'autan_batch_size_sum{function="demo.embed"} 71.0' in text
