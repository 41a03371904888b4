"""Coalesced runs: one open or read per key, shared by the calls that come meanwhile."""

from __future__ import annotations

import asyncio

import pytest

from broker import Broker
from runtime.control import NatsServer
from runtime.core import Coalesced, DeployKey, FunctionOptions, FunctionSpec, Registry
from tests.keys import DEPLOY_KEY


async def test_calls_made_while_a_run_is_under_way_share_it() -> None:
    runs = 0

    async def fetch() -> int:
        nonlocal runs
        runs += 1
        await asyncio.sleep(0.01)
        return runs

    coalesced: Coalesced[str, int] = Coalesced()
    assert await asyncio.gather(*(coalesced.run("k", fetch) for _ in range(20))) == [1] * 20
    assert await coalesced.run("k", fetch) == 2  # once done, the next call runs again
    assert await coalesced.run("other", fetch) == 3


async def test_a_failed_run_fails_its_waiters_and_the_next_call_runs_again() -> None:
    runs = 0

    async def fetch() -> str:
        nonlocal runs
        runs += 1
        await asyncio.sleep(0.01)
        if runs == 1:
            raise ValueError("first")
        return "second"

    coalesced: Coalesced[str, str] = Coalesced()
    results = await asyncio.gather(
        *(coalesced.run("k", fetch) for _ in range(3)), return_exceptions=True
    )
    assert [str(r) for r in results] == ["first"] * 3
    assert await coalesced.run("k", fetch) == "second"


async def test_a_caller_that_stops_waiting_does_not_stop_the_run() -> None:
    async def fetch() -> str:
        await asyncio.sleep(0.05)
        return "done"

    coalesced: Coalesced[str, str] = Coalesced()
    first = asyncio.ensure_future(coalesced.run("k", fetch))
    second = asyncio.ensure_future(coalesced.run("k", fetch))
    await asyncio.sleep(0)
    first.cancel()
    assert await second == "done"
    with pytest.raises(asyncio.CancelledError):
        await first


async def test_a_burst_of_first_calls_reads_a_spec_once(own_nats: NatsServer) -> None:
    # A server of its own: the spec written here is no function the other tests' scalers
    # should see.
    broker = await Broker.connect(own_nats.url)
    try:
        registry = await Registry.open(broker)
        spec = FunctionSpec(app="coalesce", name="fn", version="v1", python="3.11",
                            artifact="0" * 64, artifact_bytes=1,
                            options=FunctionOptions())  # fmt: skip
        await registry.put(DeployKey.parse(DEPLOY_KEY).sign(spec))
        fresh = await Registry.open(broker)  # nothing cached
        bucket = await fresh._bucket()
        reads = 0
        read = bucket.get

        async def counting_get(key: str) -> bytes:
            nonlocal reads
            reads += 1
            return await read(key)

        bucket.get = counting_get  # type: ignore[method-assign]
        specs = await asyncio.gather(*(fresh.get("coalesce", "fn") for _ in range(50)))
        assert {spec.version for spec in specs} == {"v1"}
        assert reads == 1
    finally:
        await broker.close()
