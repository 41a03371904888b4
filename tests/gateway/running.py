"""A real gateway on a loopback port, served by uvicorn in this event loop, for the tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from functools import partial
from typing import Any

import anyio
import httpx
import msgspec

from runtime.core import ApiKey, ApiKeys, HttpSettings, Settings
from runtime.gateway import serve_gateway
from tests.stack import poll

ALL_KEY = "test-key-for-every-app"
GW_KEY = "test-key-for-gw-only"
OTHER_KEY = "test-key-for-another-app"

KEYS = ApiKeys(
    keys=(
        ApiKey(key=ALL_KEY, name="ops"),
        ApiKey(key=GW_KEY, apps=("gw",), name="gw-team"),
        ApiKey(key=OTHER_KEY, apps=("other",)),
    )
)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@asynccontextmanager
async def running_gateway(
    settings: Settings,
    *,
    api_keys: ApiKeys | None = KEYS,
    config: HttpSettings | None = None,
    ready: bool = True,
) -> AsyncIterator[str]:
    """The gateway's base URL while it serves; `ready` waits until /readyz says so."""
    started: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    http = msgspec.structs.replace(config or HttpSettings(), port=0, api_keys=api_keys)
    serve = partial(serve_gateway, msgspec.structs.replace(settings, http=http))
    task = asyncio.ensure_future(_serve(serve, started))
    waiters: set[asyncio.Future[Any]] = {task, started}
    await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        task.result()
    url = f"http://127.0.0.1:{started.result()}"
    try:
        if ready:
            await _until_ready(url)
        yield url
    finally:
        task.cancel()
        with suppress(asyncio.CancelledError), anyio.fail_after(10):
            await task


async def _serve(serve: Any, started: asyncio.Future[int]) -> None:
    async with anyio.create_task_group() as group:
        started.set_result(await group.start(serve))


async def _until_ready(url: str) -> None:
    async with httpx.AsyncClient(base_url=url) as client:

        async def ready() -> bool:
            return (await client.get("/readyz")).status_code == 200

        await poll(ready, timeout_s=10)
