"""Workers as local processes, kept running: a crashed worker is restarted with backoff."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import anyio
import structlog
from anyio.abc import Process, TaskStatus

from runtime.settings import Settings

__all__ = ["LocalProvider"]

log = structlog.get_logger("autan.provider")

_RESTART_BACKOFF_S = (0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
_HEALTHY_AFTER_S = 30.0


class LocalProvider:
    """Runs `autan worker APP.FN` processes on this host with the stack's settings."""

    def __init__(self, settings: Settings, *, stop_grace_s: float = 30.0) -> None:
        self.settings = settings
        self.stop_grace_s = stop_grace_s
        self.processes: dict[str, Process] = {}

    def worker_env(self, *, threads: int) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            ORT_DISABLE_TELEMETRY="1",
            AUTAN_NATS_URL=self.settings.nats_url,
            AUTAN_DATA_DIR=str(self.settings.data_dir.resolve()),
            AUTAN_LOG_FORMAT=self.settings.log_format,
            AUTAN_LOG_LEVEL=self.settings.log_level,
            OMP_NUM_THREADS=str(threads),
        )
        optional = {
            "AUTAN_STORAGE_URL": self.settings.storage_url,
            "AUTAN_SIGNING_KEY": self.settings.signing_key,
            "AUTAN_S3_ACCESS_KEY": self.settings.s3_access_key,
            "AUTAN_S3_SECRET_KEY": self.settings.s3_secret_key,
        }
        env.update({name: value for name, value in optional.items() if value})
        return env

    async def keep_running(
        self,
        qualname: str,
        *,
        threads: int = 1,
        task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Run one worker of `qualname` until cancelled, restarting it when it exits."""
        failures = 0
        task_status.started()
        while True:
            started = time.monotonic()
            code = await self._run_once(qualname, threads)
            failures = 0 if time.monotonic() - started > _HEALTHY_AFTER_S else failures + 1
            delay_s = (
                _RESTART_BACKOFF_S[min(failures, len(_RESTART_BACKOFF_S)) - 1] if failures else 0
            )
            log.warning("worker exited; restarting", function=qualname, code=code, delay_s=delay_s)
            await anyio.sleep(delay_s)

    async def _run_once(self, qualname: str, threads: int) -> int:
        command = [
            sys.executable,
            "-m",
            "runtime.cli",
            "worker",
            qualname,
            "--threads",
            str(threads),
        ]
        process = await anyio.open_process(
            command, env=self.worker_env(threads=threads), stdin=subprocess.DEVNULL,
            stdout=None, stderr=None,
        )  # fmt: skip
        self.processes[qualname] = process
        try:
            return await process.wait()
        finally:
            with anyio.CancelScope(shield=True):
                await self._stop(process)
            self.processes.pop(qualname, None)

    async def _stop(self, process: Process) -> None:
        if process.returncode is not None:
            return
        process.send_signal(signal.SIGTERM)
        with anyio.move_on_after(self.stop_grace_s):
            await process.wait()
            return
        process.kill()
        await process.wait()
