"""Dead letters: a call that fails for good is kept with its error, and can run again."""

from __future__ import annotations

import sys

import anyio
import pytest

from runtime import Call, RemoteError
from runtime.ops import DeadLetters
from tests.apps import sample
from tests.stack import Stack


async def _autan(stack: Stack, *args: str) -> str:
    url = stack.session.settings.nats_url
    done = await anyio.run_process(
        [sys.executable, "-m", "runtime.ops.cli", "--nats-url", url, "dlq", *args]
    )
    return done.stdout.decode()


async def test_a_failed_call_is_dead_lettered_with_its_error(stack: Stack) -> None:
    call = await sample.boom.spawn.aio("poison")
    with pytest.raises(RemoteError, match="poison"):
        await call.get_aio(timeout_s=10)
    letter = await DeadLetters(stack.session.broker).find(call.id)
    assert letter.letter.reason == "failed"
    assert letter.letter.error.type == "ValueError"
    assert letter.letter.attempts == 1
    shown = await _autan(stack, "show", call.id)
    assert '"reason": "failed"' in shown
    assert "raise ValueError" in shown or ", in boom" in shown
    assert call.id in await _autan(stack, "ls", "tests.boom")


async def test_exhausted_retries_are_dead_lettered_after_the_last_attempt(stack: Stack) -> None:
    with pytest.raises(RemoteError, match="attempt 3 fails"):
        await sample.flaky.remote.aio(99)
    letters = await DeadLetters(stack.session.broker).list("tests", "flaky")
    assert letters[-1].letter.attempts == 3


async def test_redrive_runs_the_call_again_under_a_new_id(stack: Stack) -> None:
    failed = await sample.boom.spawn.aio("again")
    with pytest.raises(RemoteError):
        await failed.get_aio(timeout_s=10)
    output = await _autan(stack, "redrive", failed.id)
    new_id = output.split(" -> ")[1].split()[0]
    with pytest.raises(RemoteError, match="again"):  # it runs, and fails again
        await Call.from_id(new_id, sample.app).get_aio(timeout_s=10)
    letters = DeadLetters(stack.session.broker)
    redriven = await letters.find(new_id)
    assert redriven.letter.error.message == "again"
    with pytest.raises(LookupError, match="autan dlq ls"):
        await letters.find(failed.id)


async def test_a_redriven_call_is_known_before_it_runs(stack: Stack) -> None:
    # `autan dlq redrive` prints the new id; waiting on it at once must wait for its
    # result, not answer "no spawned call" because no worker has recorded one yet.
    failed = await sample.boom.spawn.aio("known at once")
    with pytest.raises(RemoteError):
        await failed.get_aio(timeout_s=10)
    link = stack.session.link
    letters = DeadLetters(stack.session.broker, remember=link.remember_spawned_as)
    new_id = await letters.redrive(await letters.find(failed.id))
    assert await link.spawned_function(new_id) == "tests.boom"
    with pytest.raises(RemoteError, match="known at once"):
        await Call.from_id(new_id, sample.app).get_aio(timeout_s=10)


async def test_purge_empties_a_function_s_letters(stack: Stack) -> None:
    call = await sample.boom.spawn.aio("to purge")
    with pytest.raises(RemoteError):
        await call.get_aio(timeout_s=10)
    assert "purged" in await _autan(stack, "purge", "tests.boom")
    assert await DeadLetters(stack.session.broker).list("tests", "boom") == []
