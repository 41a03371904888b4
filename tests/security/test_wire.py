"""Bad input on the wire never loops: what cannot be a call is dead-lettered at once, the
worker lives on, and a call no worker can settle ends in a dead letter, not in a loop."""

from __future__ import annotations

import anyio
import msgspec
import pytest

from broker import (
    CALLS_STREAM,
    CallMsg,
    ConsumerPolicy,
    Inline,
    call_subject,
    calls_source,
    encode,
    encode_value,
    new_call_id,
)
from runtime import RemoteError
from runtime.control import NatsServer, Undeliverable
from runtime.core import Settings
from runtime.ops import DeadLetters, Letter, deploy_target
from tests.apps import sample
from tests.stack import Stack, poll


async def _letter(stack: Stack, call_id: str) -> Letter:
    letters = DeadLetters(stack.session.broker)
    found: list[Letter] = []

    async def written() -> bool:
        found[:] = [
            item for item in await letters.list("tests", "echo") if item.letter.call_id == call_id
        ]
        return bool(found)

    await poll(written, timeout_s=10, every_s=0.05)
    return found[0]


async def _publish(stack: Stack, data: bytes) -> str:
    """Publish raw bytes as a call to tests.echo; the dead letter's id they would get."""
    submitted = await stack.session.broker.submit(
        call_subject("tests", "echo"), new_call_id(), data
    )
    return f"{CALLS_STREAM}-{await submitted.acked()}"


@pytest.mark.parametrize(
    "data",
    [
        b"\xff\x00 not msgpack at all",
        msgspec.msgpack.encode({"type": "call", "call_id": 5, "app": "tests"}),  # wrong types
        msgspec.msgpack.encode([1, 2, 3]),
    ],
    ids=["garbage", "wrong-types", "not-a-map"],
)
async def test_a_message_that_is_no_call_is_dead_lettered_and_the_worker_lives(
    stack: Stack, data: bytes
) -> None:
    worker = stack.workers["echo"]
    letter_id = await _publish(stack, data)
    letter = await _letter(stack, letter_id)
    assert (letter.letter.reason, letter.letter.error.type) == ("malformed", "MalformedCall")
    assert letter.letter.call == data  # kept as it came
    assert await sample.echo.remote.aio("still alive") == "still alive"
    assert stack.serving("echo")
    assert stack.workers["echo"] is worker


async def test_a_call_of_another_function_on_this_subject_is_refused(stack: Stack) -> None:
    forged = CallMsg(
        call_id=new_call_id(),
        app="tests",
        fn="boom",
        payload=Inline(encode_value((("x",), {}))),
    )
    letter_id = await _publish(stack, encode(forged))
    letter = await _letter(stack, letter_id)
    assert letter.letter.reason == "malformed"
    assert "tests.boom" in letter.letter.error.message
    assert await sample.echo.remote.aio("fine") == "fine"


async def test_every_consumer_bounds_its_deliveries(stack: Stack) -> None:
    info = await stack.session.broker.js.consumer_info(
        CALLS_STREAM, calls_source("tests", "flaky").consumer
    )
    assert info.config.max_deliver == sample.flaky.options.max_deliveries == 3 + 3 + 2


async def test_a_call_no_worker_settles_ends_as_a_dead_letter(
    own_nats: NatsServer, settings: Settings
) -> None:
    """JetStream gives up at the consumer's bound; the control plane dead-letters the call,
    answers its caller and removes it from the queue."""
    own = msgspec.structs.replace(settings, nats_url=own_nats.url)
    async with Stack.running(own, "tests.apps.sample", start_workers=False) as stack:
        broker = stack.session.broker
        source = calls_source("tests", "echo")
        await broker.ensure_consumer(source, ConsumerPolicy(ack_wait_s=30, max_deliver=2))
        async with anyio.create_task_group() as group:
            await group.start(Undeliverable(stack.session.link).serve)
            pending = await _call_in_background(group, stack)
            feed = await broker.pull(source, window=4)
            for _ in range(2):  # a worker that takes it and never settles it, twice
                [delivery] = await feed.next_batch(1, 0.0, idle_s=10)
                await delivery.nak()
            with anyio.fail_after(10), pytest.raises(RemoteError, match="Undeliverable"):
                await pending.wait()
            group.cancel_scope.cancel()
        letters = await DeadLetters(broker).list("tests", "echo")
        assert [item.letter.reason for item in letters] == ["undeliverable"]
        assert (await broker.backlog(source)).total == 0
        info = await broker.js.stream_info(CALLS_STREAM)
        assert info.state.messages == 0  # removed from the queue, not left stuck in it
        await deploy_target(stack.session.link, "tests.apps.sample")  # the bound comes back


class _Pending:
    def __init__(self) -> None:
        self.error: BaseException | None = None
        self.done = anyio.Event()

    async def wait(self) -> None:
        await self.done.wait()
        if self.error is not None:
            raise self.error


async def _call_in_background(group: anyio.abc.TaskGroup, stack: Stack) -> _Pending:
    pending = _Pending()

    async def call() -> None:
        try:
            await stack.session.call_result("tests", "echo", ("stuck",), {})
        except RemoteError as exc:
            pending.error = exc
        finally:
            pending.done.set()

    group.start_soon(call)
    return pending
