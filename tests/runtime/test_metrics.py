"""The control plane's per-function metrics sum the workers' reports."""

from __future__ import annotations

import time

from prometheus_client import generate_latest

from runtime.control import ScalerMetrics
from runtime.core import DURATION_BUCKETS_MS, CallCounts


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


def test_calls_sum_the_workers_reports_and_keep_what_ended() -> None:
    metrics = ScalerMetrics()
    buckets = len(DURATION_BUCKETS_MS) + 1
    fast = tuple(3 if i == 1 else 0 for i in range(buckets))  # three calls of 1 to 5 ms
    metrics.calls.report("w1", "demo.echo", CallCounts(calls=3, run_ms=fast, run_ms_sum=9.0))
    metrics.calls.report(
        "w2", "demo.echo",
        CallCounts(calls=2, errors={"ValueError": 2}, run_ms=fast, run_ms_sum=8.0),
    )  # fmt: skip
    text = generate_latest(metrics.registry).decode()
    assert 'autan_calls_total{function="demo.echo"} 5.0' in text
    assert 'autan_call_errors_total{function="demo.echo",type="ValueError"} 2.0' in text
    assert 'autan_call_duration_seconds_bucket{function="demo.echo",le="0.001"} 0.0' in text
    assert 'autan_call_duration_seconds_bucket{function="demo.echo",le="0.005"} 6.0' in text
    assert 'autan_call_duration_seconds_sum{function="demo.echo"} 0.017' in text
    assert "_created" not in text  # no second series beside each counter
    metrics.calls._retire(time.monotonic() + 1)  # both went quiet: folded, still counted
    metrics.calls.report("w3", "demo.echo", CallCounts(calls=1))
    assert (
        'autan_calls_total{function="demo.echo"} 6.0' in generate_latest(metrics.registry).decode()
    )
