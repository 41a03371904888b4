"""Generator functions stream their items to the caller: in order, held back by a slow
reader, stopped by one that leaves, an error at its place."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import anyio.to_thread
import pytest

from broker import STREAM_WINDOW
from runtime import App, Batching, CallNotFound, Context, InvalidOption, RemoteError
from runtime.core import Settings
from tests.apps import streaming as fx
from tests.stack import Stack, poll

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
async def streams(settings: Settings) -> AsyncIterator[Stack]:
    async with Stack.running(settings, "tests.apps.streaming") as stack:
        fx.app.sessions.configure(settings)
        yield stack
        await fx.app.sessions.aclose()


def _lines(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


@pytest.mark.parametrize("fn", [fx.count, fx.count_async], ids=["sync", "async"])
async def test_items_come_in_order(streams: Stack, fn: object) -> None:
    handle = fx.count if fn is fx.count else fx.count_async
    assert [item async for item in handle.remote_gen.aio(500)] == list(range(500))


async def test_a_sync_caller_iterates(streams: Stack) -> None:
    def iterate() -> list[dict[str, object]]:
        try:
            return list(fx.words.remote_gen("to be or not"))
        finally:
            fx.app.sessions.close()  # this thread's session, with its loop

    words = await anyio.to_thread.run_sync(iterate)
    assert [w["word"] for w in words] == ["to", "be", "or", "not"]


async def test_a_slow_reader_holds_the_worker_back(streams: Stack, tmp_path: Path) -> None:
    log = tmp_path / "log"
    items = fx.count.remote_gen.aio(1000, str(log))
    assert await anext(items) == 0
    await anyio.sleep(1.0)  # the worker runs a window ahead, no further
    yielded = sum(line.startswith("yield") for line in _lines(log))
    assert STREAM_WINDOW <= yielded <= STREAM_WINDOW + 2, yielded
    rest = [item async for item in items]
    assert rest == list(range(1, 1000))


@pytest.mark.parametrize("fn", ["sync", "async"])
async def test_a_reader_that_leaves_stops_the_generator(
    streams: Stack, tmp_path: Path, fn: str
) -> None:
    log = tmp_path / "log"
    handle = fx.count if fn == "sync" else fx.count_async
    items = handle.remote_gen.aio(100_000, str(log))
    assert [await anext(items) for _ in range(3)] == [0, 1, 2]
    await items.aclose()

    async def closed() -> bool:
        return "closed" in _lines(log)

    await poll(closed, timeout_s=10)
    assert sum(line.startswith("yield") for line in _lines(log)) < 200
    assert [item async for item in handle.remote_gen.aio(3)] == [0, 1, 2]  # serves on


@pytest.mark.parametrize("fn", ["sync", "async"])
async def test_an_error_mid_stream_comes_at_its_place(
    streams: Stack, tmp_path: Path, fn: str
) -> None:
    """Items 0-4, then the error; not run again though retries are allowed (the items it
    gave are out)."""
    log = tmp_path / "log"
    handle = fx.count if fn == "sync" else fx.count_async
    got: list[int] = []

    async def read() -> None:
        async for item in handle.remote_gen.aio(10, str(log), 5):
            got.append(item)

    with pytest.raises(RemoteError, match="item 5 is bad") as raised:
        await read()
    assert got == [0, 1, 2, 3, 4]
    assert raised.value.type == "ValueError"
    assert sum(line.startswith("start") for line in _lines(log)) == 1


async def test_an_error_before_any_item_is_retried(streams: Stack, tmp_path: Path) -> None:
    log = tmp_path / "log"
    with pytest.raises(RemoteError, match="item 0 is bad"):
        async for _ in fx.count.remote_gen.aio(10, str(log), 0):
            pass
    assert sum(line.startswith("start") for line in _lines(log)) == 3  # max_attempts


async def test_each_way_of_calling_says_which_to_use(streams: Stack) -> None:
    with pytest.raises(InvalidOption, match=r"is a generator: iterate fn.remote_gen"):
        await fx.count.remote.aio(3)
    with pytest.raises(InvalidOption, match=r"rather than .map\(\)"):
        async for _ in fx.count.map.aio([3]):
            pass
    with pytest.raises(InvalidOption, match=r"returns one result: call it with .remote\(\)"):
        async for _ in fx.plain.remote_gen.aio(3):
            pass


def test_a_batched_generator_is_refused_when_declared() -> None:
    app = App("refused")
    with pytest.raises(InvalidOption, match="a generator function cannot be batched"):

        @app.function(batching=Batching(max_size=4))  # type: ignore[arg-type]
        def gen(ctx: Context, items: list[int]) -> Iterator[int]:
            yield from items


async def test_a_spawned_stream_is_kept_and_read_from_another_process(
    streams: Stack, settings: Settings
) -> None:
    """Its items are kept: another process reads them, from item 2."""
    call = await fx.words.spawn.aio("one two three four")
    count: object = await call.get_aio(timeout_s=30)
    assert count == 4  # a generator's result: its item count
    script = (
        "import json; from runtime import Call; "
        f"print(json.dumps([w['word'] for w in Call.from_id({call.id!r}).items(start=2)]))"
    )
    env = {**os.environ, "AUTAN_NATS_URL": settings.nats_url, "ORT_DISABLE_TELEMETRY": "1"}
    done = await anyio.run_process([sys.executable, "-c", script], env=env, check=False)
    assert done.returncode == 0, done.stderr.decode()
    assert json.loads(done.stdout) == ["three", "four"]


async def test_a_spawned_stream_is_read_while_it_runs_with_its_error_at_its_place(
    streams: Stack, tmp_path: Path
) -> None:
    call = await fx.count.spawn.aio(10, str(tmp_path / "log"), 5)
    got: list[int] = []

    async def read() -> None:
        async for item in call.items_aio():
            got.append(item)

    with pytest.raises(RemoteError, match="item 5 is bad"):
        await read()
    assert got == [0, 1, 2, 3, 4]


async def test_items_of_an_unknown_call_say_so(streams: Stack) -> None:
    from runtime.client import Call

    with pytest.raises(CallNotFound, match="no spawned call nope"):
        async for _ in Call.from_id("nope", fx.app).items_aio():
            pass
