"""Isolated workers: deployed code runs as an unprivileged user in a sandbox of its own
(namespaces, a read-only system, no view of the data dir, limits), with only the
environment it needs; where no sandbox can be had, `autan serve` refuses to start."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from broker import Identities, worker_role
from runtime.control import (
    EmbeddedAccess,
    LocalProvider,
    NatsServer,
    ProvidedWorker,
    free_port,
    isolation_unavailable,
)
from runtime.core import ADMIN, Link, Settings, WorkerDirectory
from runtime.ops import deploy_target
from tests.apps import snoop
from tests.keys import DEPLOY_KEY, TRUSTED_KEYS
from tests.stack import serving

ROOT = Path(__file__).resolve().parents[2]


class Sandboxed:
    """A stack as `autan up` runs it: nkeys, the snoop app, isolated workers."""

    def __init__(self, settings: Settings, provider: LocalProvider) -> None:
        self.settings = settings
        self.provider = provider

    @property
    def objects(self) -> Path:
        return self.settings.data_dir / "objects"

    async def ready_worker(self, fn: str) -> ProvidedWorker:
        async with await Link.open(self.settings, role=ADMIN) as link:
            worker = await self.provider.start(await link.registry.get("snoop", fn))
            directory = await WorkerDirectory.open(link.broker)
            await directory.wait_until(
                lambda ws: any(w.worker_id == worker.worker_id and w.state == "ready" for w in ws),
                60,
            )
        return worker


@pytest.fixture(scope="module")
async def sandboxed(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Sandboxed]:
    why = isolation_unavailable()
    assert why is None, f"{why} (make test installs what isolation needs)"
    root = tmp_path_factory.mktemp("sandboxed")
    access = EmbeddedAccess(Identities(root / "creds"))
    server = NatsServer(root / "nats", port=free_port(), authorization=access.authorization())
    server.start()
    access.attach(server)
    settings = Settings(
        nats_url=server.url,
        data_dir=root,
        storage_url=f"file://{root / 'objects'}",
        deploy_key=DEPLOY_KEY,
        trusted_keys=TRUSTED_KEYS,
        connect_timeout_s=2.0,
    )
    (root / "deploy.key").write_text("a secret the workers must not read\n")
    provider = LocalProvider(settings, access=access, isolate=True, stop_grace_s=10)
    try:
        async with await Link.open(settings, role=ADMIN) as link:
            await deploy_target(link, "tests.apps.snoop")
        snoop.app.sessions.configure(settings)
        async with serving(provider):
            yield Sandboxed(settings, provider)
    finally:
        await snoop.app.sessions.aclose()
        server.stop()


@pytest.fixture(scope="module")
async def seen(sandboxed: Sandboxed) -> dict[str, Any]:
    """What the snoop function saw from inside its worker (with a port of this host's
    open, which it must not reach)."""
    await sandboxed.ready_worker("look")
    data_dir, objects = str(sandboxed.settings.data_dir), str(sandboxed.objects)
    with socket.create_server(("127.0.0.1", 0)) as listening:
        port = listening.getsockname()[1]
        result: dict[str, Any] = await snoop.look.remote.aio(data_dir, objects, port)
    return result


async def test_deployed_code_runs_as_an_unprivileged_user(seen: dict[str, Any]) -> None:
    assert (seen["uid"], seen["euid"], seen["gid"], seen["groups"]) == (65534, 65534, 65534, [])
    assert seen["caps"] == seen["bounding"] == "0000000000000000"
    assert seen["no_new_privs"] == "1"
    assert seen["setuid_root"] == "PermissionError"


async def test_deployed_code_cannot_read_the_data_dir_or_keys(
    sandboxed: Sandboxed, seen: dict[str, Any]
) -> None:
    host_view = sorted(os.listdir(sandboxed.settings.data_dir))
    assert {"deploy.key", "creds", "sandboxes", "nats"} <= set(host_view)
    assert seen["data_dir"] == ["cache", "creds", "objects"]  # its own alone (the gate: /tmp)
    assert seen["creds"] == [f"{worker_role('snoop', 'look')}.nk"]  # its own seed only
    assert seen["read_deploy_key"] == "FileNotFoundError"
    assert seen["read_admin_seed"] == "FileNotFoundError"
    assert seen["read_shadow"] == "PermissionError"


async def test_deployed_code_cannot_write_the_system_or_the_artifacts(
    seen: dict[str, Any],
) -> None:
    assert seen["write_etc"] in ("OSError", "PermissionError")  # read-only (EROFS)
    assert seen["write_artifacts"] in ("OSError", "PermissionError")
    assert seen["write_tmp"] == "ok"  # a private scratch


async def test_deployed_code_sees_its_own_processes_and_environment_only(
    seen: dict[str, Any],
) -> None:
    # bwrap's init, the fork server, the function's template and its spare child, this
    # worker: nothing of the host's or of another function's.
    titles = seen["processes"]
    assert len(titles) <= 5, titles
    kinds = {title.split(" ")[0].rsplit("/", 1)[-1] for title in titles}
    assert kinds <= {"bwrap", "autan"}, titles
    assert "autan fork server" in titles, titles
    assert sum(title.startswith("autan worker snoop.look") for title in titles) == 1, titles
    assert all(
        title.startswith(("autan fork server", "autan worker snoop.look", "autan template"))
        for title in titles
        if title.startswith("autan")
    ), titles
    leaked = [name for name in seen["environment"] if name not in _ALLOWED_ENVIRONMENT]
    assert leaked == []
    assert not any("KEY" in name or "SECRET" in name for name in seen["environment"])


async def test_deployed_code_reaches_no_port_but_nats_and_storage(
    seen: dict[str, Any],
) -> None:
    """Its network is empty (its own loopback); the gate dials NATS and storage alone."""
    assert seen["interfaces"] == ["lo"]
    assert seen["connect_port"] == "ConnectionRefusedError"  # nothing listens in there
    assert seen["gate_port"] == "ConnectionRefusedError"  # the gate refuses it


async def test_deployed_code_runs_under_limits(seen: dict[str, Any]) -> None:
    assert seen["nproc"] == 4096
    assert seen["fsize"] == 1 << 30
    assert seen["core"] == 0


async def test_each_function_sees_only_its_own_identity(sandboxed: Sandboxed) -> None:
    await sandboxed.ready_worker("other")
    seen = await snoop.other.remote.aio(str(sandboxed.settings.data_dir))
    assert seen == [f"{worker_role('snoop', 'other')}.nk"]


async def test_isolated_workers_are_shown_so(sandboxed: Sandboxed) -> None:
    await sandboxed.ready_worker("look")
    assert all(worker.isolated and worker.pid == 0 for worker in sandboxed.provider.workers())
    async with await Link.open(sandboxed.settings, role=ADMIN) as link:
        alive = await (await WorkerDirectory.open(link.broker)).alive()
    assert alive
    assert all(info.isolated for info in alive)


async def test_a_stopped_isolated_worker_exits_cleanly(sandboxed: Sandboxed) -> None:
    worker = await sandboxed.ready_worker("other")
    await sandboxed.provider.stop(worker.worker_id)  # SIGTERM, through its sandbox
    with anyio.fail_after(30):
        assert await sandboxed.provider.exit_code(worker.worker_id) == 0


# What a sandboxed worker's environment may hold: the system's basics, no setting of ours.
_ALLOWED_ENVIRONMENT = {
    "PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "PYTHONPATH", "HOME",
    "ORT_DISABLE_TELEMETRY", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
}  # fmt: skip


# -- the stack as a user runs it -----------------------------------------------------------


def _up(data_dir: Path, port: int, log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "runtime.ops.cli", "--data-dir", str(data_dir), "up",
               "--nats-port", str(port), "--functions", "tests.apps.snoop",
               "--http-port", "0", "--metrics-port", "0"]  # fmt: skip
    with log.open("ab") as out:
        return subprocess.Popen(command, env=env, stdout=out, stderr=out, start_new_session=True)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTAN_")}
    return {**env, "PYTHONPATH": str(ROOT), **extra}


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _alive(pids: set[int]) -> set[int]:
    alive = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.add(pid)
    return alive


def _cli(data_dir: Path, port: int, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "runtime.ops.cli", "--data-dir", str(data_dir),
               "--nats-url", f"nats://127.0.0.1:{port}", *args]  # fmt: skip
    return subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=60)


@pytest.mark.timeout(180)
def test_kill_9_of_an_isolated_stack_leaves_no_sandbox_behind(tmp_path: Path) -> None:
    """Ctrl-C stops the sandboxes with the stack; after kill -9 they end too."""
    port = free_port()
    data_dir = tmp_path / "data"
    for stop in (signal.SIGINT, signal.SIGKILL):
        up = _up(data_dir, port, tmp_path / "up.log", _env())
        try:
            deadline = time.monotonic() + 60
            while _cli(data_dir, port, "invoke", "snoop.other", f'"{data_dir}"').returncode:
                assert up.poll() is None, (tmp_path / "up.log").read_text()[-2000:]
                assert time.monotonic() < deadline, "no answer from an isolated worker"
                time.sleep(0.5)
            started = _descendants(up.pid)
            assert len(started) >= 4  # nats-server, bwrap (two), the fork server, a worker
            listing = _cli(data_dir, port, "ls").stdout
            assert "UNISOLATED" not in listing, listing
            if stop == signal.SIGINT:
                os.killpg(up.pid, signal.SIGINT)
                assert up.wait(60) == 0
            else:
                up.kill()
                up.wait(10)
            deadline = time.monotonic() + 30
            while _alive(started) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert _alive(started) == set()
        finally:
            if up.poll() is None:
                os.killpg(up.pid, signal.SIGKILL)
                up.wait(30)


def test_serve_refuses_to_run_unisolated_unless_told(tmp_path: Path) -> None:
    """No bubblewrap on the PATH: `autan serve` exits with what to do; `--unisolated`
    passes that check (and then needs its NATS, which is not there)."""
    env = _env(PATH=str(tmp_path), AUTAN_NATS_URL=f"nats://127.0.0.1:{free_port()}")
    command = [sys.executable, "-m", "runtime.ops.cli", "--data-dir", str(tmp_path / "d"),
               "serve", "--http-port", "0", "--metrics-port", "0"]  # fmt: skip
    refused = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1
    assert "workers cannot be isolated here: bubblewrap is not installed" in refused.stderr
    assert "--unisolated" in refused.stderr
    assert "Traceback" not in refused.stderr
    told = subprocess.run(
        [*command, "--unisolated"], env=env, capture_output=True, text=True, timeout=60
    )
    assert "WORKERS RUN UNISOLATED" in told.stdout + told.stderr
    assert "cannot reach NATS" in told.stderr


@pytest.mark.timeout(180)
def test_up_without_a_sandbox_warns_and_says_so_in_ls_and_status(tmp_path: Path) -> None:
    port = free_port()
    data_dir = tmp_path / "data"
    env = _env(PATH=str(tmp_path))  # no bubblewrap here
    up = _up(data_dir, port, tmp_path / "up.log", env)
    try:
        deadline = time.monotonic() + 60
        while _cli(data_dir, port, "invoke", "snoop.other", f'"{data_dir}"').returncode:
            assert up.poll() is None, (tmp_path / "up.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "no answer from the worker"
            time.sleep(0.5)
        assert "WORKERS RUN UNISOLATED" in (tmp_path / "up.log").read_text()
        line = "snoop.other: 1 worker runs UNISOLATED"
        assert line in _cli(data_dir, port, "ls").stdout
        deadline = time.monotonic() + 10
        while line not in _cli(data_dir, port, "status").stdout:
            assert time.monotonic() < deadline, "autan status does not say so"
            time.sleep(0.5)
        os.killpg(up.pid, signal.SIGINT)
        assert up.wait(60) == 0
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGKILL)
            up.wait(30)


async def test_a_sandbox_that_dies_takes_its_workers_and_comes_back(
    sandboxed: Sandboxed,
) -> None:
    """kill -9 of a function's sandbox: its workers count as ended (the scaler starts
    others), and the next worker gets a new sandbox."""
    worker = await sandboxed.ready_worker("other")
    cache = f"sandboxes/{worker_role('snoop', 'other')}/cache"
    os.kill(_sandbox_of(cache), signal.SIGKILL)
    with anyio.fail_after(30):
        assert await sandboxed.provider.exit_code(worker.worker_id) == -signal.SIGKILL
    assert sandboxed.provider.workers("snoop.other") == []
    await sandboxed.ready_worker("other")
    assert await snoop.other.remote.aio(str(sandboxed.settings.data_dir))


def _sandbox_of(cache: str) -> int:
    """bwrap as this process started it (it forks the sandbox's init) for a function."""
    [sandbox] = [
        int(cmdline.parent.name)
        for cmdline in Path("/proc").glob("[0-9]*/cmdline")
        if _is_sandbox_of(cmdline, cache) and _parent(cmdline.parent) == os.getpid()
    ]
    return sandbox


def _parent(proc: Path) -> int:
    try:
        return int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def _is_sandbox_of(cmdline: Path, cache: str) -> bool:
    try:
        args = cmdline.read_bytes().split(b"\0")
    except OSError:
        return False
    return args[0].endswith(b"bwrap") and any(arg.endswith(cache.encode()) for arg in args)
