"""The calls stream refuses when full (discard-new) rather than dropping what it accepted."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from broker import (
    Broker,
    ConsumerNotFound,
    ConsumerPolicy,
    QueueFull,
    StreamLimits,
    call_subject,
    calls_source,
)
from runtime.control import NatsServer


@pytest.fixture
async def small_broker(own_nats: NatsServer) -> AsyncIterator[Broker]:
    broker = await Broker.connect(own_nats.url)
    try:
        yield broker
    finally:
        await broker.close()


async def test_full_queue_refuses_and_keeps_what_it_accepted(small_broker: Broker) -> None:
    await small_broker.ensure_calls_stream(StreamLimits(max_msgs=5))
    subject = call_subject("app", "fn")
    await small_broker.ensure_consumer(calls_source("app", "fn"), ConsumerPolicy())
    sequences = [
        await (await small_broker.submit(subject, f"id{i}", b"x")).acked() for i in range(5)
    ]
    assert sequences == [1, 2, 3, 4, 5]
    with pytest.raises(QueueFull, match="retry later"):
        await (await small_broker.submit(subject, "id5", b"x")).acked()
    waiting = await small_broker.submit(subject, "id6", b"x", expect_result=True)
    with pytest.raises(QueueFull):
        await waiting.result()
    backlog = await small_broker.backlog(calls_source("app", "fn"))
    assert backlog.num_pending == 5


async def test_same_call_id_is_stored_once(small_broker: Broker) -> None:
    await small_broker.ensure_calls_stream(StreamLimits())
    subject = call_subject("app", "fn")
    await small_broker.ensure_consumer(calls_source("app", "fn"), ConsumerPolicy())
    first = await (await small_broker.submit(subject, "same", b"x")).acked()
    second = await (await small_broker.submit(subject, "same", b"x")).acked()
    assert first == second
    assert (await small_broker.backlog(calls_source("app", "fn"))).num_pending == 1


async def test_pull_feed_batches_and_acks(small_broker: Broker) -> None:
    await small_broker.ensure_calls_stream(StreamLimits())
    subject = call_subject("app", "fn")
    await small_broker.ensure_consumer(calls_source("app", "fn"), ConsumerPolicy())
    for i in range(40):
        await small_broker.submit(subject, f"m{i}", str(i).encode())
    await small_broker.flush()
    feed = await small_broker.pull(calls_source("app", "fn"), window=64)
    received: list[bytes] = []
    while len(received) < 40:
        batch = await feed.next_batch(16, 0.05, idle_s=5)
        assert 0 < len(batch) <= 16
        for delivery in batch:
            received.append(delivery.data)
            await delivery.ack()
    assert sorted(int(r) for r in received) == list(range(40))
    assert await feed.next_batch(16, 0.0, idle_s=0.2) == []
    await feed.stop()


async def test_a_missing_consumer_is_named_with_what_to_do(small_broker: Broker) -> None:
    await small_broker.ensure_calls_stream(StreamLimits())
    source = calls_source("app", "gone")
    with pytest.raises(ConsumerNotFound, match=r"no consumer 'fn_app_gone'.*autan deploy"):
        await small_broker.backlog(source)
    with pytest.raises(ConsumerNotFound):
        await small_broker.pull(source, window=1)
    await small_broker.ensure_consumer(source, ConsumerPolicy())
    assert (await small_broker.backlog(source)).total == 0
