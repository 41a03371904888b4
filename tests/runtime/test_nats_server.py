"""The embedded nats-server's supervision: started again when it dies, and kept running."""

from __future__ import annotations

import time
from pathlib import Path

import anyio
import anyio.to_thread
import pytest
from anyio._backends._asyncio import WorkerThread

from runtime.control import NatsServer, free_port
from tests.stack import poll


async def test_a_restarted_nats_server_outlives_the_thread_pools_idle_threads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Started again after kill -9, it keeps running while worker threads come and go
    (a child's death signal follows the thread that made it: not a pool thread's)."""
    monkeypatch.setattr(WorkerThread, "MAX_IDLE_TIME", 0.2)  # idle threads end sooner
    server = NatsServer(tmp_path / "nats", port=free_port())
    server.start()
    try:
        async with anyio.create_task_group() as group:
            group.start_soon(server.supervise)
            for round_ in range(1, 4):
                await _kill_and_churn(server, round_)
                assert server.process is not None
                restarted = server.process.pid
                for _ in range(3):  # the pool lets its idle threads go
                    await anyio.sleep(0.4)
                    await anyio.to_thread.run_sync(time.sleep, 0)
                await anyio.sleep(0.5)
                assert server.process.pid == restarted, f"round {round_}: stopped again"
                assert server.process.poll() is None, f"round {round_}: stopped"
                assert server.restarts == round_
            server.stop()
            group.cancel_scope.cancel()
    finally:
        server.stop()


async def _kill_and_churn(server: NatsServer, restarts: int) -> None:
    """kill -9, while other work runs in threads (as in a stack), until it is back."""
    churning = anyio.Event()

    async def churn() -> None:
        while not churning.is_set():
            await anyio.to_thread.run_sync(time.sleep, 0.002)

    async def back() -> bool:
        return server.restarts == restarts

    async with anyio.create_task_group() as others:
        for _ in range(6):
            others.start_soon(churn)
        server.kill()
        await poll(back, timeout_s=20)
        await anyio.sleep(0.3)
        churning.set()
