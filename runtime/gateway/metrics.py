"""Observing the gateway: Prometheus metrics, one log line per request, errors as JSON.

`Observer` is the outermost middleware of the app. It times and counts every
request by route template (never the raw path: one series per route, not per
function or call), logs route, status, latency, call id and the key's label
(never the key), and answers any exception that escapes an endpoint with its
JSON error (`errors.error_response`), logging the traceback only for the
gateway's own faults.
"""

from __future__ import annotations

import time
from typing import Any

import structlog
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from runtime.core import RemoteError
from runtime.gateway.errors import error_response

disable_created_metrics()  # type: ignore[no-untyped-call]  # no `_created` series

__all__ = ["CLIENT_STATE_KEY", "GatewayMetrics", "Observer"]

log = structlog.get_logger("autan.gateway")

CLIENT_STATE_KEY = "autan_client"  # endpoints put the key's label under scope["state"]
_LATENCY_BUCKETS_S = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
)
_CLIENT_CLOSED = 499  # nginx's code for "the client went away before the answer"


class GatewayMetrics:
    """The gateway's metrics, in a registry of their own (tests run several gateways)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "autan_gateway_requests",
            "HTTP requests answered, by method, route template and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "autan_gateway_request_duration_seconds",
            "Time from the request's arrival to its answer, by method and route template",
            ["method", "route"],
            buckets=_LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "autan_gateway_requests_in_flight",
            "Requests being answered now",
            registry=self.registry,
        )

    def exposition(self) -> bytes:
        """The Prometheus text format of every metric."""
        return generate_latest(self.registry)


class _Answer:
    """What the app sent back: status and call id, once the response started."""

    __slots__ = ("call_id", "status")

    def __init__(self) -> None:
        self.status: int | None = None
        self.call_id: str | None = None

    def see(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            for name, value in message.get("headers", ()):
                if name.lower() == b"autan-call-id":
                    self.call_id = value.decode()


class Observer:
    """ASGI middleware: metrics, the request log, and JSON for errors that escape endpoints."""

    def __init__(self, app: ASGIApp, *, metrics: GatewayMetrics, tracebacks: bool) -> None:
        self.app = app
        self.metrics = metrics
        self.tracebacks = tracebacks

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        answer = _Answer()

        async def send_seen(message: Message) -> None:
            answer.see(message)
            await send(message)

        started = time.perf_counter()
        self.metrics.in_flight.inc()
        try:
            await self._answer(scope, receive, send_seen, answer)
        finally:
            self.metrics.in_flight.dec()
            self._record(scope, answer, time.perf_counter() - started)

    async def _answer(self, scope: Scope, receive: Receive, send: Send, answer: _Answer) -> None:
        try:
            await self.app(scope, receive, send)
        except ClientDisconnect:
            answer.status = answer.status or _CLIENT_CLOSED
        except Exception as exc:
            if answer.status is not None:
                raise  # the answer has begun: nothing else can be sent
            response = error_response(exc, tracebacks=self.tracebacks)
            if response.status_code == 500 and not isinstance(exc, RemoteError):
                log.exception("gateway fault", path=scope.get("path"))
            await response(scope, receive, send)

    def _record(self, scope: Scope, answer: _Answer, elapsed_s: float) -> None:
        route = _route(scope)
        method = scope.get("method", "")
        status = answer.status or 500
        self.metrics.requests.labels(method=method, route=route, status=str(status)).inc()
        self.metrics.latency.labels(method=method, route=route).observe(elapsed_s)
        state: dict[str, Any] = scope.get("state") or {}
        # A line per failed request; per answered one at debug (AUTAN_LOG_LEVEL=debug): its
        # rendering and write were a sixth of what the bridge added to a call. Metrics
        # count every request either way.
        (log.info if status >= 400 else log.debug)(
            "request",
            method=method,
            route=route,
            status=status,
            latency_ms=round(elapsed_s * 1000, 3),
            call_id=answer.call_id,
            client=state.get(CLIENT_STATE_KEY),
        )


def _route(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"
