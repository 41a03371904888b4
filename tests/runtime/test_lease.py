"""The control plane's lease, against a real nats-server: one holds it, the others wait."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import anyio
import pytest

from broker import LEASES_BUCKET, Broker
from runtime.control import LEASE_S, Lease, LeaseHolder, NatsServer

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
async def broker(own_nats: NatsServer) -> AsyncIterator[Broker]:
    connected = await Broker.connect(own_nats.url)
    yield connected
    await connected.close()


def _lease(broker: Broker, stack: str, pid: int = 1) -> Lease:
    return Lease(broker, LeaseHolder(stack=stack, pid=pid))


async def _seconds_to_acquire(lease: Lease, timeout_s: float = 15) -> float:
    started = time.monotonic()
    with anyio.fail_after(timeout_s):
        await lease.acquire()
    return time.monotonic() - started


async def test_the_next_leads_once_the_holder_stops_renewing(broker: Broker) -> None:
    first, second = _lease(broker, "a"), _lease(broker, "b")
    assert await _seconds_to_acquire(first) < 1
    assert first.held
    with anyio.move_on_after(1.5):  # while the first renews, the second waits
        async with anyio.create_task_group() as group:
            group.start_soon(first.keep)
            await second.acquire()
            pytest.fail("two held the lease at once")
    assert await _seconds_to_acquire(second) < LEASE_S + 1.5  # the first went silent


async def test_a_release_lets_the_next_lead_at_once(broker: Broker) -> None:
    first, second = _lease(broker, "a"), _lease(broker, "b")
    await first.acquire()
    await first.release()
    assert await _seconds_to_acquire(second) < 1


async def test_a_release_after_a_renewal_cut_short_lets_the_next_lead_at_once(
    broker: Broker,
) -> None:
    first, second = _lease(broker, "a"), _lease(broker, "b")
    await first.acquire()
    # What a renewal cancelled by Ctrl-C can leave: its write took at the server, and the
    # new revision never reached the holder.
    bucket = await broker.bucket(LEASES_BUCKET, ttl_s=LEASE_S)
    value, revision = await bucket.revision("control")
    await bucket.update("control", value, revision)
    await first.release()  # no error escapes the stop
    assert not first.held
    assert await _seconds_to_acquire(second) < 1


async def test_a_restart_of_the_same_stack_takes_over_at_once(broker: Broker) -> None:
    await _lease(broker, "host:/data", pid=1).acquire()
    assert await _seconds_to_acquire(_lease(broker, "host:/data", pid=2)) < 0.5


async def test_a_holder_whose_entry_moved_stops(broker: Broker) -> None:
    first = _lease(broker, "a")
    await first.acquire()
    bucket = await broker.bucket(LEASES_BUCKET, ttl_s=LEASE_S)
    await bucket.put("control", b'{"stack": "intruder", "pid": 9}')
    with anyio.fail_after(5):
        why = await first.keep()
    assert why == "another control plane took the lease"
    assert not first.held


async def test_an_entry_that_is_no_holder_expires_and_is_taken(broker: Broker) -> None:
    bucket = await broker.bucket(LEASES_BUCKET, ttl_s=LEASE_S)
    await bucket.put("control", b"edited by hand")
    assert await _seconds_to_acquire(_lease(broker, "b")) < LEASE_S + 1.5
