"""Stored payloads: private to the stack's user, and deleted once nothing can need them
(a result after its retention, an argument once no call can wait on it, unless a dead
letter holds it; a dead letter's argument when the letter is purged)."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from broker import CallMsg, DeadLetter, ErrorInfo, StoredRef, dlq_subject, encode, new_call_id
from runtime.control import NatsServer, PayloadSweeper, free_port
from runtime.core import Link, Settings
from runtime.ops import DeadLetters, make_buckets
from tests.keys import DEPLOY_KEY, TRUSTED_KEYS

ROOT = Path(__file__).resolve().parents[2]
DAY_S = 24 * 3600.0


@pytest.fixture
async def link(own_nats: NatsServer, tmp_path: Path) -> AsyncIterator[Link]:
    """A stack of this test's own: the sweeper deletes by age, whatever wrote it."""
    settings = Settings(
        nats_url=own_nats.url,
        data_dir=tmp_path,
        storage_url=f"file://{tmp_path / 'objects'}",
        deploy_key=DEPLOY_KEY,
        trusted_keys=TRUSTED_KEYS,
        connect_timeout_s=2.0,
    )
    async with await Link.open(settings) as opened:
        await make_buckets(opened)
        await opened.broker.dead_letters.ensure()
        yield opened


async def _dead_letter_holding(link: Link, key: str) -> None:
    call = CallMsg(call_id=new_call_id(), app="tests", fn="gone", payload=StoredRef(key=key,
                   size_bytes=1), created_unix_s=time.time())  # fmt: skip
    letter = DeadLetter(call_id=call.call_id, app="tests", fn="gone", reason="failed",
                        error=ErrorInfo(type="E", message="m"), attempts=1,
                        call=encode(call))  # fmt: skip
    submitted = await link.broker.submit(
        dlq_subject("tests", "gone"), f"dlq-{call.call_id}", encode(letter)
    )
    await submitted.acked()


async def test_the_sweeper_deletes_what_nothing_needs_and_keeps_the_rest(link: Link) -> None:
    store = await link.store()
    for key in ("results/old", "results/young", "payloads/old", "payloads/held", "payloads/young"):
        await store.put(key, b"x")
    await _dead_letter_holding(link, "payloads/held")
    sweeper = PayloadSweeper(link)
    later = time.time() + DAY_S  # a day on: past the results' retention and every max_age
    for key in ("results/young", "payloads/young"):
        os.utime(Path(store.url.removeprefix("file://")) / key, (later, later))
    assert await sweeper.sweep(now_unix_s=later + 60) == 2
    left = sorted(info.key for info in await store.list())
    assert left == ["payloads/held", "payloads/young", "results/young"]
    assert await sweeper.sweep(now_unix_s=later + 60) == 0


async def test_arguments_live_as_long_as_the_longest_call_can_wait(link: Link) -> None:
    from runtime.core import FunctionOptions, FunctionSpec

    def spec(max_age_s: float) -> FunctionSpec:
        options = FunctionOptions(max_age_s=max_age_s, timeout_s=60)
        return FunctionSpec(app="a", name="f", version="v", python="3.11", artifact="0" * 64,
                            artifact_bytes=1, options=options)  # fmt: skip

    assert PayloadSweeper.argument_age_s([]) == 3600.0
    assert PayloadSweeper.argument_age_s([spec(600), spec(2 * DAY_S)]) == 2 * DAY_S + 120


async def test_purging_a_dead_letter_deletes_the_argument_it_held(link: Link) -> None:
    store = await link.store()
    await store.put("payloads/of-a-letter", b"x")
    await _dead_letter_holding(link, "payloads/of-a-letter")
    assert await DeadLetters(link.broker, store).purge("tests", "gone") == 1
    assert await store.stat("payloads/of-a-letter") is None


@pytest.mark.timeout(120)
def test_the_data_dir_is_private_to_the_stacks_user(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTAN_")}
    command = [sys.executable, "-m", "runtime.ops.cli", "--data-dir", str(data_dir), "up",
               "--nats-port", str(free_port()), "--functions", "tests.apps.snoop",
               "--http-port", "0", "--metrics-port", "0"]  # fmt: skip
    up = subprocess.Popen(command, env={**env, "PYTHONPATH": str(ROOT)},
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                          start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not (data_dir / "deploy.key").exists():
            assert up.poll() is None
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    finally:
        os.killpg(up.pid, signal.SIGINT)
        up.wait(60)
