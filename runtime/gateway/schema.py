"""The gateway's request and response bodies, and the OpenAPI document made from them.

Every body the gateway writes is one of these frozen msgspec Structs (or, for a
sync call, the function's result itself); `/openapi.json` is generated from the
same types with `msgspec.json.schema_components`, so it cannot drift from them.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from runtime.core import Batching, GpuChoice, Retries, Scaling

__all__ = [
    "SCHEMA_REF",
    "Accepted",
    "CallStatus",
    "ErrorBody",
    "ErrorDetail",
    "ExplicitArguments",
    "FunctionInfo",
    "FunctionList",
    "Health",
    "Operation",
    "Policies",
    "WorkerSummary",
    "openapi_document",
]


class ExplicitArguments(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The body with `Autan-Arguments: explicit` (or `?args=explicit`): `fn(*args, **kwargs)`."""

    args: list[Any] = []
    kwargs: dict[str, Any] = {}


class ErrorDetail(msgspec.Struct, frozen=True, omit_defaults=True):
    """What went wrong: `type` names it (a function's own exception type for its errors)."""

    type: str
    message: str
    call_id: str | None = None
    status_url: str | None = None
    traceback: str | None = None


class ErrorBody(msgspec.Struct, frozen=True):
    """Every error answer: `{"error": {"type": ..., "message": ...}}`."""

    error: ErrorDetail


class Accepted(msgspec.Struct, frozen=True):
    """202: JetStream has stored the call; poll `status_url` for its result."""

    call_id: str
    status_url: str


CallState = Literal["pending", "succeeded", "failed"]


class CallStatus(msgspec.Struct, frozen=True):
    """A call's state. `pending` covers both queued and running (they are not told apart)."""

    call_id: str
    status: CallState
    result: Any = None
    error: ErrorDetail | None = None


class Policies(msgspec.Struct, frozen=True):
    """The options a function was deployed with (its models are named, not described)."""

    timeout_s: float
    retries: Retries
    scaling: Scaling
    batching: Batching | None
    concurrency: int
    gpu: GpuChoice
    models: list[str]


class WorkerSummary(msgspec.Struct, frozen=True):
    worker_id: str
    state: str
    host: str
    providers: tuple[str, ...]


class FunctionInfo(msgspec.Struct, frozen=True):
    """One deployed function: `backlog` counts calls queued or running now."""

    app: str
    name: str
    version: str
    policies: Policies
    workers: list[WorkerSummary]
    backlog: int


class FunctionList(msgspec.Struct, frozen=True):
    functions: list[FunctionInfo]


class Health(msgspec.Struct, frozen=True):
    status: str


class Operation(msgspec.Struct, frozen=True, kw_only=True):
    """One route as OpenAPI describes it: status -> (description, body type or None)."""

    path: str
    method: str
    endpoint: str  # the name of the `Endpoints` method that answers it
    summary: str
    responses: dict[int, tuple[str, Any]]
    parameters: list[dict[str, Any]] = []
    request: dict[str, Any] | None = None
    secured: bool = True


_SCHEMA_TYPES: tuple[Any, ...] = (
    Accepted,
    CallStatus,
    ErrorBody,
    ExplicitArguments,
    FunctionList,
    Health,
)
SCHEMA_REF = "#/components/schemas/{name}"  # where a component's schema is referenced


def openapi_document(operations: list[Operation], *, title: str, version: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document of `operations`, schemas generated from the Structs above."""
    _, components = msgspec.json.schema_components(_SCHEMA_TYPES, ref_template=SCHEMA_REF)
    paths: dict[str, dict[str, Any]] = {}
    for operation in operations:
        paths.setdefault(operation.path, {})[operation.method.lower()] = _operation(operation)
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer"}},
        },
    }


def _operation(operation: Operation) -> dict[str, Any]:
    described: dict[str, Any] = {
        "summary": operation.summary,
        "responses": {
            str(status): _response(description, body)
            for status, (description, body) in sorted(operation.responses.items())
        },
    }
    if operation.parameters:
        described["parameters"] = operation.parameters
    if operation.request is not None:
        described["requestBody"] = operation.request
    if operation.secured:
        described["security"] = [{"apiKey": []}]
    return described


def _response(description: str, body: Any) -> dict[str, Any]:
    if body is None:
        return {"description": description}
    if isinstance(body, dict):  # a media type -> schema mapping given as is
        return {"description": description, "content": body}
    (schema,), _ = msgspec.json.schema_components((body,), ref_template=SCHEMA_REF)
    return {"description": description, "content": {"application/json": {"schema": schema}}}
