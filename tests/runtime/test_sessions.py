"""Sessions: one per event loop, however many calls ask for it at once."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from pathlib import Path

import anyio
import msgspec
import pytest

from broker import BrokerUnavailable
from runtime.client import SessionProvider
from runtime.core import Settings


def _connections_to(url: str) -> int:
    """This process's established TCP connections to the server at `url` (Linux /proc)."""
    port = int(url.rsplit(":", 1)[1])
    fds = Path("/proc/self/fd")
    sockets = set()
    for fd in fds.iterdir():
        with contextlib.suppress(OSError):  # an fd closed meanwhile
            target = os.readlink(fd)
            if target.startswith("socket:["):
                sockets.add(target[len("socket:[") : -1])
    count = 0
    for line in Path("/proc/self/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        established = fields[3] == "01"
        if established and int(fields[2].split(":")[1], 16) == port and fields[9] in sockets:
            count += 1
    return count


async def test_concurrent_first_calls_share_one_connection(settings: Settings) -> None:
    before = _connections_to(settings.nats_url)
    provider = SessionProvider(settings)
    try:
        sessions = await asyncio.gather(*(provider.current() for _ in range(50)))
        assert len({id(session) for session in sessions}) == 1
        assert _connections_to(settings.nats_url) - before == 1
    finally:
        await provider.aclose()
    assert _connections_to(settings.nats_url) == before


async def test_each_loop_has_its_own_session_and_a_closed_one_is_not_handed_out(
    settings: Settings,
) -> None:
    provider = SessionProvider(settings)
    here = await provider.current()

    def elsewhere() -> tuple[object, object, object]:
        async def twice() -> tuple[object, object]:
            first = await provider.current()
            second = await provider.current()
            await provider.aclose()
            return first, second

        first, second = asyncio.run(twice())  # kept alive here: no address is reused
        return first, second, asyncio.run(_current_and_close(provider))

    try:
        first, second, later = await asyncio.to_thread(elsewhere)
        assert first is second  # one loop, one session
        assert first is not here  # another loop, another session
        assert later is not first  # a new loop gets a new session
        assert await provider.current() is here  # this loop's, after the others came
        await provider.aclose()
        assert await provider.current() is not here  # closed: opened afresh
    finally:
        await provider.aclose()


async def _current_and_close(provider: SessionProvider) -> object:
    session = await provider.current()
    await provider.aclose()
    return session


async def test_a_failed_open_is_retried_by_the_next_call(settings: Settings) -> None:
    unreachable = msgspec.structs.replace(settings, nats_url="nats://127.0.0.1:1")
    provider = SessionProvider(unreachable)
    with pytest.raises(BrokerUnavailable, match=r"127\.0\.0\.1:1"):
        await asyncio.gather(*(provider.current() for _ in range(3)))
    provider.configure(settings)
    try:
        assert await provider.current() is await provider.current()
    finally:
        await provider.aclose()


async def test_a_cancelled_first_caller_does_not_cancel_the_open_for_the_others(
    settings: Settings,
) -> None:
    provider = SessionProvider(settings)
    first = asyncio.ensure_future(provider.current())
    second = asyncio.ensure_future(provider.current())
    await asyncio.sleep(0)
    first.cancel()
    try:
        session = await second
        assert await provider.current() is session
    finally:
        await provider.aclose()


async def test_concurrent_first_uses_of_storage_share_one_store(settings: Settings) -> None:
    # No storage URL set: the session looks up the one the stack recorded, and waits for it.
    provider = SessionProvider(msgspec.structs.replace(settings, storage_url=""))
    try:
        session = await provider.current()
        stores = await asyncio.gather(*(session.link.store() for _ in range(20)))
        assert len({id(store) for store in stores}) == 1
    finally:
        await provider.aclose()


ROOT = Path(__file__).resolve().parents[2]
_SCRIPT = """
import asyncio, sys
from runtime import Settings
from tests.apps.sample import app, echo
app.sessions.configure(Settings(nats_url=sys.argv[1]))
print(echo.remote("sync"))
print(list(echo.map(["a", "b"])))
print(asyncio.run(echo.remote.aio("async")))
"""


@pytest.mark.usefixtures("stack")
async def test_a_script_that_calls_remote_ends_clean(settings: Settings) -> None:
    """No `app.sessions.close()`: the script still ends silent, its connections closed.
    (Awaited: the stack's workers run on this test's event loop.)"""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with anyio.fail_after(60):
        done = await anyio.run_process(
            [sys.executable, "-c", _SCRIPT, settings.nats_url], env=env, check=False
        )
    stdout, stderr = done.stdout.decode(), done.stderr.decode()
    assert done.returncode == 0, stderr
    assert stdout.split("\n") == ["sync", "['a', 'b']", "async", ""]
    assert stderr == ""
