"""`autan` commands as a user starts them: processes of their own, each with its log."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

from benchmarks.kit.harness import ROOT
from runtime.control import descendants
from runtime.core import Settings

__all__ = ["Command"]


class Command:
    """One `autan ...` process in a process group of its own, logging to `log`."""

    def __init__(self, log: Path, settings: Settings, *args: str) -> None:
        self.log = log
        env = {k: v for k, v in os.environ.items() if not k.startswith("AUTAN_")}
        env.update(settings.to_env(), PYTHONPATH=str(ROOT), ORT_DISABLE_TELEMETRY="1")
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "runtime.ops.cli", *args],
                env=env, stdout=out, stderr=out, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )  # fmt: skip

    def says(self, text: str) -> bool:
        if self.process.poll() is not None:
            tail = self.log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{self.log.name}: the command exited: {tail}")
        return text in self.log.read_text(errors="replace")

    def kill_host(self) -> None:
        """kill -9 of it and everything under it at once (a host lost)."""
        for pid in [self.process.pid, *descendants(self.process.pid)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                self.kill_host()
