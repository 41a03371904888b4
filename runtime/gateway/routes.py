"""The gateway's route table: each route's path, method, endpoint and what it answers.

`gateway.create_app` builds the Starlette routes and `/openapi.json` from this
one table, so the document lists exactly the routes that are served.
"""

from __future__ import annotations

from typing import Any

from runtime.gateway.schema import (
    SCHEMA_REF,
    Accepted,
    CallStatus,
    ErrorBody,
    FunctionList,
    Health,
    Operation,
)

__all__ = ["OPERATIONS"]


def _path(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": {"type": "string"},
        "description": description,
    }


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "schema": schema, "description": description}


def _header(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "header", "schema": {"type": "string"}, "description": description}


_CALL_PARAMETERS = [
    _path("app", "the app's name"),
    _path("fn", "the function's name"),
    _query("async", {"type": "boolean"}, "answer 202 once the call is queued"),
    _query("timeout_s", {"type": "number"}, "how long to wait for a sync result (504 after)"),
    _query("args", {"enum": ["explicit"]}, 'the body is {"args": [...], "kwargs": {...}}'),
    _header("Prefer", "respond-async: answer 202 once the call is queued"),
    _header("Autan-Arguments", 'explicit: the body is {"args": [...], "kwargs": {...}}'),
    _header("Idempotency-Key", "the same key returns the same call, run once"),
    _header("Accept", "application/msgpack for the result in msgpack (numpy dtypes kept)"),
]

_CALL_BODY = {
    "description": "The one positional argument (or, explicit, all arguments)",
    "required": False,
    "content": {
        "application/json": {
            "schema": {"anyOf": [{}, {"$ref": SCHEMA_REF.format(name="ExplicitArguments")}]}
        },
        "application/msgpack": {"schema": {}},
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
    },
}

_ANY_RESULT: dict[str, Any] = {
    "application/json": {"schema": {}},
    "application/msgpack": {"schema": {}},
}
_ERRORS = {
    400: ("Malformed body or parameters", ErrorBody),
    401: ("No API key, or an unknown one", ErrorBody),
    404: ("No such function, or not one this key may call", ErrorBody),
    406: ("The result cannot be written as JSON: ask for msgpack", ErrorBody),
    413: ("The body is over the limit", ErrorBody),
    415: ("Unsupported Content-Type", ErrorBody),
    422: ("Idempotency-Key reused with another request", ErrorBody),
    429: ("The calls queue is full: retry after Retry-After", ErrorBody),
    500: ("The function raised (type: its exception type), or the gateway failed", ErrorBody),
    503: ("NATS cannot be reached: retry after Retry-After", ErrorBody),
    504: ("No result in time; the call goes on (call_id, status_url)", ErrorBody),
}

OPERATIONS = [
    Operation(
        path="/v1/functions/{app}/{fn}",
        method="POST",
        endpoint="invoke",
        summary="Call a function: sync (200 and the result) or async (202)",
        parameters=_CALL_PARAMETERS,
        request=_CALL_BODY,
        responses={
            200: ("The function's result", _ANY_RESULT),
            202: ("Queued: poll status_url", Accepted),
            **_ERRORS,
        },
    ),
    Operation(
        path="/v1/calls/{call_id}",
        method="GET",
        endpoint="call_status",
        summary="A call's status, and its result or error once it has one",
        parameters=[_path("call_id", "as returned by a call")],
        responses={
            200: ("pending, succeeded or failed", CallStatus),
            401: _ERRORS[401],
            404: ("Unknown, expired, or not visible to this key", ErrorBody),
        },
    ),
    Operation(
        path="/v1/calls/{call_id}/items",
        method="GET",
        endpoint="call_items",
        summary="A spawned generator's items, from the start or after Last-Event-ID",
        parameters=[
            _path("call_id", "as returned by an async call of a generator function"),
            _header("Last-Event-ID", "the index of the last item received: resume after it"),
            _header("Accept", "text/event-stream, application/x-ndjson, or JSON (one list)"),
        ],
        responses={
            200: (
                "The items as they come: SSE, NDJSON, or one JSON list at the end",
                {
                    "text/event-stream": {"schema": {"type": "string"}},
                    "application/x-ndjson": {"schema": {"type": "string"}},
                    "application/json": {"schema": {"type": "array"}},
                },
            ),
            400: ("Not a generator's call, or a Last-Event-ID that is no index", ErrorBody),
            401: _ERRORS[401],
            404: ("Unknown, expired, or not visible to this key", ErrorBody),
        },
    ),
    Operation(
        path="/v1/functions",
        method="GET",
        endpoint="functions",
        summary="The functions this key may call: version, policies, workers, backlog",
        responses={200: ("Deployed functions", FunctionList), 401: _ERRORS[401]},
    ),
    Operation(
        path="/healthz",
        method="GET",
        endpoint="healthz",
        summary="The process answers",
        responses={200: ("Up", Health)},
        secured=False,
    ),
    Operation(
        path="/readyz",
        method="GET",
        endpoint="readyz",
        summary="NATS is connected and JetStream answers",
        responses={200: ("Ready", Health), 503: _ERRORS[503]},
        secured=False,
    ),
    Operation(
        path="/metrics",
        method="GET",
        endpoint="metrics",
        summary="Prometheus metrics",
        responses={
            200: ("Prometheus text format", {"text/plain": {"schema": {"type": "string"}}}),
            401: _ERRORS[401],
            403: ("A key scoped to some apps only", ErrorBody),
        },
    ),
    Operation(
        path="/openapi.json",
        method="GET",
        endpoint="openapi",
        summary="This document",
        responses={200: ("OpenAPI 3.1", {"application/json": {"schema": {"type": "object"}}})},
        secured=False,
    ),
]
