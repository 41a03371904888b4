"""Gateway fixtures: the gw app deployed with in-process workers, a gateway in front of it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from runtime.core import HttpSettings, Settings
from tests.gateway.running import ALL_KEY, bearer, running_gateway
from tests.stack import Stack

MAX_BODY_BYTES = 64 * 1024


@pytest.fixture(scope="session")
async def gateway(settings: Settings, gw_stack: Stack) -> AsyncIterator[str]:
    """A gateway with API keys on and a 64 KiB body limit; its base URL."""
    config = HttpSettings(max_body_bytes=MAX_BODY_BYTES)
    async with running_gateway(settings, config=config) as url:
        yield url


@pytest.fixture
async def client(gateway: str) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client with the key for every app."""
    async with httpx.AsyncClient(base_url=gateway, headers=bearer(ALL_KEY), timeout=30) as client:
        yield client
