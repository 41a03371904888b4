"""`autan up` end to end, as a user runs it, traced to prove no connection leaves the host.

One test on purpose: the stack takes seconds to start, and the air-gap check needs
a worker that has run for more than 12 s.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest

from runtime.embedded import free_port
from runtime.session import Session
from runtime.settings import Settings
from runtime.workers import WorkerDirectory

ROOT = Path(__file__).resolve().parent.parent
AIR_GAP_S = 12.5
_ADDRESS = re.compile(r'(?:inet_addr|inet_pton\(AF_INET6, )\("?([0-9a-fA-F:.]+)"?')


def _env() -> dict[str, str]:
    # Without ORT_DISABLE_TELEMETRY: the package itself must set it.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AUTAN_", "ORT_"))}
    env["PYTHONPATH"] = str(ROOT)
    return env


def _autan(*args: str, url: str) -> str:
    command = [sys.executable, "-m", "runtime.cli", "--nats-url", url, *args]
    done = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _child_of(parent: int) -> int:
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == parent:
            return int(stat.parent.name)
    raise LookupError(f"no child of {parent}")


async def _wait_for_workers(url: str, count: int, timeout_s: float) -> None:
    session = await Session.open(Settings(nats_url=url))
    try:
        directory = await WorkerDirectory.open(session.broker)
        await directory.wait_until_ready(count, timeout_s)
    finally:
        await session.close()


def _addresses(trace: Path) -> set[str]:
    """Every IPv4/IPv6 address a traced process connected or sent to."""
    return {a for line in trace.read_text().splitlines() for a in _ADDRESS.findall(line)}


def _is_loopback(address: str) -> bool:
    return address.startswith("127.") or address in ("::1", "::ffff:127.0.0.1")


@pytest.mark.timeout(180)
def test_autan_up_serves_the_bundled_functions_air_gapped(tmp_path: Path) -> None:
    port = free_port()
    url = f"nats://127.0.0.1:{port}"
    trace = tmp_path / "connect.trace"
    command = ["strace", "-f", "-qq", "-e", "trace=connect,sendto,sendmsg", "-o", str(trace),
               sys.executable, "-m", "runtime.cli", "--data-dir", str(tmp_path / "data"),
               "up", "--nats-port", str(port)]  # fmt: skip
    stack = subprocess.Popen(command, env=_env(), cwd=tmp_path)
    try:
        anyio.run(_wait_for_workers, url, 3, 90.0)
        workers_ready = time.monotonic()
        _check_calls(url)
        while time.monotonic() - workers_ready < AIR_GAP_S:
            assert json.loads(_autan("invoke", "demo.echo", '"still here"', url=url))
        os.kill(_child_of(stack.pid), signal.SIGINT)
        assert stack.wait(timeout=60) == 0
    finally:
        if stack.poll() is None:
            stack.kill()
    addresses = _addresses(trace)
    assert "127.0.0.1" in addresses  # the trace sees the stack's own connections
    assert {a for a in addresses if not _is_loopback(a)} == set()
    assert (tmp_path / "data" / "objects").is_dir()
    assert (tmp_path / "data" / "nats" / "jetstream").is_dir()


def _check_calls(url: str) -> None:
    vector = json.loads(_autan("invoke", "demo.embed", '"hello world"', url=url))
    assert len(vector) == 384
    listing = _autan("ls", url=url)
    for name in ("demo.echo", "demo.embed", "demo.filetype"):
        assert re.search(rf"^{re.escape(name)}\s+[0-9a-f]{{16}}\s+1\s", listing, re.M), listing
    label = json.loads(
        _autan("invoke", "demo.filetype", "--file", str(ROOT / "pyproject.toml"), url=url)
    )
    assert label["label"] == "toml"
    _check_python_api(url)


def _check_python_api(url: str) -> None:
    from functions.app import app
    from functions.embed import embed

    app.sessions.configure(Settings(nats_url=url))
    try:
        assert embed.remote("hello") == embed.local("hello")
        assert [len(v) for v in embed.map(["a", "b", "c"])] == [384, 384, 384]
        assert embed.spawn("later").get(timeout=30) == embed.local("later")
    finally:
        app.sessions.close()
