"""The HTTP bridge against clients that misbehave: slow heads and bodies are cut, deep or
huge bodies get a 400 with bounded work, and names no function can have never reach NATS."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any, cast

import anyio
import httpx
import numpy as np
import pytest

from broker import decode_value, encode_value
from runtime import App, Context, InvalidOption
from runtime.core import MAX_NAME_CHARS, HttpSettings, Settings
from tests.gateway.running import running_gateway
from tests.stack import Stack

READ_TIMEOUT_S = 1.0


@pytest.fixture(scope="module", params=["httptools", "h11"])
async def strict(
    settings: Settings, gw_stack: Stack, request: pytest.FixtureRequest
) -> AsyncIterator[str]:
    """A gateway with keys off and a one-second read deadline, on either HTTP parser; its
    base URL."""
    config = HttpSettings(read_timeout_s=READ_TIMEOUT_S, parser=request.param)
    async with running_gateway(settings, api_keys=None, config=config) as url:
        yield url


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


async def _closed_within(stream: anyio.abc.SocketStream, seconds: float) -> bytes:
    """What the server sent before it closed the connection (fails if it did not)."""
    received = b""
    with anyio.fail_after(seconds):
        try:
            while True:
                received += await stream.receive()
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            return received


async def test_a_head_trickled_in_is_cut_after_the_read_timeout(strict: str) -> None:
    started = time.monotonic()
    async with await anyio.connect_tcp("127.0.0.1", _port(strict)) as stream:
        await stream.send(b"POST /v1/functions/gw/echo HTTP/1.1\r\nHost: x\r\n")

        async def trickle() -> None:
            for _ in range(100):
                await stream.send(b"X")
                await anyio.sleep(0.2)

        async with anyio.create_task_group() as group:
            group.start_soon(trickle)
            await _closed_within(stream, READ_TIMEOUT_S + 5)
            group.cancel_scope.cancel()
    assert time.monotonic() - started < READ_TIMEOUT_S + 5


async def test_a_head_that_never_ends_is_cut_long_before_the_deadline(strict: str) -> None:
    """Headers past 64 KiB: the connection is cut, whichever parser reads them."""
    started = time.monotonic()
    async with await anyio.connect_tcp("127.0.0.1", _port(strict)) as stream:
        await stream.send(b"POST /v1/functions/gw/echo HTTP/1.1\r\nHost: x\r\n")
        with pytest.raises((anyio.BrokenResourceError, anyio.EndOfStream, OSError)):
            await _endless_head(stream)
    assert time.monotonic() - started < READ_TIMEOUT_S  # cut by size, not by the deadline


async def _endless_head(stream: anyio.abc.SocketStream) -> None:
    for index in range(10_000):  # 100 MB, were it all accepted
        await stream.send(b"X-Filler-%d: %s\r\n" % (index, b"y" * 10_000))
    await stream.receive()


async def test_a_body_trickled_in_gets_408(strict: str) -> None:
    async with await anyio.connect_tcp("127.0.0.1", _port(strict)) as stream:
        await stream.send(
            b"POST /v1/functions/gw/echo HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n[1,"
        )
        answer = await _closed_within(stream, READ_TIMEOUT_S + 5)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]


async def test_json_nested_too_deep_is_400(strict: str) -> None:
    body = b"[" * 100_000 + b"]" * 100_000
    async with httpx.AsyncClient(base_url=strict) as client:
        response = await client.post(
            "/v1/functions/gw/echo", content=body, headers={"Content-Type": "application/json"}
        )
    assert response.status_code == 400
    assert "nests too deep" in response.json()["error"]["message"]


async def test_a_body_of_millions_of_values_is_400_and_cheap(strict: str) -> None:
    body = b"\xdd" + (2_000_000).to_bytes(4, "big") + b"\x90" * 2_000_000  # [[], [], ...]
    async with httpx.AsyncClient(base_url=strict, timeout=30) as client:
        started = time.monotonic()
        async with anyio.create_task_group() as group:
            health: list[float] = []

            async def probe() -> None:  # the gateway answers others meanwhile
                for _ in range(5):
                    begun = time.monotonic()
                    assert (await client.get("/healthz")).status_code == 200
                    health.append(time.monotonic() - begun)
                    await anyio.sleep(0.05)

            group.start_soon(probe)
            response = await client.post(
                "/v1/functions/gw/echo",
                content=body,
                headers={"Content-Type": "application/msgpack"},
            )
    assert response.status_code == 400
    assert "more than 1000000 values" in response.json()["error"]["message"]
    assert time.monotonic() - started < 5
    assert max(health) < 1.0


async def test_a_large_array_is_one_value(strict: str) -> None:
    array = np.arange(1_500_000, dtype=np.float32)  # more numbers than the limit, one value
    async with httpx.AsyncClient(base_url=strict, timeout=30) as client:
        response = await client.post(
            "/v1/functions/gw/echo",
            content=encode_value(array),
            headers={"Content-Type": "application/msgpack", "Accept": "application/msgpack"},
        )
    assert response.status_code == 200
    assert np.array_equal(decode_value(response.content), array)


@pytest.mark.parametrize(
    "path",
    ["/v1/functions/*/echo", "/v1/functions/gw/%3E", "/v1/functions/gw/a%00b",
     "/v1/functions/gw/a%20b", f"/v1/functions/gw/{'x' * (MAX_NAME_CHARS + 1)}"],
)  # fmt: skip
async def test_names_no_function_can_have_are_404(strict: str, path: str) -> None:
    async with httpx.AsyncClient(base_url=strict) as client:
        response = await client.post(path, json=1)
    assert response.status_code == 404
    assert "names are 1 to 64" in response.json()["error"]["message"]


def test_names_too_long_are_refused_at_decoration() -> None:
    with pytest.raises(InvalidOption, match="1 to 64"):
        App("a" * (MAX_NAME_CHARS + 1))
    app = App("fine")

    def fn(ctx: Context) -> None:
        return None

    with pytest.raises(InvalidOption, match="1 to 64"):
        app.function(name="f" * (MAX_NAME_CHARS + 1))(cast(Any, fn))
