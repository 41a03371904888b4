"""The HTTP bridge in its own process: `python -m runtime.ops.cli gateway`, on a stack's NATS.

    gateway = await start_gateway(stack)        # returns once GET /readyz answers 200
    gateway.url("/v1/functions/demo/echo")      # http://127.0.0.1:<free port>/v1/...

Its process joins `stack.helpers`, so the stack stops it (SIGTERM) with the others. It
gets the stack's settings through the environment, as `autan gateway` would, and logs
(JSON, at `log_level`) to a file in the stack's directory.
"""

from __future__ import annotations

import os

os.environ["ORT_DISABLE_TELEMETRY"] = "1"

import asyncio
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.kit.harness import ROOT, Process, Stack, child_env
from benchmarks.kit.http_client import HttpConnection, encode_request
from runtime.control import free_port

__all__ = ["HOST", "Gateway", "start_gateway"]

HOST = "127.0.0.1"
READY_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Gateway:
    """A running `autan gateway`: its process, port and log file."""

    process: Process
    port: int
    log_path: Path

    @property
    def host(self) -> str:
        return f"{HOST}:{self.port}"

    def url(self, target: str) -> str:
        return f"http://{self.host}{target}"

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def gateway_env(stack: Stack, log_level: str) -> dict[str, str]:
    settings = stack.settings
    return child_env(
        AUTAN_NATS_URL=settings.nats_url,
        AUTAN_STORAGE_URL=settings.storage_url or "",
        AUTAN_DATA_DIR=str(settings.data_dir),
        AUTAN_TRUSTED_KEYS=settings.trust().text(),
        AUTAN_LOG_FORMAT="json",
        AUTAN_LOG_LEVEL=log_level,
    )


async def start_gateway(stack: Stack, *, log_level: str = "info") -> Gateway:
    """Start the gateway on a free loopback port (no API keys) and wait until it is ready."""
    port = free_port()
    log_path = stack.root / "gateway.log"
    command = ["-m", "runtime.ops.cli", "gateway", "--http-host", HOST, "--http-port", str(port)]
    with log_path.open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable, *command, cwd=ROOT, env=gateway_env(stack, log_level),
            stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log,
        )  # fmt: skip
    stack.helpers.append(process)
    gateway = Gateway(process, port, log_path)
    await _wait_ready(gateway)
    return gateway


async def _wait_ready(gateway: Gateway) -> None:
    """Until /readyz says 200: the process answers (/healthz) and its NATS link is up."""
    request = encode_request("GET", "/readyz", host=gateway.host)
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not await _answers_200(gateway.port, request):
        if gateway.process.returncode is not None or time.monotonic() > deadline:
            raise RuntimeError(
                f"the gateway on port {gateway.port} did not get ready (exit code "
                f"{gateway.process.returncode}); its log:\n{gateway.log_tail()}"
            )
        await asyncio.sleep(0.05)


async def _answers_200(port: int, request: bytes) -> bool:
    try:
        connection = await HttpConnection.open(HOST, port)
    except OSError:
        return False
    try:
        return (await connection.exchange(request)).status == 200
    except OSError:
        return False
    finally:
        await connection.close()
