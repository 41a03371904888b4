"""The per-function part of `/openapi.json`, and `/docs` (Swagger UI, from the files of
the `swagger-ui-bundle` package: nothing is fetched from the internet).

Each deployed function a caller may call gets a path of its own,
`POST /v1/functions/<app>/<fn>`, with an operationId, its docstring, and its argument and
result schemas as its annotations gave them at deploy (`FunctionSpec.signature`): one
argument is the body itself; several travel as `{"args": [...], "kwargs": {...}}` with
`?args=explicit`. With API keys on, a request without a key gets the generic API alone,
and a key sees the functions of its own apps.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from runtime.core import FunctionSpec, Signature
from runtime.gateway.schema import SCHEMA_REF

__all__ = ["DOCS_PAGE", "function_paths"]

_ERROR = {"application/json": {"schema": {"$ref": SCHEMA_REF.format(name="ErrorBody")}}}


def function_paths(specs: Iterable[FunctionSpec]) -> dict[str, Any]:
    """`paths` entries of the functions in `specs`."""
    return {
        f"/v1/functions/{spec.app}/{spec.name}": {"post": _operation(spec)}
        for spec in sorted(specs, key=lambda spec: spec.qualname)
    }


def _operation(spec: FunctionSpec) -> dict[str, Any]:
    signature = spec.signature or Signature(parameters=(), result={})
    doc = signature.doc or f"Call {spec.qualname}."
    operation: dict[str, Any] = {
        "operationId": f"{spec.app}__{spec.name}".replace("-", "_"),
        "tags": [spec.app],
        "summary": doc.splitlines()[0],
        "description": f"{doc}\n\nVersion {spec.version}.",
        "parameters": _query_parameters(signature),
        "responses": {
            "200": {"description": "The result", "content": _result(spec, signature)},
            "202": {
                "description": "Queued (?async=true): poll status_url",
                "content": {
                    "application/json": {"schema": {"$ref": SCHEMA_REF.format(name="Accepted")}}
                },
            },
            "default": {"description": "An error", "content": _ERROR},
        },
    }
    if signature.parameters:
        operation["requestBody"] = {
            "required": any(p.required for p in signature.parameters),
            "content": {"application/json": {"schema": _body(signature)}},
        }
    return operation


def _body(signature: Signature) -> dict[str, Any]:
    if len(signature.parameters) == 1:
        return signature.parameters[0].schema
    return {
        "type": "object",
        "properties": {
            "args": {
                "type": "array",
                "prefixItems": [p.schema for p in signature.parameters],
                "description": ", ".join(p.name for p in signature.parameters),
            },
            "kwargs": {
                "type": "object",
                "properties": {p.name: p.schema for p in signature.parameters},
            },
        },
    }


def _query_parameters(signature: Signature) -> list[dict[str, Any]]:
    parameters: list[dict[str, Any]] = [
        {"name": "async", "in": "query", "schema": {"type": "boolean"},
         "description": "answer 202 once the call is queued"},
    ]  # fmt: skip
    if len(signature.parameters) != 1:
        parameters.append(
            {
                "name": "args",
                "in": "query",
                "required": True,
                "schema": {"enum": ["explicit"]},
                "description": 'the body is {"args": [...], "kwargs": {...}}',
            }
        )
    return parameters


def _result(spec: FunctionSpec, signature: Signature) -> dict[str, Any]:
    if spec.options.streams:
        return {
            "text/event-stream": {"schema": {"type": "string"}},
            "application/x-ndjson": {"schema": {"type": "string"}},
            "application/json": {"schema": {"type": "array", "items": signature.result}},
        }
    return {"application/json": {"schema": signature.result}}


DOCS_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Autan HTTP API</title>
<link rel="stylesheet" href="/docs/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="/docs/swagger-ui-bundle.js"></script>
<script>
window.ui = SwaggerUIBundle({url: "/openapi.json", dom_id: "#swagger-ui", deepLinking: true,
  persistAuthorization: true});
</script>
</body>
</html>
"""
