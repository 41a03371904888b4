"""The HTTP trigger bridge: an ASGI app (Starlette) on uvicorn, in front of the link's calls.

    settings = settings.with_http(host="0.0.0.0", api_keys=parse_api_keys("tok:demo"))
    async with anyio.create_task_group() as group:
        port = await group.start(serve_gateway, settings)

Routes (all bodies JSON unless said; `/openapi.json` describes them):

    POST /v1/functions/{app}/{fn}   call it; the body holds the arguments
    GET  /v1/calls/{call_id}        pending, succeeded (with the result) or failed (with the error)
    GET  /v1/functions              what the key may call: version, policies, workers, backlog
    GET  /healthz                   the process answers (no key needed)
    GET  /readyz                    NATS, JetStream and object storage answering, else 503
    GET  /metrics                   Prometheus text (a key for every app, when keys are on)
    GET  /openapi.json              this API, generated from the msgspec types, with a path
                                    per function the key may call (no key: the API alone)
    GET  /docs                      Swagger UI on /openapi.json (its files from a package)
    GET  /ui                        the dashboard (`gateway.dashboard`), which reads
    GET  /v1/dashboard              the stack's state (a key for every app), and can
    POST /v1/dead-letters/{seq}/redrive   run a dead letter again

Arguments: the body is the function's one positional argument: a JSON value
(`application/json`), a msgpack value (`application/msgpack`, numpy arrays
included) or raw bytes (`application/octet-stream`); no body and no Content-Type
is a call without arguments. With the header `Autan-Arguments: explicit` (or
`?args=explicit`) a JSON or msgpack body is `{"args": [...], "kwargs": {...}}` and
the call is `fn(*args, **kwargs)`. Any other content type: 415.

Results: JSON by default (numpy arrays as nested lists, bytes as base64 strings);
`Accept: application/msgpack` gives the value as the function returned it (numpy
dtype and shape kept). `Autan-Call-Id` names the call in every answer about one.

Sync by default: 200 and the result. It waits `?timeout_s=` if given, else the
longer of 60 s (`HttpSettings.timeout_s`) and the function's own `timeout_s`, never
more than `max_timeout_s` (300 s); past that, 504 with `call_id` and `status_url`: the
call goes on and its result is kept `result_ttl_s` (1 h), to fetch with GET. Async
with `Prefer: respond-async` or `?async=true`: 202 `{"call_id", "status_url"}` (and
`Location`) once JetStream has stored the call. `pending` covers queued and running:
the results bucket alone cannot tell them apart.

`Idempotency-Key: <1-255 printable characters>`: the call id is derived from the
caller's API key, the function and the key, so a repeat within the results'
retention returns the same call (and its result) and runs it once: JetStream drops
a resubmission within its 2-minute duplicate window, and a recorded result
answers repeats without submitting. The digest of the request (function and
arguments, dict order aside) is recorded with the call: the same key with another
request is refused with 422 (as the IETF idempotency-key draft does).

API keys: `Authorization: Bearer <key>`, each scoped to apps (`core.apikeys`). Keys
may be off only on a loopback address. A key that may not see an app gets the
same 404 as for a function that does not exist, so nothing about other apps leaks.

Errors are JSON `{"error": {"type", "message", ...}}`, never a traceback (see
`errors` for the statuses). A function's own error is a 500 whose `type` is
the function's exception type, with its `message` and `call_id` (its traceback
only with `HttpSettings.tracebacks`).
"""

from __future__ import annotations

import contextlib
import math
import socket
from collections.abc import Iterator

import anyio
import msgspec
import structlog
import uvicorn
from anyio.abc import TaskStatus
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from runtime.core import HttpSettings, PartReporter, Settings, instance_name
from runtime.gateway.dashboard import Dashboard
from runtime.gateway.endpoints import Endpoints
from runtime.gateway.errors import MethodNotAllowed, NotFound, error_response
from runtime.gateway.keys import KeyRing, is_loopback
from runtime.gateway.metrics import GatewayMetrics, Observer
from runtime.gateway.protocol import timed_protocol
from runtime.gateway.routes import OPERATIONS
from runtime.gateway.schema import openapi_document
from runtime.gateway.uplink import Uplink

__all__ = ["create_app", "serve_gateway"]

log = structlog.get_logger("autan.gateway")

_VERSION = "1"


def create_app(
    uplink: Uplink, keys: KeyRing, config: HttpSettings, metrics: GatewayMetrics
) -> Starlette:
    """The ASGI app: routes from `routes.OPERATIONS`, wrapped in the `Observer`."""
    openapi = openapi_document(OPERATIONS, title="Autan HTTP gateway", version=_VERSION)
    endpoints = Endpoints(uplink, keys, config, metrics, msgspec.json.encode(openapi))
    routes = [
        Route(op.path, getattr(endpoints, op.endpoint), methods=[op.method]) for op in OPERATIONS
    ]
    dashboard = Dashboard(uplink, keys)
    routes += [
        Route("/docs", endpoints.docs, methods=["GET"]),
        Route("/docs/{name}", endpoints.docs_file, methods=["GET"]),
        Route("/ui", dashboard.page, methods=["GET"]),
        Route("/v1/dashboard", dashboard.state, methods=["GET"]),
        Route("/v1/dead-letters/{seq}/redrive", dashboard.redrive, methods=["POST"]),
    ]
    return Starlette(
        routes=routes,
        middleware=[Middleware(Observer, metrics=metrics, tracebacks=config.tracebacks)],
        exception_handlers={HTTPException: _routing_error},
    )


async def _routing_error(request: Request, exc: Exception) -> Response:
    """Starlette's own 404 (no such route) and 405 (wrong method), as our JSON errors."""
    kind = MethodNotAllowed if getattr(exc, "status_code", 404) == 405 else NotFound
    message = f"no route {request.method} {request.url.path}; see /openapi.json"
    return error_response(kind(message, headers=dict(getattr(exc, "headers", None) or {})))


async def serve_gateway(
    settings: Settings, *, task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED
) -> None:
    """Serve the gateway where `settings.http` says until cancelled; `task_status` gets the
    bound port (`port=0` there: any free port).

    No API keys is refused unless the host is a loopback address (ValueError). The
    gateway listens even while NATS is down (503 until it connects). On cancellation it
    stops listening, lets open requests finish for `shutdown_grace_s`, then closes its
    NATS connection.
    """
    http = settings.http
    if http.api_keys is None and not is_loopback(http.host):
        raise ValueError(
            f"refusing to serve on {http.host} without API keys: bind 127.0.0.1 (or ::1), or "
            "set AUTAN_API_KEYS / AUTAN_API_KEYS_FILE"
        )
    uplink, metrics = Uplink(settings), GatewayMetrics()
    app = create_app(uplink, KeyRing(http.api_keys), http, metrics)
    server = _Server(
        uvicorn.Config(
            app,
            lifespan="off",
            log_config=None,
            access_log=False,
            server_header=False,
            ws="none",
            http=timed_protocol(
                http.read_timeout_s, None if http.parser == "auto" else http.parser
            ),
            timeout_graceful_shutdown=math.ceil(http.shutdown_grace_s),
        )
    )
    with _listen(http.host, http.port) as sock:
        async with anyio.create_task_group() as group:
            await group.start(uplink.serve)
            try:
                host, port = sock.getsockname()[:2]
                reporter = PartReporter(
                    lambda: uplink.link.broker, "bridge", instance_name(port),
                    where=f"http://{_bracketed(host)}:{port}",
                )  # fmt: skip
                group.start_soon(reporter.serve)
                await _serve_http(server, sock, http.api_keys is not None, task_status)
            finally:
                uplink.close()


def _listen(host: str, port: int) -> socket.socket:
    """The listening socket, bound here so that a busy port is a clear error, not an exit.

    It is made from getaddrinfo's answer with proto=IPPROTO_TCP: asyncio sets
    TCP_NODELAY only on such sockets, and without it every keep-alive answer waits
    ~40 ms on Nagle's algorithm and the client's delayed ACK.
    """
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host.strip("[]"), port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP,
            flags=socket.AI_PASSIVE,
        )[0]  # fmt: skip
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise ValueError(f"cannot listen on {host}:{port}: {exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise ValueError(
            f"cannot listen on {host}:{port} ({exc.strerror}): choose another port or host"
        ) from None
    return sock


async def _serve_http(
    server: _Server, sock: socket.socket, keys_on: bool, task_status: TaskStatus[int]
) -> None:
    async with anyio.create_task_group() as group:
        group.start_soon(_run, server, sock)
        await server.listening.wait()
        host, port = sock.getsockname()[:2]
        log.info("gateway listening", url=f"http://{_bracketed(host)}:{port}", api_keys=keys_on)
        task_status.started(port)


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host else host


async def _run(server: _Server, sock: socket.socket) -> None:
    try:
        await server.serve(sockets=[sock])
    except BaseException:
        with anyio.CancelScope(shield=True):
            if server.started:  # cancelled while serving: close as a signal would
                server.should_exit = True
                await server.shutdown(sockets=[sock])
        raise


class _Server(uvicorn.Server):
    """uvicorn's server, minus signal handling (the caller owns signals and cancels us)."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.listening = anyio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self.listening.set()
