"""KV buckets: listing every live key with its value, from the server's subject list."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from broker import Broker, KeyExists, KeyNotFound
from runtime.control import NatsServer


@pytest.fixture
async def broker(nats_server: NatsServer) -> AsyncIterator[Broker]:
    broker = await Broker.connect(nats_server.url)
    try:
        yield broker
    finally:
        await broker.close()


def _name() -> str:
    return f"test_{uuid.uuid4().hex[:12]}"


async def test_values_lists_every_live_key_and_leaves_out_deleted_ones(broker: Broker) -> None:
    bucket = await broker.bucket(_name())
    for key in ("b.two", "a.one", "c.three"):
        await bucket.put(key, key.encode())
    await bucket.put("a.one", b"updated")
    await bucket.delete("c.three")
    assert await bucket.values() == {"a.one": b"updated", "b.two": b"b.two"}
    with pytest.raises(KeyNotFound):
        await bucket.get("c.three")


async def test_values_of_an_empty_bucket_is_empty(broker: Broker) -> None:
    bucket = await broker.bucket(_name())
    assert await bucket.values() == {}
    await bucket.put("only", b"x")
    await bucket.delete("only")
    assert await bucket.values() == {}


async def test_a_fresh_connection_lists_keys_written_just_before(broker: Broker) -> None:
    """What `autan ls` does: a new client lists right after workers announce themselves."""
    name = _name()
    writer = await broker.bucket(name, ttl_s=15)
    for round_ in range(20):
        keys = {f"demo.fn{i}.w{round_}" for i in range(3)}
        for key in keys:
            await writer.put(key, b"beat")
        reader = await Broker.connect(broker.url)
        try:
            listed = await (await reader.bucket(name, ttl_s=15)).values()
        finally:
            await reader.close()
        assert keys <= listed.keys()


async def test_a_delete_at_a_stale_revision_is_refused_as_key_exists(broker: Broker) -> None:
    bucket = await broker.bucket(_name())
    first = await bucket.create("key", b"1")
    second = await bucket.update("key", b"2", first)
    with pytest.raises(KeyExists, match="moved past"):
        await bucket.delete("key", first)
    await bucket.delete("key", second)
    with pytest.raises(KeyNotFound):
        await bucket.get("key")
