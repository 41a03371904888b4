"""Two control planes against one NATS: one leads, the other stands by and takes over.

Each is an `autan serve` process of its own (unisolated: the functions write the ledger,
a file of this host's), with its own data dir, sharing the NATS server, the deploy key
and the object store, as two hosts of a fleet would.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio
import pytest

from runtime.client import Session
from runtime.control import NatsServer, free_port
from runtime.core import ADMIN, Settings, WorkerDirectory
from tests.faults import app as fx
from tests.faults.conftest import record
from tests.faults.ledger import Ledger, Report
from tests.keys import DEPLOY_KEY, TRUSTED_KEYS
from tests.stack import poll

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.timeout(240)


class Serve:
    """One `autan serve` process, in a process group of its own."""

    def __init__(
        self, root: Path, name: str, nats_url: str, *extra: str, functions: str = "tests.faults.app"
    ) -> None:
        self.log = root / f"{name}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("AUTAN_")}
        env.update(
            PYTHONPATH=str(ROOT),
            AUTAN_FAULTS_LOG=os.environ["AUTAN_FAULTS_LOG"],
            AUTAN_DEPLOY_KEY=DEPLOY_KEY,
            AUTAN_TRUSTED_KEYS=TRUSTED_KEYS,
            AUTAN_ACK_WAIT_S="3",
        )
        command = [sys.executable, "-m", "runtime.ops.cli", "serve", "--unisolated", *extra,
                   "--functions", functions, "--nats-url", nats_url,
                   "--storage-url", f"file://{root / 'objects'}",
                   "--data-dir", str(root / name), "--http-port", "0",
                   "--metrics-port", "0"]  # fmt: skip
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                command, env=env, stdout=out, stderr=out, start_new_session=True
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def says(self, text: str) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"autan serve exited: {self.output()[-3000:]}")
        return text in self.output()


@contextmanager
def serving_process(
    root: Path, name: str, nats_url: str, *extra: str, functions: str = "tests.faults.app"
) -> Iterator[Serve]:
    serve = Serve(root, name, nats_url, *extra, functions=functions)
    try:
        yield serve
    finally:
        if serve.process.poll() is None:
            os.killpg(serve.process.pid, signal.SIGKILL)
        serve.process.wait(timeout=30)


async def until_said(check: Serve, text: str, timeout_s: float = 60) -> float:
    """Seconds until `check`'s log says `text`."""
    started = time.monotonic()

    async def said() -> bool:
        return check.says(text)

    await poll(said, timeout_s=timeout_s, every_s=0.05)
    return time.monotonic() - started


async def test_one_leads_the_fleet_holds_max_workers_and_the_standby_takes_over(
    tmp_path: Path, ledger: Ledger
) -> None:
    """48 waiting calls of a function with max_workers=2: two control planes start two
    workers in all, not four. kill -9 of the leader: the standby leads within a few
    seconds, and every accepted call completes."""
    nats = NatsServer(tmp_path / "nats", port=free_port())
    nats.start()
    try:
        with serving_process(tmp_path, "first", nats.url) as first:
            await until_said(first, "this control plane leads")
            with serving_process(tmp_path, "second", nats.url) as second:
                await until_said(second, "standing by")
                report, most, took_s = await _burst_then_kill(first, second, nats, ledger)
    finally:
        nats.stop()
    record("two control planes, leader kill -9", report)
    print(f"standby took over {took_s:.1f} s after the leader's kill -9; most workers {most}")
    assert most == 2, f"{most} workers of a function with max_workers=2"
    assert took_s < 5
    assert (report.accepted, report.completed, report.lost) == (68, 68, 0)
    assert report.duplicate_results == 0


async def _burst_then_kill(
    first: Serve, second: Serve, nats: NatsServer, ledger: Ledger
) -> tuple[Report, int, float]:
    """48 calls with the first leading (the most workers seen at once), then kill -9 of it,
    then 20 more: the report, that most, and how long the second took to lead."""
    settings = Settings(nats_url=nats.url, connect_timeout_s=2.0)
    async with await Session.open(settings, role=ADMIN) as session:
        fx.app.sessions.configure(settings)
        directory = await WorkerDirectory.open(session.broker)
        most = 0

        async def workers() -> int:
            alive = await directory.alive()
            return sum(w.function == "faults.work" for w in alive)

        for _ in range(48):
            await ledger.spawn(fx.work, 0.5)
        with anyio.move_on_after(8):
            while True:
                most = max(most, await workers())
                await anyio.sleep(0.1)
        first.process.kill()  # the leader, alone: its workers end with it
        took_s = await until_said(second, "this control plane leads", timeout_s=30)
        for _ in range(20):
            await ledger.spawn(fx.work, 0.1)
        report = await ledger.settle(session)
        await fx.app.sessions.aclose()
    return report, most, took_s
