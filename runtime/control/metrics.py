"""Prometheus metrics of the control plane, labelled by function: backlog, workers,
decisions, cold starts by phase, batch sizes, and the calls workers ran (count, failed
attempts by error type, run time and queue wait histograms, from their heartbeats)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import msgspec
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    start_http_server,
)
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from runtime.core import DURATION_BUCKETS_MS, HEARTBEAT_S, CallCounts

__all__ = ["BatchSizes", "FunctionCalls", "ScalerMetrics"]

disable_created_metrics()  # type: ignore[no-untyped-call]  # no `_created` series

_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)


class BatchSizes(Collector):
    """`autan_batch_size`: how many calls each batch held, summed over every worker.

    Workers report their counts in their announcements; this keeps the latest
    report of each (exited workers included) and exposes them as one histogram.
    """

    def __init__(self) -> None:
        self._by_worker: dict[str, tuple[str, dict[int, int]]] = {}

    def report(self, worker_id: str, function: str, sizes: dict[int, int]) -> None:
        self._by_worker[worker_id] = (function, dict(sizes))

    def collect(self) -> Iterator[HistogramMetricFamily]:
        family = HistogramMetricFamily(
            "autan_batch_size", "Calls per batch run by workers", labels=["function"]
        )
        totals: dict[str, dict[int, int]] = {}
        for function, sizes in self._by_worker.values():
            into = totals.setdefault(function, {})
            for size, count in sizes.items():
                into[size] = into.get(size, 0) + count
        for function, sizes in sorted(totals.items()):
            family.add_metric([function], _buckets(sizes), sum(s * n for s, n in sizes.items()))
        yield family


def _buckets(sizes: dict[int, int]) -> list[tuple[str, float]]:
    cumulative = [
        (str(bound), float(sum(n for s, n in sizes.items() if s <= bound)))
        for bound in _BATCH_BUCKETS
    ]
    return [*cumulative, ("+Inf", float(sum(sizes.values())))]


class FunctionCalls(Collector):
    """`autan_calls_total`, `autan_call_errors_total`, `autan_call_duration_seconds` and
    `autan_call_queue_wait_seconds`, by function (errors also by type: at most 17 per
    function), summed over its workers' latest reports. A worker silent for a minute has
    ended: its counts are folded into its function's and forgotten."""

    def __init__(self) -> None:
        self._by_worker: dict[str, tuple[str, CallCounts, float]] = {}
        self._retired: dict[str, CallCounts] = {}

    def report(self, worker_id: str, function: str, counts: CallCounts) -> None:
        self._by_worker[worker_id] = (function, counts, time.monotonic())

    def collect(self) -> Iterator[Metric]:
        self._retire(time.monotonic() - 12 * HEARTBEAT_S)
        totals = dict(self._retired)
        for function, counts, _ in self._by_worker.values():
            totals[function] = _add(totals.get(function, CallCounts()), counts)
        calls = CounterMetricFamily("autan_calls", "Calls run by workers", labels=["function"])
        errors = CounterMetricFamily(
            "autan_call_errors", "Failed attempts, by error type", labels=["function", "type"]
        )
        run = HistogramMetricFamily(
            "autan_call_duration_seconds", "Run time of calls", labels=["function"]
        )
        wait = HistogramMetricFamily(
            "autan_call_queue_wait_seconds", "From publish to run", labels=["function"]
        )
        for function, counts in sorted(totals.items()):
            calls.add_metric([function], counts.calls)
            for name, count in sorted(counts.errors.items()):
                errors.add_metric([function, name], count)
            run.add_metric([function], _seconds(counts.run_ms), counts.run_ms_sum / 1000)
            wait.add_metric([function], _seconds(counts.wait_ms), counts.wait_ms_sum / 1000)
        yield from (calls, errors, run, wait)

    def _retire(self, before: float) -> None:
        for worker_id, (function, counts, seen) in list(self._by_worker.items()):
            if seen < before:
                del self._by_worker[worker_id]
                self._retired[function] = _add(self._retired.get(function, CallCounts()), counts)


def _add(a: CallCounts, b: CallCounts) -> CallCounts:
    errors = dict(a.errors)
    for name, count in b.errors.items():
        errors[name] = errors.get(name, 0) + count
    return msgspec.structs.replace(
        a,
        calls=a.calls + b.calls,
        errors=errors,
        run_ms=_sum(a.run_ms, b.run_ms),
        run_ms_sum=a.run_ms_sum + b.run_ms_sum,
        wait_ms=_sum(a.wait_ms, b.wait_ms),
        wait_ms_sum=a.wait_ms_sum + b.wait_ms_sum,
    )


def _sum(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
    size = len(DURATION_BUCKETS_MS) + 1
    a, b = a or (0,) * size, b or (0,) * size
    return tuple(x + y for x, y in zip(a, b, strict=False))


def _seconds(counts: tuple[int, ...]) -> list[tuple[str, float]]:
    """Cumulative buckets in seconds, from per-bucket counts in milliseconds."""
    counts = counts or (0,) * (len(DURATION_BUCKETS_MS) + 1)
    buckets, total = [], 0
    for bound, count in zip(DURATION_BUCKETS_MS, counts, strict=False):
        total += count
        buckets.append((f"{bound / 1000:g}", float(total)))
    return [*buckets, ("+Inf", float(sum(counts)))]


_COLD_START_BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class ScalerMetrics:
    """The scaler's metrics, in a registry of their own (tests run several scalers)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.backlog = Gauge(
            "autan_backlog_calls",
            "Calls waiting or running (consumer num_pending + num_ack_pending)",
            ["function"],
            registry=self.registry,
        )
        self.oldest_age = Gauge(
            "autan_oldest_call_age_seconds",
            "Age of the oldest call not yet finished",
            ["function"],
            registry=self.registry,
        )
        self.workers = Gauge(
            "autan_workers", "Workers by state", ["function", "state"], registry=self.registry
        )
        self.decisions = Counter(
            "autan_scaling_decisions",
            "Scaling decisions that changed the number of workers",
            ["function", "direction"],
            registry=self.registry,
        )
        self.cold_start = Histogram(
            "autan_cold_start_seconds",
            "Worker cold start, by phase",
            ["function", "phase"],
            buckets=_COLD_START_BUCKETS_S,
            registry=self.registry,
        )
        self.starts = Counter(
            "autan_worker_starts",
            "Workers started, by how: forked from a ready function template (hit), after "
            "waiting for one (built), or loading the function themselves (none)",
            ["function", "template"],
            registry=self.registry,
        )
        self.batch_sizes = BatchSizes()
        self.registry.register(self.batch_sizes)
        self.calls = FunctionCalls()
        self.registry.register(self.calls)

    def serve_http(self, port: int, host: str = "127.0.0.1") -> None:
        """Expose `/metrics` on `host:port` (a daemon thread of prometheus_client)."""
        try:
            start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            raise ValueError(
                f"cannot serve metrics on {host}:{port} ({exc.strerror}): "
                "choose another --metrics-port, or 0 to turn metrics off"
            ) from exc

    def observe_cold_start(
        self, function: str, phases_ms: dict[str, float], template: str = ""
    ) -> None:
        self.starts.labels(function=function, template=template or "none").inc()
        for phase, ms in phases_ms.items():
            self.cold_start.labels(function=function, phase=phase).observe(ms / 1000)
