"""`autan up` end to end, as a user runs it, traced to prove no connection leaves the host.

One test on purpose: the stack takes seconds to start, and the air-gap check needs
a worker that has run for more than 12 s.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import anyio
import pytest

from broker import STATUS_BUCKET, BrokerUnavailable, PermissionDenied
from runtime.client import Session
from runtime.control import free_port
from runtime.core import ADMIN, Settings

ROOT = Path(__file__).resolve().parent.parent
AIR_GAP_S = 12.5
_ADDRESS = re.compile(r'(?:inet_addr|inet_pton\(AF_INET6, )\("?([0-9a-fA-F:.]+)"?')


def _env() -> dict[str, str]:
    # Without ORT_DISABLE_TELEMETRY: the package itself must set it.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AUTAN_", "ORT_"))}
    env["PYTHONPATH"] = str(ROOT)
    return env


def _autan(*args: str, url: str, data_dir: Path) -> str:
    """The CLI, as the stack's operator on this host: its data dir holds the credentials."""
    command = [sys.executable, "-m", "runtime.ops.cli", "--nats-url", url,
               "--data-dir", str(data_dir), *args]  # fmt: skip
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


async def _wait_for_scaler(url: str, data_dir: Path, functions: int, timeout_s: float) -> None:
    """Until the stack's scaler reports on `functions` functions (it starts with no worker)."""
    with anyio.fail_after(timeout_s):
        session = await _connect(url, data_dir)
        try:
            seen: set[str] = set()
            bucket = await session.broker.bucket(STATUS_BUCKET)
            async with contextlib.aclosing(bucket.watch()) as changes:
                async for key, _ in changes:
                    seen.add(key)
                    if len(seen) >= functions:
                        return
        finally:
            await session.close()


async def _connect(url: str, data_dir: Path) -> Session:
    """The stack's NATS as its admin, once it listens (the test starts it a moment before)."""
    settings = Settings(nats_url=url, data_dir=data_dir, connect_timeout_s=0.5)
    for _ in range(100):
        try:
            return await Session.open(settings, role=ADMIN)
        except (BrokerUnavailable, PermissionDenied):  # its credentials not written yet
            await anyio.sleep(0.1)
    raise TimeoutError(f"nothing listens on {url}")


def _addresses(trace: Path) -> set[str]:
    """Every IPv4/IPv6 address a traced process connected or sent to."""
    return {a for line in trace.read_text().splitlines() for a in _ADDRESS.findall(line)}


def _is_loopback(address: str) -> bool:
    return address.startswith("127.") or address in ("::1", "::ffff:127.0.0.1")


@pytest.mark.timeout(180)
def test_autan_up_serves_the_bundled_functions_air_gapped(tmp_path: Path) -> None:
    port, metrics_port, http_port = free_port(), free_port(), free_port()
    url = f"nats://127.0.0.1:{port}"
    data_dir = tmp_path / "data"
    trace = tmp_path / "connect.trace"
    command = ["strace", "-f", "-qq", "-e", "trace=connect,sendto,sendmsg", "-o", str(trace),
               sys.executable, "-m", "runtime.ops.cli", "--data-dir", str(tmp_path / "data"),
               "up", "--nats-port", str(port), "--metrics-port", str(metrics_port),
               "--http-port", str(http_port)]  # fmt: skip
    stack = subprocess.Popen(command, env=_env(), cwd=tmp_path, start_new_session=True)
    try:
        anyio.run(_wait_for_scaler, url, data_dir, 4, 90.0)
        _check_calls(url, data_dir)
        _check_metrics(metrics_port)
        _check_http(http_port)
        workers_ready = time.monotonic()
        while time.monotonic() - workers_ready < AIR_GAP_S:
            assert json.loads(
                _autan("invoke", "demo.echo", '"still here"', url=url, data_dir=data_dir)
            )
        assert 'autan_batch_size_count{function="demo.embed"}' in _metrics(metrics_port)
        os.kill(_child_of(stack.pid), signal.SIGINT)
        assert stack.wait(timeout=60) == 0
    finally:
        if stack.poll() is None:  # a failure above: stop the stack and all it started
            os.killpg(stack.pid, signal.SIGKILL)
            stack.wait(timeout=30)  # else its warning fails whichever test runs next
    addresses = _addresses(trace)
    assert "127.0.0.1" in addresses  # the trace sees the stack's own connections
    assert {a for a in addresses if not _is_loopback(a)} == set()
    assert (tmp_path / "data" / "objects").is_dir()
    assert (tmp_path / "data" / "nats" / "jetstream").is_dir()


def _check_calls(url: str, data_dir: Path) -> None:
    """Each function starts from zero on its first call; then each has one worker."""
    vector = json.loads(_autan("invoke", "demo.embed", '"hello world"', url=url, data_dir=data_dir))
    assert len(vector) == 384
    label = json.loads(
        _autan(
            "invoke",
            "demo.filetype",
            "--file",
            str(ROOT / "pyproject.toml"),
            url=url,
            data_dir=data_dir,
        )
    )
    assert label["label"] == "toml"
    assert json.loads(_autan("invoke", "demo.echo", "[1, 2]", url=url, data_dir=data_dir)) == [1, 2]
    lines = _autan("invoke", "demo.sentences", '"One. Two!"', url=url, data_dir=data_dir)
    assert [json.loads(line)["sentence"] for line in lines.splitlines()] == ["One.", "Two!"]
    listing = _autan("ls", url=url, data_dir=data_dir)
    for name in ("demo.echo", "demo.embed", "demo.filetype", "demo.sentences"):
        assert re.search(rf"^{re.escape(name)}\s+[0-9a-f]{{16}}\s+1\s", listing, re.M), listing
    status = _autan("status", url=url, data_dir=data_dir)
    assert re.search(r"^demo\.embed\s+0\s.*activate: 1 waiting, no worker", status, re.M), status
    _check_python_api(url, data_dir)


def _metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return str(response.read().decode())


def _check_http(port: int) -> None:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/functions/demo/embed",
        data=json.dumps("hello world").encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert len(json.loads(response.read())) == 384
    streamed = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/functions/demo/sentences",
        data=json.dumps("One sentence. And another!").encode(),
        headers={"Content-Type": "application/json", "Accept": "text/event-stream"},
    )
    with urllib.request.urlopen(streamed, timeout=60) as response:
        events = response.read().decode().strip().split("\n\n")
    items = [json.loads(event.split("data: ", 1)[1]) for event in events[:-1]]
    assert [item["sentence"] for item in items] == ["One sentence.", "And another!"]
    assert events[-1] == 'event: end\ndata: {"items":2}'


def _check_metrics(port: int) -> None:
    text = _metrics(port)
    states = re.findall(r'^autan_workers\{function="demo\.embed",state="\w+"\} (\S+)$', text, re.M)
    assert sum(float(value) for value in states) == 1.0, text
    assert 'autan_cold_start_seconds_count{function="demo.embed",phase="sessions"} 1.0' in text
    # Its first worker waited for the function's template, which loaded the model for it.
    assert 'autan_worker_starts_total{function="demo.embed",template="built"} 1.0' in text
    assert 'autan_scaling_decisions_total{direction="up",function="demo.echo"} 1.0' in text


def _check_python_api(url: str, data_dir: Path) -> None:
    from functions.app import app
    from functions.embed import embed
    from functions.sentences import sentences

    app.sessions.configure(Settings(nats_url=url, data_dir=data_dir))
    try:
        assert embed.remote("hello") == embed.local("hello")
        assert [len(v) for v in embed.map(["a", "b", "c"])] == [384, 384, 384]
        assert embed.spawn("later").get(timeout=30) == embed.local("later")
        streamed = list(sentences.remote_gen("Hello there. How are you?"))
        assert [item["sentence"] for item in streamed] == ["Hello there.", "How are you?"]
        assert streamed[1]["vector"] == embed.local("How are you?")
        kept = sentences.spawn("Kept. Read later!")  # its items kept in JetStream
        assert [item["sentence"] for item in kept.items()] == ["Kept.", "Read later!"]
    finally:
        app.sessions.close()
