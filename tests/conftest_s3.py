"""The S3 API server the tests talk to (a plain module; tests/conftest.py registers the fixture).

By default a moto server runs as a subprocess on a free loopback port for the whole session.
With `AUTAN_TEST_S3_ENDPOINT=host:port` (plus `AUTAN_TEST_S3_ACCESS_KEY` and
`AUTAN_TEST_S3_SECRET_KEY`) the tests use that server instead, e.g. a real MinIO.
tests/conftest.py imports `s3_server`, so that every test shares one server.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

__all__ = ["S3Server", "free_port", "s3_server"]

_START_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class S3Server:
    """Where the test S3 API listens and the keys it accepts."""

    endpoint: str
    access_key: str
    secret_key: str


def free_port() -> int:
    """A loopback TCP port nothing listens on (at the time of the call)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """An S3 API server for the session: the one named by AUTAN_TEST_S3_ENDPOINT, or moto."""
    endpoint = os.environ.get("AUTAN_TEST_S3_ENDPOINT")
    if endpoint:
        yield S3Server(
            endpoint=endpoint,
            access_key=os.environ.get("AUTAN_TEST_S3_ACCESS_KEY", "minioadmin"),
            secret_key=os.environ.get("AUTAN_TEST_S3_SECRET_KEY", "minioadmin"),
        )
        return
    log_path = tmp_path_factory.mktemp("moto") / "moto.log"
    yield from _moto_server(log_path)


def _moto_server(log_path: Path) -> Iterator[S3Server]:
    port = free_port()
    command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_listening(process, port, log_path)
        yield S3Server(endpoint=f"127.0.0.1:{port}", access_key="testing", secret_key="testing")
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_listening(process: subprocess.Popen[bytes], port: int, log_path: Path) -> None:
    deadline = time.monotonic() + _START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log = log_path.read_text(errors="replace")
            raise RuntimeError(f"moto server exited with {process.returncode}:\n{log}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        except OSError:
            time.sleep(0.05)  # polling interval while the server imports, not a wait for state
            continue
        return
    raise RuntimeError(f"moto server did not listen on 127.0.0.1:{port} in {_START_TIMEOUT_S} s")
