"""Message triggers: every message on a subject is a call, at least once, through workers."""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import AsyncIterator

import anyio
import pytest
from nats.js import api

from broker import StreamConflict, StreamLimits
from broker.names import subject_covers, subjects_overlap
from runtime.control import LocalProvider
from runtime.control.scaler import Scaler
from runtime.core import Settings
from runtime.ops import deploy_target
from tests.stack import Stack


@pytest.fixture(scope="module")
async def trig_stack(settings: Settings) -> AsyncIterator[Stack]:
    async with Stack.running(settings, "tests.apps.triggers") as stack:
        yield stack


class Outbox:
    """The messages published on one subject, as a test sees them."""

    def __init__(self) -> None:
        self.messages: list[bytes] = []
        self.changed = anyio.Event()

    async def wait_for(self, count: int, timeout_s: float = 30) -> list[bytes]:
        with anyio.fail_after(timeout_s):
            while len(self.messages) < count:
                await self.changed.wait()
                self.changed = anyio.Event()
        return self.messages


async def _listen(stack: Stack, subject: str) -> Outbox:
    outbox = Outbox()

    async def on_message(msg: object) -> None:
        outbox.messages.append(msg.data)  # type: ignore[attr-defined]
        outbox.changed.set()

    await stack.session.broker.nc.subscribe(subject, cb=on_message)
    return outbox


@pytest.mark.parametrize(
    ("pattern", "subject", "covers", "overlap"),
    [
        ("uploads.>", "uploads.a", True, True),
        ("uploads.>", "uploads.*.png", True, True),
        ("uploads.*", "uploads.a.b", False, False),
        ("uploads.*", "uploads.>", False, True),
        ("uploads.a", "uploads.*", False, True),
        ("orders.*", "orders.>", False, True),
        (">", "anything.at.all", True, True),
        ("a.b", "a.c", False, False),
        ("a.>", "a", False, False),
    ],
)
def test_subject_algebra(pattern: str, subject: str, covers: bool, overlap: bool) -> None:
    assert subject_covers(pattern, subject) is covers
    assert subjects_overlap(pattern, subject) is overlap


async def test_a_plain_publish_becomes_a_call(trig_stack: Stack) -> None:
    outbox = await _listen(trig_stack, "uploads-seen")
    await trig_stack.session.broker.publish("uploads.images.cat", b"\x89PNG....")
    [seen] = await outbox.wait_for(1)
    result = json.loads(seen)
    assert result["subject"] == "uploads.images.cat"
    assert result["size"] == 8


async def test_functions_chain_through_subjects(trig_stack: Stack) -> None:
    outbox = await _listen(trig_stack, "chain.out")
    await trig_stack.session.broker.js.publish("chain.in", b"hello")  # a JetStream publish
    assert await outbox.wait_for(1) == [b"HELLO!"]


async def test_a_generator_on_a_trigger_emits_each_item(trig_stack: Stack) -> None:
    outbox = await _listen(trig_stack, "lines.out")
    await trig_stack.session.broker.js.publish("lines.in", b"first\nsecond\nthird")
    assert await outbox.wait_for(3) == [b"first", b"second", b"third"]


async def test_replay_runs_past_events_again(trig_stack: Stack) -> None:
    outbox = await _listen(trig_stack, "chain.out")
    for word in (b"one", b"two"):
        await trig_stack.session.broker.publish("chain.in", word)
    await outbox.wait_for(2)
    spec = await trig_stack.session.registry.get("trig", "shout", cached=False)
    await trig_stack.session.broker.replay(spec.source, since_s=60, from_seq=None)
    again = await outbox.wait_for(5)  # HELLO! from the test above, then one and two again
    assert sorted(again[2:]) == sorted([b"HELLO!", b"ONE!", b"TWO!"])


async def test_a_burst_survives_a_killed_worker(trig_stack: Stack) -> None:
    """1,000 events; one of two forked workers is killed midway; every event is handled."""
    await trig_stack.stop_worker("classify")  # from here on, forked workers serve classify
    outbox = await _listen(trig_stack, "uploads-seen")
    provider = LocalProvider(trig_stack.session.settings, stop_grace_s=10)
    async with anyio.create_task_group() as group:
        await group.start(provider.serve)
        await group.start(Scaler(trig_stack.session.broker, provider).serve)
        for index in range(1000):
            await trig_stack.session.broker.publish(f"uploads.burst.{index}", b"x" * index)
        await outbox.wait_for(300, timeout_s=60)
        victim = provider.workers("trig.classify")[0]
        assert victim.pid > 0  # forked (0: a process group)
        os.kill(victim.pid, signal.SIGKILL)
        seen = await _distinct_subjects(outbox, 1000)
        group.cancel_scope.cancel()
    assert seen == {f"uploads.burst.{index}" for index in range(1000)}


async def _distinct_subjects(outbox: Outbox, count: int) -> set[str]:
    with anyio.fail_after(60):
        while True:
            subjects = {json.loads(m)["subject"] for m in outbox.messages}
            if len(subjects) >= count:
                return subjects
            await outbox.changed.wait()
            outbox.changed = anyio.Event()


async def test_overlapping_streams_are_refused_and_covering_ones_reused(
    trig_stack: Stack,
) -> None:
    broker = trig_stack.session.broker
    await broker.js.add_stream(api.StreamConfig(name="ORDERS", subjects=["orders.*"]))
    with pytest.raises(StreamConflict, match=r"overlaps stream ORDERS \(orders\.\*\)"):
        await broker.ensure_trigger_source("trig", "x", "orders.>", StreamLimits())
    source = await broker.ensure_trigger_source("trig", "y", "orders.new", StreamLimits())
    assert source.stream == "ORDERS"
    await broker.js.add_stream(
        api.StreamConfig(name="JOBS", subjects=["jobs.>"], retention=api.RetentionPolicy.WORK_QUEUE)
    )
    with pytest.raises(StreamConflict, match="as a work queue"):
        await broker.ensure_trigger_source("trig", "z", "jobs.new", StreamLimits())


async def test_replay_from_the_command_line(trig_stack: Stack) -> None:
    url = trig_stack.session.settings.nats_url
    command = [sys.executable, "-m", "runtime.ops.cli", "--nats-url", url, "trigger", "replay"]
    done = await anyio.run_process([*command, "trig.exclaim", "--from-seq", "1"])
    assert b"will be delivered again" in done.stdout
    refused = await anyio.run_process([*command, "trig.nope", "--since", "1m"], check=False)
    assert refused.returncode == 1
    assert b"no function 'nope' in app 'trig'; deployed: classify, exclaim, shout" in (
        refused.stderr
    )


async def test_a_redeploy_after_a_replay_deploys_the_new_version(trig_stack: Stack) -> None:
    """A replayed consumer delivers from a point JetStream will not change (error 10012
    when a redeploy asked to): the redeploy keeps the point and registers the new version.
    Last in this module: `shout` changes."""
    registry, broker = trig_stack.session.registry, trig_stack.session.broker
    before = await registry.get("trig", "shout", cached=False)
    await broker.replay(before.source, since_s=60, from_seq=None)
    await deploy_target(trig_stack.session.link, "tests.apps.triggers_v2")
    after = await registry.get("trig", "shout", cached=False)
    assert after.version != before.version
    assert after.sequence == before.sequence + 1
    assert after.options.timeout_s == 20
    info = await broker.js.consumer_info(before.source.stream, before.source.consumer)
    assert info.config.deliver_policy == api.DeliverPolicy.BY_START_TIME
    assert info.config.ack_wait == trig_stack.session.settings.ack_wait_s
