"""A gateway with keys off (loopback only), tracebacks on, and how it shuts down."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from runtime.core import HttpSettings, Settings
from runtime.gateway import serve_gateway
from tests.gateway.running import running_gateway
from tests.stack import Stack, poll


@pytest.fixture(scope="module")
async def open_gateway(settings: Settings, gw_stack: Stack) -> AsyncIterator[str]:
    config = HttpSettings(tracebacks=True)
    async with running_gateway(settings, api_keys=None, config=config) as url:
        yield url


async def test_keys_off_needs_no_authorization(open_gateway: str) -> None:
    async with httpx.AsyncClient(base_url=open_gateway) as client:
        response = await client.post("/v1/functions/gw/echo", json="open")
        assert response.json() == "open"
        assert (await client.get("/metrics")).status_code == 200
        assert (await client.get("/v1/functions")).status_code == 200


async def test_tracebacks_flag_shows_the_functions_traceback(open_gateway: str) -> None:
    async with httpx.AsyncClient(base_url=open_gateway) as client:
        response = await client.post("/v1/functions/gw/boom", json="with trace")
        assert response.status_code == 500
        error = response.json()["error"]
        assert error["type"] == "ValueError"
        assert ", in boom" in error["traceback"]
        queued = await client.post("/v1/functions/gw/boom?async=1", json="queued")
        url = queued.json()["status_url"]

        async def failed() -> bool:
            return bool((await client.get(url)).json()["status"] == "failed")

        await poll(failed, timeout_s=10)
        assert ", in boom" in (await client.get(url)).json()["error"]["traceback"]


async def test_shutdown_lets_open_requests_finish(settings: Settings, gw_stack: Stack) -> None:
    async with httpx.AsyncClient(timeout=30) as client:
        async with running_gateway(settings, api_keys=None) as url:
            request = asyncio.ensure_future(client.post(f"{url}/v1/functions/gw/nap", json=0.3))

            async def in_flight() -> bool:
                metrics = (await client.get(f"{url}/metrics")).text
                return "autan_gateway_requests_in_flight 2.0" in metrics

            await poll(in_flight, timeout_s=10)
        response = await request
        assert response.status_code == 200
        assert response.json() == 0.3
        with pytest.raises(httpx.ConnectError):
            await client.get(f"{url}/healthz")


async def test_keep_alive_answers_do_not_wait_on_nagle(open_gateway: str) -> None:
    """Without TCP_NODELAY each answer on a kept-alive connection waited ~40 ms."""
    async with httpx.AsyncClient(base_url=open_gateway) as client:
        await client.get("/healthz")
        started = time.perf_counter()
        for _ in range(20):
            await client.post("/v1/functions/gw/echo", json=1)
        assert time.perf_counter() - started < 0.4  # 20 x 40 ms would be 0.8 s


async def test_busy_port_is_a_clear_error(settings: Settings) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ValueError, match=f"cannot listen on 127.0.0.1:{port}"):
            await serve_gateway(settings.with_http(port=port))
