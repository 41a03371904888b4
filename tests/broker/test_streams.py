"""The calls stream refuses when full (discard-new) rather than dropping what it accepted."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import anyio
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


async def test_a_stopped_feed_leaves_no_message_to_the_ack_deadline(
    small_broker: Broker, own_nats: NatsServer
) -> None:
    """Calls published while a feed stops (its pull requests still standing at the
    server) are handed back by `stop` or never delivered to it: the next feed gets every
    one at once, none waits out the 60 s ack deadline (a redeploy's stall)."""
    await small_broker.ensure_calls_stream(StreamLimits())
    source = calls_source("app", "fn")
    await small_broker.ensure_consumer(source, ConsumerPolicy(ack_wait_s=60))
    publisher = await Broker.connect(own_nats.url)
    try:
        for round_ in range(3):
            feed = await small_broker.pull(source, window=64)
            assert await feed.next_batch(1, 0.0, idle_s=0.05) == []  # requests standing

            async def publish(round_: int = round_) -> None:
                for i in range(50):
                    await publisher.submit(call_subject("app", "fn"), f"r{round_}m{i}", b"x")
                await publisher.flush()

            publishing = asyncio.ensure_future(publish())
            await asyncio.sleep(0.002 * round_)
            for delivery in await feed.stop():
                await delivery.nak()
            await publishing
            drained = await small_broker.pull(source, window=128)
            received = 0
            with anyio.move_on_after(10):  # well within the ack deadline
                while received < 50:
                    for delivery in await drained.next_batch(64, 0.0, idle_s=0.5):
                        await delivery.ack()
                        received += 1
            await drained.stop()
            assert received == 50, f"round {round_}: {received} of 50 came back at once"
    finally:
        await publisher.close()
