"""Two `autan serve --fleet` and two `autan agent` processes on a three-node NATS cluster:
one control plane decides for the whole fleet; kill -9 of it, and the standby adopts the
agents' workers and decides within seconds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from runtime.client import Session
from runtime.core import ADMIN, Settings, WorkerDirectory
from tests.faults.conftest import record
from tests.faults.ledger import Ledger
from tests.faults.test_control_planes import ROOT, serving_process, until_said
from tests.fleet import app as fl
from tests.fleet.fleet import AgentProcess
from tests.keys import TRUSTED_KEYS
from tests.natscluster import nats_cluster

pytestmark = pytest.mark.timeout(240)


async def test_two_fleet_control_planes_decide_once_and_the_standby_adopts(
    tmp_path: Path, ledger: Ledger
) -> None:
    with nats_cluster(tmp_path) as nats:
        await nats.wait_ready()
        settings = Settings(
            nats_url=nats.url, storage_url=f"file://{tmp_path / 'objects'}",
            trusted_keys=TRUSTED_KEYS, connect_timeout_s=2.0, ack_wait_s=3.0,
        )  # fmt: skip
        agents = [AgentProcess(tmp_path, name, settings, "24") for name in ("a1", "a2")]
        try:
            with serving_process(tmp_path, "first", nats.url, "--fleet",
                                 functions="tests.fleet.app") as first:  # fmt: skip
                await until_said(first, "this control plane leads")
                with serving_process(tmp_path, "second", nats.url, "--fleet",
                                     functions="tests.fleet.app") as second:  # fmt: skip
                    await until_said(second, "standing by")
                    async with await Session.open(settings, role=ADMIN) as session:
                        fl.app.sessions.configure(settings)
                        directory = await WorkerDirectory.open(session.broker)

                        async def spread_workers() -> set[str]:
                            alive = await directory.alive()
                            return {w.worker_id for w in alive if w.function == "fleet.spread"}

                        for _ in range(120):
                            await ledger.spawn(fl.spread, 0.5)
                        most: set[str] = set()
                        with anyio.move_on_after(6):
                            while len(most) < 6 or len(await spread_workers()) < 6:
                                most = max(most, await spread_workers(), key=len)
                                await anyio.sleep(0.1)
                        before = await spread_workers()
                        nodes = _cli(tmp_path, settings, "nodes", "--json")
                        first.process.kill()
                        killed = time.monotonic()
                        share = await fl.share.spawn.aio(0.1)  # a function at zero
                        await until_said(second, "this control plane leads", timeout_s=30)
                        led_s = time.monotonic() - killed
                        await until_said(second, "function=fleet.share", timeout_s=30)
                        decided_s = time.monotonic() - killed
                        assert await share.get_aio(timeout_s=30) in {"a1", "a2"}
                        adopted = await spread_workers()
                        report = await ledger.settle(session)
                        await fl.app.sessions.aclose()
        finally:
            for agent in agents:
                agent.stop()
    record("fleet: leader kill -9", report)
    print(f"standby led {led_s:.2f} s and placed a worker {decided_s:.2f} s after kill -9")
    assert len(most) <= 6, f"{len(most)} workers of a function with max_workers=6"
    assert adopted <= before  # the standby started no second set
    assert decided_s < 5
    assert (report.accepted, report.completed, report.lost) == (120, 120, 0)
    assert report.duplicate_results == 0
    listed = {node["node"]: node for node in nodes["nodes"]}
    assert set(listed) == {"a1", "a2"}
    assert all(node["state"] == "up" and node["gpus"][0]["memory_mb"] == 24 * 1024
               for node in listed.values())  # fmt: skip
    assert sum(len(node["workers"]) for node in listed.values()) >= 6


def _cli(root: Path, settings: Settings, *args: str) -> dict[str, list[dict[str, Any]]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTAN_")}
    env.update(settings.to_env(), PYTHONPATH=str(ROOT), AUTAN_DATA_DIR=str(root / "cli"))
    done = subprocess.run([sys.executable, "-m", "runtime.ops.cli", *args], env=env,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    parsed: dict[str, list[dict[str, Any]]] = json.loads(done.stdout)
    return parsed
