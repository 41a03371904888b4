"""Faults of the stack's own processes: `autan up` stopped by Ctrl-C or killed with -9.

`autan up` runs here as a user runs it, a process of its own (deploying the faults app;
unisolated, since the functions write the ledger, a file of this host's),
with its ledger: what was accepted, what completed, what ran twice, and which of the
processes it started are left behind.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from uuid import uuid4

import anyio
import pytest

from broker import BrokerUnavailable, PermissionDenied
from runtime.client import Session
from runtime.control import NatsServer, free_port
from runtime.core import ADMIN, Settings, StackError, WorkerDirectory
from tests.conftest_s3 import S3Server
from tests.faults import app as fx
from tests.faults.conftest import record
from tests.faults.ledger import Ledger
from tests.faults.proxy import Proxy
from tests.stack import poll

ROOT = Path(__file__).resolve().parents[2]


class Up:
    """One `autan up` process, in a process group of its own (as a terminal's job)."""

    def __init__(
        self,
        data_dir: Path,
        port: int,
        log: Path,
        extra: tuple[str, ...] = (),
        http_port: int = 0,
        env: dict[str, str] | None = None,
    ) -> None:
        self.url = f"nats://127.0.0.1:{port}"
        self.data_dir = data_dir
        self.log = log
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("AUTAN_")}
        self.env.update(PYTHONPATH=str(ROOT), AUTAN_FAULTS_LOG=os.environ["AUTAN_FAULTS_LOG"])
        self.env.update(env or {})
        command = [sys.executable, "-m", "runtime.ops.cli", "--data-dir", str(data_dir),
                   "up", "--nats-port", str(port), "--functions", "tests.faults.app",
                   "--http-port", str(http_port), "--metrics-port", "0", *extra]  # fmt: skip
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                command, env=self.env, stdout=out, stderr=out, start_new_session=True
            )

    def descendants(self) -> set[int]:
        """Every process started by this one, and by those, now."""
        children: dict[int, list[int]] = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(stat.parent.name))
        found: set[int] = set()
        todo = [self.process.pid]
        while todo:
            for child in children.get(todo.pop(), []):
                found.add(child)
                todo.append(child)
        return found

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def status(self) -> tuple[int, str]:
        """`autan status`, as the stack's operator on this host: exit code, output."""
        command = [sys.executable, "-m", "runtime.ops.cli", "--data-dir", str(self.data_dir),
                   "--nats-url", self.url, "status"]  # fmt: skip
        done = subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=60)
        return done.returncode, done.stdout + done.stderr


async def _ready(up: Up, timeout_s: float = 60) -> Session:
    """A session on the stack's NATS once `faults.work` is deployed there."""
    with anyio.fail_after(timeout_s):
        while True:
            if up.process.poll() is not None:
                raise AssertionError(f"autan up exited: {up.output()[-2000:]}")
            settings = Settings(nats_url=up.url, data_dir=up.data_dir, connect_timeout_s=0.5)
            try:
                session = await Session.open(settings, role=ADMIN)  # as the operator
            except (BrokerUnavailable, PermissionDenied):  # not up, or no credentials yet
                await anyio.sleep(0.1)
                continue
            if await session.registry.find("faults", "work") is not None:
                return session
            await session.close()
            await anyio.sleep(0.1)


async def _started(ledger: Ledger, count: int) -> None:
    async def enough() -> bool:  # the execution log is a file: polled
        return sum(ledger.executions().values()) >= count

    await poll(enough, timeout_s=60, every_s=0.05)


def _alive(pids: set[int]) -> set[int]:
    """Those of `pids` that still run (zombies count as gone)."""
    alive = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.add(pid)
    return alive


def _gone(pids: set[int], timeout_s: float) -> set[int]:
    deadline = time.monotonic() + timeout_s
    while _alive(pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    return _alive(pids)


@contextmanager
def _stack(
    tmp_path: Path, port: int, name: str, http_port: int = 0, env: dict[str, str] | None = None
) -> Iterator[Up]:
    # The ledger is a file of this host's that the functions write: no sandbox (the
    # isolated stack's Ctrl-C and kill -9 are tests/security/test_isolation.py's).
    log = tmp_path / f"{name}.log"
    up = Up(tmp_path / "data", port, log, ("--unisolated",), http_port=http_port, env=env)
    try:
        yield up
    finally:
        if up.process.poll() is None:
            os.killpg(up.process.pid, signal.SIGKILL)
        up.process.wait(timeout=30)


async def _spawn_and_start(session: Session, ledger: Ledger, calls: int, running: int) -> None:
    fx.app.sessions.configure(session.settings)
    for _ in range(calls):
        await ledger.spawn(fx.work, 0.5)
    await _started(ledger, running)


@pytest.mark.timeout(240)
async def test_ctrl_c_drains_the_calls_in_flight_and_stops_clean(
    tmp_path: Path, ledger: Ledger
) -> None:
    """SIGINT to the whole process group, as a terminal sends it: exit 0, one line, no
    traceback, every call in flight finished (none runs twice), nothing left behind."""
    port = free_port()
    with _stack(tmp_path, port, "first") as up:
        session = await _ready(up)
        try:
            await _spawn_and_start(session, ledger, 40, 4)
            started = up.descendants()
            os.killpg(up.process.pid, signal.SIGINT)
            await anyio.to_thread.run_sync(up.process.wait, 90)
        finally:
            await session.close()
        output = up.output()
        assert up.process.returncode == 0, output[-3000:]
        assert "stopped; data kept" in output
        assert "Traceback" not in output, output[-3000:]
        assert _gone(started, 10) == set()
    with _stack(tmp_path, port, "second") as again:
        session = await _ready(again)
        try:
            report = await ledger.settle(session)
        finally:
            await session.close()
            await fx.app.sessions.aclose()
    record("Ctrl-C of autan up, restart", report)
    assert (report.accepted, report.completed, report.lost) == (40, 40, 0)
    assert report.duplicate_executions == 0  # the calls in flight were finished, not cut


@pytest.mark.timeout(240)
async def test_kill_9_of_autan_up_leaves_no_orphan(tmp_path: Path, ledger: Ledger) -> None:
    """kill -9 of `autan up` mid-burst: what it started ends too, a restart on the same data
    dir serves the rest, and nothing is lost."""
    port = free_port()
    with _stack(tmp_path, port, "first") as up:
        session = await _ready(up)
        try:
            await _spawn_and_start(session, ledger, 60, 4)
            started = up.descendants()
            assert len(started) >= 3  # nats-server, the fork server, its workers
            up.process.kill()
        finally:
            await session.close()
        assert _gone(started, 30) == set()
    with _stack(tmp_path, port, "second") as again:
        session = await _ready(again)
        try:
            report = await ledger.settle(session)
            workers = await (await WorkerDirectory.open(session.broker)).alive()
        finally:
            await session.close()
            await fx.app.sessions.aclose()
    assert sum(w.function == "faults.work" for w in workers) <= 2  # its max_workers
    record("kill -9 of autan up, restart", report)
    assert (report.accepted, report.completed, report.lost) == (60, 60, 0)
    assert report.duplicate_results == 0


@pytest.mark.timeout(240)
async def test_a_restart_stops_the_workers_an_earlier_run_left(
    tmp_path: Path, ledger: Ledger
) -> None:
    """kill -9 of `autan up` while its workers run long calls: they outlive it (told to
    stop, they drain first). `autan up` again on the data dir stops them before it
    starts anything (no function runs on more than `max_workers`), and the cut calls run
    again: nothing is lost."""
    port = free_port()
    env = {"AUTAN_ACK_WAIT_S": "3"}
    first = Up(tmp_path / "data", port, tmp_path / "first.log", ("--unisolated",), env=env)
    try:
        session = await _ready(first)
        try:
            fx.app.sessions.configure(session.settings)
            for _ in range(4):
                await ledger.spawn(fx.work, 12.0)
            await _started(ledger, 4)
            busy = set(ledger.busy_pids())
            first.process.kill()
        finally:
            await session.close()
        first.process.wait(timeout=30)
        assert _alive(busy) == busy  # draining: their calls take 12 s
        with _stack(tmp_path, port, "second", env=env) as again:
            session = await _ready(again)
            try:
                assert _alive(busy) == set(), "workers of the earlier run still run"
                assert "stopped what an earlier run left running" in again.output()
                report = await ledger.settle(session)
            finally:
                await session.close()
                await fx.app.sessions.aclose()
    finally:
        if first.process.poll() is None:
            first.process.kill()
    record("kill -9 mid-call, restart", report)
    assert (report.accepted, report.completed, report.lost) == (4, 4, 0)
    assert report.duplicate_results == 0
    assert report.duplicate_executions <= 4  # the cut calls ran again


def test_a_port_held_by_another_server_is_refused(tmp_path: Path) -> None:
    first = NatsServer(tmp_path / "first", port=free_port())
    first.start()
    try:
        with pytest.raises(StackError, match=r"port \d+ on 127\.0\.0\.1 is in use"):
            NatsServer(tmp_path / "second", port=first.port).start()
    finally:
        first.stop()


def _health(http_port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}{path}", timeout=10) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def _named(pids: set[int], name: str) -> list[int]:
    found = []
    for pid in pids:
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() == name:
                found.append(pid)
        except OSError:
            continue
    return found


@pytest.mark.timeout(240)
async def test_kill_9_of_the_embedded_nats_server_is_survived(
    tmp_path: Path, ledger: Ledger
) -> None:
    """nats-server killed with calls in flight: `autan up` starts it again, /readyz says
    503 while it is away and 200 once it is back, /healthz stays 200 (the stack recovers
    by itself), and every accepted call completes."""
    port, http_port = free_port(), free_port()
    with _stack(tmp_path, port, "first", http_port=http_port) as up:
        session = await _ready(up)
        try:
            await poll(_async(lambda: _health(http_port, "/readyz") == 200), timeout_s=30)
            await _spawn_and_start(session, ledger, 40, 4)
            [nats] = _named(up.descendants(), "nats-server")
            os.kill(nats, signal.SIGKILL)
            # Right after: not ready (the bridge saw NATS go, or JetStream did not answer).
            readyz = await anyio.to_thread.run_sync(_health, http_port, "/readyz")
            assert readyz == 503, up.output()[-4000:]
            await poll(_async(lambda: _health(http_port, "/readyz") == 200), timeout_s=30)
            assert await anyio.to_thread.run_sync(_health, http_port, "/healthz") == 200
            with anyio.fail_after(60):
                report = await ledger.settle(session)
        finally:
            await session.close()
            await fx.app.sessions.aclose()
        assert _named(up.descendants(), "nats-server") != [nats]
        assert "nats-server is back" in up.output()
    record("kill -9 of the embedded nats-server", report)
    assert (report.accepted, report.completed, report.lost) == (40, 40, 0)
    assert report.duplicate_results == 0


def _async(check: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    async def checked() -> bool:
        return await anyio.to_thread.run_sync(check)

    return checked


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 64 MiB filesystem of this test's own (a tmpfs: mounting needs root, as in CI)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small filesystem needs root (CI runs as root)")
    folder = tmp_path / "small"
    folder.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(folder)], check=True)
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def _fill(folder: Path) -> Path:
    filler = folder / "filler"
    with filler.open("wb") as file:
        try:
            while True:
                file.write(b"\0" * (1 << 20))
                file.flush()
        except OSError:
            pass
    return filler


@pytest.mark.timeout(240)
async def test_a_full_disk_then_freed_serves_again_without_a_restart(
    small_disk: Path, tmp_path: Path, ledger: Ledger
) -> None:
    """`autan up` on 64 MiB starts (its calls stream sized to the disk); with the disk
    full, calls are refused and /readyz says so; once space is freed, calls are taken
    and served again with no one restarting anything, and nothing accepted is lost."""
    port, http_port = free_port(), free_port()
    up = Up(small_disk / "data", port, tmp_path / "up.log", ("--unisolated",), http_port)
    try:
        session = await _ready(up)
        try:
            assert "little free disk" in up.output()
            fx.app.sessions.configure(session.settings)
            for _ in range(5):
                assert await ledger.spawn(fx.work, 0.0)
            filler = await anyio.to_thread.run_sync(_fill, small_disk)

            async def refused() -> bool:  # a write or two may still be buffered
                return not await ledger.spawn(fx.work, 0.0)

            await poll(refused, timeout_s=60, every_s=0.2)
            readyz = await anyio.to_thread.run_sync(_health, http_port, "/readyz")
            assert readyz == 503, up.output()[-4000:]
            filler.unlink()

            async def taken() -> bool:
                return await ledger.spawn(fx.work, 0.0)

            await poll(taken, timeout_s=90, every_s=0.5)
            await poll(_async(lambda: _health(http_port, "/readyz") == 200), timeout_s=30)
            for _ in range(5):
                assert await ledger.spawn(fx.work, 0.0)
            report = await ledger.settle(session)
        finally:
            await session.close()
            await fx.app.sessions.aclose()
        output = up.output()
        assert "JetStream cannot write" in output
        assert "restarting nats-server" in output
    finally:
        if up.process.poll() is None:
            os.killpg(up.process.pid, signal.SIGINT)
            up.process.wait(60)
    record("disk full, then freed", report)
    assert report.accepted == report.completed
    assert report.lost == 0
    assert report.duplicate_results == 0


@pytest.mark.timeout(240)
async def test_autan_status_names_the_part_that_is_down(
    tmp_path: Path, ledger: Ledger, s3_server: S3Server
) -> None:
    """Object storage cut, the control plane hung (SIGSTOP), the stack stopped: each time
    `autan status` names the part that is down and exits 1; /readyz says storage too."""
    host, s3_port = s3_server.endpoint.rsplit(":", 1)
    proxy = Proxy(host, int(s3_port))
    await proxy.start()
    storage = f"s3://status-{uuid4().hex[:8]}?endpoint=127.0.0.1:{proxy.port}"
    keys = {"AUTAN_S3_ACCESS_KEY": s3_server.access_key,
            "AUTAN_S3_SECRET_KEY": s3_server.secret_key}  # fmt: skip
    port, http_port = free_port(), free_port()
    extra = ("--unisolated", "--storage-url", storage)
    up = Up(tmp_path / "data", port, tmp_path / "up.log", extra, http_port, env=keys)

    async def says(pattern: str, code: int) -> None:
        async def seen() -> bool:
            rc, out = await anyio.to_thread.run_sync(up.status)
            return rc == code and re.search(pattern, out, re.M) is not None

        await poll(seen, timeout_s=30, every_s=0.5)

    try:
        await (await _ready(up)).close()
        await says(r"^control plane\s+up\s.*reported", 0)
        await says(r"^storage\s+up\s", 0)
        await says(r"^bridge\s+up\s.*http://127\.0\.0\.1:" + str(http_port), 0)
        await proxy.cut()
        await says(r"^storage\s+DOWN\s+object storage", 1)
        readyz = await anyio.to_thread.run_sync(_health, http_port, "/readyz")
        assert readyz == 503
        await proxy.mend()
        await says(r"^storage\s+up\s", 0)
        os.kill(up.process.pid, signal.SIGSTOP)
        try:
            await says(r"^control plane\s+DOWN\s+no report for", 1)
        finally:
            os.kill(up.process.pid, signal.SIGCONT)
        await says(r"^control plane\s+up\s", 0)
        os.killpg(up.process.pid, signal.SIGINT)
        await anyio.to_thread.run_sync(lambda: up.process.wait(60))
        rc, out = await anyio.to_thread.run_sync(up.status)
        assert rc == 1, out
        assert re.search(r"^nats\s+DOWN\s+cannot reach NATS", out, re.M), out
    finally:
        await proxy.cut()
        if up.process.poll() is None:
            os.killpg(up.process.pid, signal.SIGKILL)
        up.process.wait(timeout=30)
