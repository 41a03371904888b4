"""The gateway's endpoints: each reads a request, asks the link, writes one answer.

Errors are raised, never answered here: `metrics.Observer` turns every
exception into its JSON error (`errors` says which status each gets).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response
from swagger_ui_bundle import swagger_ui_path

from broker import (
    BrokerError,
    BrokerUnavailable,
    Failure,
    Result,
    Success,
    UnencodableValue,
    decode_value,
    encode_value,
    new_call_id,
)
from runtime.core import (
    MAX_NAME_CHARS,
    FunctionNotFound,
    FunctionSpec,
    FunctionState,
    HttpSettings,
    Link,
    function_states,
    kept_items,
    storage_problem,
    valid_name,
)
from runtime.gateway.call_options import CallOptions
from runtime.gateway.calls import (
    CallRecord,
    Calls,
    PlannedCall,
    idempotent_call_id,
    lookup,
    request_digest,
    valid_call_id,
)
from runtime.gateway.codec import (
    MSGPACK,
    json_response,
    media_type,
    read_arguments,
    read_body,
    value_response,
    wants_msgpack,
)
from runtime.gateway.errors import BadRequest, Forbidden, GatewayTimeout, NotFound, Unauthorized
from runtime.gateway.keys import Access, KeyRing
from runtime.gateway.metrics import CLIENT_STATE_KEY, GatewayMetrics
from runtime.gateway.openapi import DOCS_PAGE, function_paths
from runtime.gateway.schema import (
    Accepted,
    CallStatus,
    ErrorDetail,
    FunctionInfo,
    FunctionList,
    Health,
    Policies,
    WorkerSummary,
)
from runtime.gateway.streaming import items_response, stream_response
from runtime.gateway.uplink import Uplink
from storage import StorageUnavailable

__all__ = ["Endpoints"]

_PROMETHEUS = "text/plain; version=0.0.4; charset=utf-8"


_SPECS_FOR_S = 2.0  # how long /openapi.json reuses the registry it read
_DOCS_FILES = frozenset({"swagger-ui.css", "swagger-ui-bundle.js", "favicon-32x32.png"})


class Endpoints:
    """What each route does, with what the gateway holds: its uplink, keys, limits, metrics."""

    def __init__(
        self,
        uplink: Uplink,
        keys: KeyRing,
        config: HttpSettings,
        metrics: GatewayMetrics,
        openapi: bytes,
    ) -> None:
        self.uplink = uplink
        self.keys = keys
        self.config = config
        self._metrics = metrics
        self.openapi_bytes = openapi
        self._openapi: dict[str, Any] = msgspec.json.decode(openapi)  # the paths added to it
        self.calls = Calls()
        self._spec_cache: list[FunctionSpec] = []
        self._specs_at = float("-inf")

    # -- calls -------------------------------------------------------------------------

    async def invoke(self, request: Request) -> Response:
        """POST /v1/functions/{app}/{fn}: run it; the body holds the arguments."""
        access = self._access(request)
        kind = media_type(request.headers.get("content-type"))
        link = self.uplink.link
        spec = await _visible_spec(link, access, *_function(request))
        options = CallOptions.read(request.headers, request.query_params)
        body = await read_body(
            request.stream(),
            request.headers.get("content-length"),
            self.config.max_body_bytes,
            self.config.read_timeout_s,
        )
        args, kwargs = await read_arguments(body, kind, explicit=options.explicit)
        if spec.options.streams and not options.respond_async:
            if options.idempotency_key:
                raise BadRequest(
                    f"{spec.qualname} is a generator: a live stream is not kept, so it "
                    "cannot be run once per key; spawn it (?async=true) and read "
                    "GET /v1/calls/{id}/items, or call it without Idempotency-Key"
                )
            accept, call_id = request.headers.get("accept"), new_call_id()
            headers = {"Autan-Call-Id": call_id}
            return await stream_response(link, spec, call_id, (args, kwargs), accept, headers)
        call = _plan(access, spec, args, kwargs, options.idempotency_key)
        if not access.all_apps:  # keys off: every request may see every app
            call = msgspec.structs.replace(call, remember=True)
        status_url = _status_url(request, call.call_id)
        headers = {"Autan-Call-Id": call.call_id}
        wait_s = options.wait_s(self.config, spec.options.timeout_s)
        if options.respond_async:
            await self.calls.call_once(link, call, wait_s=None)
            accepted = Accepted(call_id=call.call_id, status_url=status_url)
            return value_response(
                accepted,
                msgpack=wants_msgpack(request.headers.get("accept")),
                headers={**headers, "Location": status_url},
                status=202,
            )
        success = await self.calls.call_once(link, call, wait_s=wait_s)
        if success is None:
            raise GatewayTimeout(
                f"no result within {wait_s:g} s; the call goes on: GET {status_url} for it",
                headers=headers,
                call_id=call.call_id,
                status_url=status_url,
            )
        return await _result(link, success, headers, request.headers.get("accept"))

    async def call_status(self, request: Request) -> Response:
        """GET /v1/calls/{call_id}: pending, succeeded (with the result) or failed."""
        access = self._access(request)
        call_id = request.path_params["call_id"]
        link = self.uplink.link
        record, result = await lookup(link, call_id) if valid_call_id(call_id) else (None, None)
        result = result or self.calls.answered(call_id)  # answered here, not yet recorded
        if (record is None and result is None) or not _may_read(access, record):
            raise NotFound(
                f"no call {call_id}: unknown, older than the results' retention, or not "
                "visible to this key"
            )
        status = await self._status(link, call_id, result)
        return value_response(
            status,
            msgpack=wants_msgpack(request.headers.get("accept")),
            headers={"Autan-Call-Id": call_id},
        )

    async def call_items(self, request: Request) -> Response:
        """GET /v1/calls/{call_id}/items: a spawned generator's items, as they come."""
        access = self._access(request)
        call_id = request.path_params["call_id"]
        link = self.uplink.link
        record, _ = await lookup(link, call_id) if valid_call_id(call_id) else (None, None)
        if record is None or not _may_read(access, record):
            raise NotFound(
                f"no spawned call {call_id}: unknown, older than the results' retention, or "
                "not visible to this key"
            )
        if not (await link.registry.get(record.app, record.fn)).options.streams:
            raise BadRequest(
                f"{record.app}.{record.fn} returns one result: GET /v1/calls/{call_id}"
            )
        last = request.headers.get("last-event-id", "-1").strip() or "-1"
        if not last.lstrip("-").isdigit():
            raise BadRequest(f"Last-Event-ID {last!r}: give the index of the last item received")
        start = int(last) + 1
        items = kept_items(link, call_id, start)
        accept = request.headers.get("accept")
        return await items_response(items, accept, {"Autan-Call-Id": call_id}, first_index=start)

    async def _status(self, link: Link, call_id: str, result: Result | None) -> CallStatus:
        match result:
            case Success(payload=payload):
                value = decode_value(await link.load(payload))
                return CallStatus(call_id=call_id, status="succeeded", result=value)
            case Failure(error=error):
                trace = error.traceback if self.config.tracebacks and error.traceback else None
                detail = ErrorDetail(type=error.type, message=error.message, traceback=trace)
                return CallStatus(call_id=call_id, status="failed", error=detail)
        return CallStatus(call_id=call_id, status="pending")

    # -- the rest ------------------------------------------------------------------------

    async def functions(self, request: Request) -> Response:
        """GET /v1/functions: what this key may call, with workers and backlog."""
        access = self._access(request)
        link = self.uplink.link
        specs = [spec for spec in await link.registry.all() if access.may_see(spec.app)]
        infos = [_info(state) for state in await function_states(link.broker, specs)]
        return json_response(FunctionList(functions=infos))

    async def healthz(self, request: Request) -> Response:
        """GET /healthz: the process answers and can recover by itself (503 when NATS has
        been away for longer than a minute: restarting the bridge is worth a try then)."""
        reason = self.uplink.unhealthy_reason()
        if reason is not None:
            raise BrokerUnavailable(reason)
        return json_response(Health(status="ok"))

    async def readyz(self, request: Request) -> Response:
        """GET /readyz: NATS is connected, JetStream stores a write, object storage
        answers a read (503 otherwise, saying which)."""
        reason = await self.uplink.unready_reason()
        if reason is not None:
            raise BrokerUnavailable(reason)
        if (problem := await storage_problem(self.uplink.link)) is not None:
            raise StorageUnavailable(problem)
        return json_response(Health(status="ready"))

    async def metrics(self, request: Request) -> Response:
        """GET /metrics: Prometheus text; with keys on, only for a key to every app."""
        access = self._access(request)
        if not access.all_apps:
            raise Forbidden("/metrics is for keys that may call every app ('*')")
        return Response(self._metrics.exposition(), media_type=_PROMETHEUS)

    async def openapi(self, request: Request) -> Response:
        """GET /openapi.json: this API, generated from its msgspec types, with a path for
        each deployed function the request's key may call (none without a key when keys
        are on, or while NATS is away)."""
        try:
            access = self.keys.authenticate(request.headers.get("authorization"))
            specs = [spec for spec in await self._specs() if access.may_see(spec.app)]
        except (Unauthorized, BrokerError):
            return Response(self.openapi_bytes, media_type="application/json")
        document = {**self._openapi, "paths": {**self._openapi["paths"], **function_paths(specs)}}
        return Response(msgspec.json.encode(document), media_type="application/json")

    async def docs(self, request: Request) -> Response:
        """GET /docs: Swagger UI on /openapi.json (its files from an installed package)."""
        return HTMLResponse(DOCS_PAGE)

    async def docs_file(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name not in _DOCS_FILES:
            raise NotFound(f"no file {name!r} under /docs")
        return FileResponse(Path(swagger_ui_path) / name)

    async def _specs(self) -> list[FunctionSpec]:
        """Every deployed spec, read at most every 2 s."""
        if time.monotonic() - self._specs_at > _SPECS_FOR_S:
            self._spec_cache = await self.uplink.link.registry.all()
            self._specs_at = time.monotonic()
        return self._spec_cache

    def _access(self, request: Request) -> Access:
        access = self.keys.authenticate(request.headers.get("authorization"))
        setattr(request.state, CLIENT_STATE_KEY, access.label)
        return access


def _function(request: Request) -> tuple[str, str]:
    """The app and function a path names; 404 for names no function can have (wildcards,
    control characters, too long), before they reach NATS."""
    app, fn = request.path_params["app"], request.path_params["fn"]
    if not (valid_name(app) and valid_name(fn)):
        raise NotFound(
            f"no function {app!r}.{fn!r}: names are 1 to {MAX_NAME_CHARS} lower-case letters, "
            "digits, '_' and '-'"
        )
    return app, fn


async def _visible_spec(link: Link, access: Access, app: str, fn: str) -> FunctionSpec:
    """The spec, or the same 404 for a function that does not exist and one the key may not
    see (so that a key learns nothing about apps beyond its own)."""
    if not access.may_see(app):
        raise NotFound(f"no function {app}.{fn} that this key may call")
    try:
        return await link.registry.get(app, fn)
    except FunctionNotFound:
        pass
    names = sorted(spec.name for spec in await link.registry.all() if spec.app == app)
    if names:
        raise NotFound(f"no function {fn!r} in app {app!r}; deployed: {', '.join(names)}")
    raise NotFound(f"no function {app}.{fn}: app {app!r} has no deployed functions")


def _plan(
    access: Access,
    spec: FunctionSpec,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    idempotency_key: str | None,
) -> PlannedCall:
    try:
        value = encode_value((args, kwargs))
    except UnencodableValue as exc:
        raise BadRequest(str(exc)) from None
    if idempotency_key is None:
        return PlannedCall(call_id=new_call_id(), spec=spec, value=value, digest="")
    return PlannedCall(
        call_id=idempotent_call_id(access.principal, spec.app, spec.name, idempotency_key),
        spec=spec,
        value=value,
        digest=request_digest(spec.app, spec.name, args, kwargs),
        idempotent=True,
    )


def _status_url(request: Request, call_id: str) -> str:
    return f"{request.scope.get('root_path', '')}/v1/calls/{call_id}"


async def _result(
    link: Link, success: Success, headers: dict[str, str], accept: str | None
) -> Response:
    data = await link.load(success.payload)
    headers = {**headers, "Autan-Attempts": str(success.attempts)}
    if wants_msgpack(accept):
        return Response(data, headers=headers, media_type=MSGPACK)  # the worker's encoding
    return value_response(decode_value(data), msgpack=False, headers=headers)


def _may_read(access: Access, record: CallRecord | None) -> bool:
    """Calls of other apps are hidden; calls the gateway did not record, but to all-app keys
    (with keys off, every request has access to all apps)."""
    return access.all_apps if record is None else access.may_see(record.app)


def _info(state: FunctionState) -> FunctionInfo:
    """The listing's entry; ConsumerNotFound (502) when the function's consumer is gone."""
    if state.missing is not None:
        raise state.missing
    spec, options = state.spec, state.spec.options
    policies = Policies(
        timeout_s=options.timeout_s,
        retries=options.retries,
        scaling=options.scaling,
        batching=options.batching,
        concurrency=options.concurrency,
        gpu=options.gpu,
        models=sorted(options.models),
    )
    workers = [
        WorkerSummary(worker_id=w.worker_id, state=w.state, host=w.host, providers=w.providers)
        for w in state.workers
    ]
    return FunctionInfo(
        app=spec.app,
        name=spec.name,
        version=spec.version,
        policies=policies,
        workers=workers,
        backlog=state.backlog or 0,
    )
