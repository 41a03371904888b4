"""Prometheus metrics of the scaler: backlog, workers, decisions, cold starts by phase."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector

__all__ = ["BatchSizes", "ScalerMetrics"]

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
        self.batch_sizes = BatchSizes()
        self.registry.register(self.batch_sizes)

    def serve_http(self, port: int, host: str = "127.0.0.1") -> None:
        """Expose `/metrics` on `host:port` (a daemon thread of prometheus_client)."""
        try:
            start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            raise ValueError(
                f"cannot serve metrics on {host}:{port} ({exc.strerror}): "
                "choose another --metrics-port, or 0 to turn metrics off"
            ) from exc

    def observe_cold_start(self, function: str, phases_ms: dict[str, float]) -> None:
        for phase, ms in phases_ms.items():
            self.cold_start.labels(function=function, phase=phase).observe(ms / 1000)
