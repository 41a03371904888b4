"""Every refusal is JSON `{"error": {"type", "message"}}` with the status that says why."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import msgspec
import pytest

from runtime.gateway.codec import read_body
from runtime.gateway.errors import PayloadTooLarge
from tests.gateway.conftest import MAX_BODY_BYTES


def _error(response: httpx.Response, status: int, kind: str) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["type"] == kind
    assert "Traceback" not in response.text
    message: str = body["error"]["message"]
    return message


@pytest.mark.parametrize(
    ("content", "headers", "expected"),
    [
        (b"{not json", {}, "not valid JSON"),
        (b"", {}, "empty"),
        (b"[1, 2]", {"Autan-Arguments": "explicit"}, "explicit arguments"),
        (b'{"args": 1}', {"Autan-Arguments": "explicit"}, "explicit arguments"),
        (b'{"args": [], "extra": 1}', {"Autan-Arguments": "explicit"}, "explicit arguments"),
        (b"1", {"Autan-Arguments": "sometimes"}, "means nothing"),
    ],
)
async def test_malformed_json_is_400(
    client: httpx.AsyncClient, content: bytes, headers: dict[str, str], expected: str
) -> None:
    response = await client.post(
        "/v1/functions/gw/echo",
        content=content,
        headers={"Content-Type": "application/json", **headers},
    )
    assert expected in _error(response, 400, "BadRequest")


@pytest.mark.parametrize(
    "query", ["timeout_s=soon", "timeout_s=-1", "timeout_s=nan", "async=maybe"]
)
async def test_malformed_parameters_are_400(client: httpx.AsyncClient, query: str) -> None:
    response = await client.post(f"/v1/functions/gw/echo?{query}", json=1)
    _error(response, 400, "BadRequest")


async def test_malformed_msgpack_is_400(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/functions/gw/echo", content=b"\xc1", headers={"Content-Type": "application/msgpack"}
    )
    assert "not valid msgpack" in _error(response, 400, "BadRequest")


async def test_explicit_arguments_with_raw_bytes_are_400(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/functions/gw/length?args=explicit",
        content=b"abc",
        headers={"Content-Type": "application/octet-stream"},
    )
    _error(response, 400, "BadRequest")


@pytest.mark.parametrize("content_type", ["text/plain", "application/xml", "multipart/form-data"])
async def test_other_content_types_are_415(client: httpx.AsyncClient, content_type: str) -> None:
    response = await client.post(
        "/v1/functions/gw/echo", content=b"hello", headers={"Content-Type": content_type}
    )
    assert "application/json" in _error(response, 415, "UnsupportedMedia")


async def test_body_over_the_limit_is_413(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/functions/gw/length",
        content=b"x" * (MAX_BODY_BYTES + 1),
        headers={"Content-Type": "application/octet-stream"},
    )
    assert str(MAX_BODY_BYTES) in _error(response, 413, "PayloadTooLarge")


async def test_body_at_the_limit_is_taken(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/functions/gw/length",
        content=b"x" * MAX_BODY_BYTES,
        headers={"Content-Type": "application/octet-stream"},
    )
    assert response.json() == MAX_BODY_BYTES


async def test_chunked_body_over_the_limit_is_413(client: httpx.AsyncClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(4 * MAX_BODY_BYTES // 4096):
            yield b"x" * 4096

    response = await client.post(
        "/v1/functions/gw/length",
        content=chunks(),
        headers={"Content-Type": "application/octet-stream"},
    )
    assert response.request.headers["transfer-encoding"] == "chunked"
    _error(response, 413, "PayloadTooLarge")


async def test_body_reading_stops_at_the_limit() -> None:
    """An endless body is refused after the limit: it is never read whole."""
    read: list[int] = []

    async def endless() -> AsyncIterator[bytes]:
        while True:
            read.append(1000)
            yield b"x" * 1000

    with pytest.raises(PayloadTooLarge):
        await read_body(endless(), None, max_bytes=10_000)
    assert sum(read) == 11_000
    with pytest.raises(PayloadTooLarge):
        await read_body(endless(), "10001", max_bytes=10_000)  # Content-Length: nothing read
    assert sum(read) == 11_000


async def test_unknown_function_is_404_naming_the_deployed_ones(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post("/v1/functions/gw/ehco", json=1)
    message = _error(response, 404, "NotFound")
    assert "no function 'ehco' in app 'gw'" in message
    assert "echo" in message


async def test_unknown_app_is_404(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/functions/nowhere/echo", json=1)
    assert "nowhere" in _error(response, 404, "NotFound")


@pytest.mark.parametrize("call_id", ["unknownunknownunknown1", "not.a valid id!"])
async def test_unknown_call_is_404(client: httpx.AsyncClient, call_id: str) -> None:
    response = await client.get(f"/v1/calls/{call_id}")
    _error(response, 404, "NotFound")


async def test_unknown_route_is_404_and_wrong_method_405(client: httpx.AsyncClient) -> None:
    _error(await client.get("/v2/anything"), 404, "NotFound")
    response = await client.get("/v1/functions/gw/echo")
    _error(response, 405, "MethodNotAllowed")
    assert response.headers["allow"] == "POST"


async def test_result_json_cannot_carry_is_406(client: httpx.AsyncClient) -> None:
    body = msgspec.msgpack.encode({(1, 2): "a tuple key"})
    response = await client.post(
        "/v1/functions/gw/echo", content=body, headers={"Content-Type": "application/msgpack"}
    )
    assert "application/msgpack" in _error(response, 406, "NotAcceptable")
