"""When the queue is full (429) or NATS is away (503): refusals that say when to retry."""

from __future__ import annotations

import httpx
import msgspec
import pytest

from runtime.control import NatsServer, free_port
from runtime.core import Link, Settings
from runtime.gateway import uplink
from runtime.ops import deploy_target
from tests.gateway.running import running_gateway
from tests.stack import poll


def _settings(settings: Settings, server_url: str) -> Settings:
    return msgspec.structs.replace(settings, nats_url=server_url, connect_timeout_s=0.5)


async def test_full_calls_stream_is_429_with_retry_after(
    own_nats: NatsServer, settings: Settings
) -> None:
    small = msgspec.structs.replace(_settings(settings, own_nats.url), max_queued_calls=2)
    async with await Link.open(small) as link:
        await deploy_target(link, "tests.gateway.app")  # no workers: calls stay queued
    async with (
        running_gateway(small, api_keys=None) as url,
        httpx.AsyncClient(base_url=url) as client,
    ):
        for _ in range(2):
            assert (await client.post("/v1/functions/gw/echo?async=1", json=1)).status_code == 202
        for path in ("/v1/functions/gw/echo?async=1", "/v1/functions/gw/echo"):
            refused = await client.post(path, json=1)
            assert refused.status_code == 429
            assert refused.headers["retry-after"] == "1"
            assert refused.json()["error"]["type"] == "QueueFull"
            assert "retry later" in refused.json()["error"]["message"]


async def test_nats_never_reached_is_503(settings: Settings) -> None:
    nowhere = _settings(settings, f"nats://127.0.0.1:{free_port()}")
    async with (
        running_gateway(nowhere, api_keys=None, ready=False) as url,
        httpx.AsyncClient(base_url=url) as client,
    ):
        assert (await client.get("/healthz")).status_code == 200
        for response in (
            await client.get("/readyz"),
            await client.post("/v1/functions/gw/echo", json=1),
            await client.get("/v1/functions"),
        ):
            assert response.status_code == 503
            assert response.headers["retry-after"] == "5"
            error = response.json()["error"]
            assert error["type"] == "BrokerUnavailable"
            assert nowhere.nats_url in error["message"]


async def test_nats_going_away_is_503_until_it_is_back(
    own_nats: NatsServer, settings: Settings
) -> None:
    local = _settings(settings, own_nats.url)
    async with (
        running_gateway(local, api_keys=None) as url,
        httpx.AsyncClient(base_url=url) as client,
    ):

        async def ready_is(status: int) -> bool:
            return (await client.get("/readyz")).status_code == status

        own_nats.stop()
        await poll(lambda: ready_is(503), timeout_s=10)
        response = await client.post("/v1/functions/gw/echo", json=1)
        assert response.status_code == 503
        assert response.headers["retry-after"] == "5"
        assert "reconnecting" in response.json()["error"]["message"]
        own_nats.start()
        await poll(lambda: ready_is(200), timeout_s=15)


async def test_nats_away_for_long_fails_healthz_too(
    own_nats: NatsServer, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ready fails at once; healthy only once NATS has been away past the bound (a minute;
    a second here), and is healthy again when NATS is back."""
    monkeypatch.setattr(uplink, "UNHEALTHY_AFTER_S", 1.0)
    local = _settings(settings, own_nats.url)
    async with (
        running_gateway(local, api_keys=None) as url,
        httpx.AsyncClient(base_url=url) as client,
    ):

        async def health_is(status: int) -> bool:
            return (await client.get("/healthz")).status_code == status

        own_nats.stop()
        assert (await client.get("/healthz")).status_code == 200  # away for a moment only
        await poll(lambda: health_is(503), timeout_s=10)
        unhealthy = (await client.get("/healthz")).json()["error"]
        assert "has been away for" in unhealthy["message"]
        own_nats.start()
        await poll(lambda: health_is(200), timeout_s=15)
