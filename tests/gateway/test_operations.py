"""What operators and tools read: health, readiness, metrics, the function list, OpenAPI."""

from __future__ import annotations

import httpx

from tests.gateway.running import ALL_KEY, GW_KEY, OTHER_KEY, bearer


async def test_healthz_and_readyz_need_no_key(gateway: str) -> None:
    async with httpx.AsyncClient(base_url=gateway) as client:
        health = await client.get("/healthz")
        ready = await client.get("/readyz")
    assert (health.status_code, health.json()) == (200, {"status": "ok"})
    assert (ready.status_code, ready.json()) == (200, {"status": "ready"})


async def test_function_list(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/functions")
    assert response.status_code == 200
    functions = {f"{f['app']}.{f['name']}": f for f in response.json()["functions"]}
    echo = functions["gw.echo"]
    assert len(echo["version"]) == 16
    assert echo["policies"]["timeout_s"] == 10
    assert echo["policies"]["retries"]["max_attempts"] == 1
    assert echo["policies"]["batching"] is None
    assert [w["state"] for w in echo["workers"]] == ["ready"]
    assert echo["backlog"] == 0
    assert {"gw.gate", "gw.record", "gw.nap"} <= set(functions)


async def test_metrics_count_requests_by_route_and_status(client: httpx.AsyncClient) -> None:
    await client.post("/v1/functions/gw/echo", json=1)
    await client.post("/v1/functions/gw/nothing", json=1)
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    ok = 'autan_gateway_requests_total{method="POST",route="/v1/functions/{app}/{fn}",status="200"}'
    missing = ok.replace('status="200"', 'status="404"')
    assert ok in text
    assert missing in text
    assert "autan_gateway_request_duration_seconds_bucket" in text
    assert "autan_gateway_requests_in_flight" in text
    assert ALL_KEY not in text


async def test_openapi_lists_the_routes_and_their_schemas(gateway: str) -> None:
    async with httpx.AsyncClient(base_url=gateway) as client:
        response = await client.get("/openapi.json")
    assert response.status_code == 200
    document = response.json()
    assert document["openapi"].startswith("3.1")
    assert set(document["paths"]) == {
        "/v1/functions/{app}/{fn}",
        "/v1/calls/{call_id}",
        "/v1/calls/{call_id}/items",
        "/v1/functions",
        "/healthz",
        "/readyz",
        "/metrics",
        "/openapi.json",
    }
    call = document["paths"]["/v1/functions/{app}/{fn}"]["post"]
    assert {"200", "202", "400", "401", "404", "413", "415", "422", "429", "503", "504"} <= set(
        call["responses"]
    )
    assert set(call["requestBody"]["content"]) == {
        "application/json",
        "application/msgpack",
        "application/octet-stream",
    }
    schemas = document["components"]["schemas"]
    assert {"Accepted", "CallStatus", "ErrorBody", "ErrorDetail", "FunctionList"} <= set(schemas)
    states = schemas["CallStatus"]["properties"]["status"]["enum"]
    assert sorted(states) == ["failed", "pending", "succeeded"]
    _refs_resolve(document, schemas)


def _refs_resolve(node: object, schemas: dict[str, object]) -> None:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            assert ref.removeprefix("#/components/schemas/") in schemas, ref
        for value in node.values():
            _refs_resolve(value, schemas)
    elif isinstance(node, list):
        for value in node:
            _refs_resolve(value, schemas)


async def test_openapi_describes_each_function_a_key_may_call(gateway: str) -> None:
    async with httpx.AsyncClient(base_url=gateway, headers=bearer(GW_KEY)) as client:
        document = (await client.get("/openapi.json")).json()
    nap = document["paths"]["/v1/functions/gw/nap"]["post"]
    assert nap["operationId"] == "gw__nap"
    assert nap["requestBody"]["content"]["application/json"]["schema"] == {"type": "number"}
    assert nap["responses"]["200"]["content"]["application/json"]["schema"] == {"type": "number"}
    grid = document["paths"]["/v1/functions/gw/grid"]["post"]
    body = grid["requestBody"]["content"]["application/json"]["schema"]
    assert body["properties"]["args"]["prefixItems"] == [{"type": "integer"}, {"type": "integer"}]
    assert any(p["name"] == "args" and p["required"] for p in grid["parameters"])
    _refs_resolve(document, document["components"]["schemas"])
    async with httpx.AsyncClient(base_url=gateway, headers=bearer(OTHER_KEY)) as client:
        other = (await client.get("/openapi.json")).json()
    assert not [path for path in other["paths"] if path.startswith("/v1/functions/gw/")]


async def test_docs_serve_swagger_ui_from_the_installed_package(gateway: str) -> None:
    async with httpx.AsyncClient(base_url=gateway) as client:
        page = await client.get("/docs")
        script = await client.get("/docs/swagger-ui-bundle.js")
        outside = await client.get("/docs/..%2F..%2Fpyproject.toml")
    assert page.status_code == 200
    assert '<script src="/docs/swagger-ui-bundle.js">' in page.text
    assert 'url: "/openapi.json"' in page.text
    assert script.status_code == 200
    assert "SwaggerUIBundle" in script.text
    assert outside.status_code == 404
