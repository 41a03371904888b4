"""`autan up --agents 2`: a fleet on one machine from one command, with the embedded
stack's trust boundaries (each function its own NATS identity, workers in sandboxes where
this machine allows), and a clean Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runtime.control import descendants, free_port, isolation_unavailable

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.timeout(240)


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTAN_")}
    env["PYTHONPATH"] = str(ROOT)
    return env


def _autan(*args: str, data_dir: Path, url: str, timeout_s: float = 90) -> str:
    command = [sys.executable, "-m", "runtime.ops.cli", *args, "--nats-url", url,
               "--data-dir", str(data_dir)]  # fmt: skip
    done = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=timeout_s)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_autan_up_with_agents_places_workers_on_them(tmp_path: Path) -> None:
    """Run as the README does: from a project folder others may read (it is on the
    agents' `sys.path`, so their sandboxes show it), the data dir `.autan` in it."""
    project = tmp_path / "project"
    project.mkdir(mode=0o755)
    project.chmod(0o755)
    data_dir, port = project / ".autan", free_port()
    url = f"nats://127.0.0.1:{port}"
    log = tmp_path / "up.log"
    with log.open("wb") as out:
        up = subprocess.Popen(
            [sys.executable, "-m", "runtime.ops.cli", "up", "--agents", "2", "--nats-port",
             str(port), "--data-dir", str(data_dir), "--http-port", "0", "--metrics-port", "0"],
            env=_env(), stdout=out, stderr=out, start_new_session=True, cwd=project,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        while "autan is up" not in log.read_text() and time.monotonic() < deadline:
            assert up.poll() is None, log.read_text()[-3000:]
            time.sleep(0.1)
        assert "autan is up" in log.read_text(), log.read_text()[-3000:]
        assert "on node agents" in log.read_text()
        nodes: dict[str, list[dict[str, object]]] = {"nodes": []}
        while len(nodes["nodes"]) < 2 and time.monotonic() < deadline:
            nodes = json.loads(_run_nodes(data_dir, url))
            time.sleep(0.2)
        assert sorted(str(n["node"]) for n in nodes["nodes"]) == ["local-1", "local-2"]

        assert _autan("invoke", "demo.echo", '"hi"', data_dir=data_dir, url=url).strip() == '"hi"'
        listed = json.loads(_autan("ls", "--json", data_dir=data_dir, url=url))
        echo = next(f for f in listed["functions"] if f["function"] == "demo.echo")
        hosts = {w["host"] for w in echo["workers"]}
        assert hosts, echo
        assert hosts <= {"local-1", "local-2"}, echo
        if isolation_unavailable() is None:  # in sandboxes, as the function's own identity
            assert all(w["isolated"] for w in echo["workers"]), echo
            own = (data_dir / "creds" / "worker_demo_echo.nk").read_bytes()
            seeds = list((data_dir / "agents").glob("local-*/sandboxes/worker_demo_echo/seed.nk"))
            assert seeds, "no sandbox holds the function's seed"
            assert all(seed.read_bytes() == own for seed in seeds)  # not the stack's admin seed

        agents = [pid for pid in descendants(up.pid) if _is_agent(pid)]
        assert len(agents) == 2
        up.send_signal(signal.SIGINT)  # Ctrl-C in a terminal
        assert up.wait(timeout=90) == 0, log.read_text()[-3000:]
        assert "stopped; data kept" in log.read_text()
        for pid in agents:  # none left behind
            assert not Path(f"/proc/{pid}").exists() or _zombie(pid)
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGKILL)
            up.wait(timeout=30)


def _run_nodes(data_dir: Path, url: str) -> str:
    command = [sys.executable, "-m", "runtime.ops.cli", "nodes", "--json", "--nats-url", url,
               "--data-dir", str(data_dir)]  # fmt: skip
    done = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=60)
    return done.stdout or '{"nodes": []}'


def _is_agent(pid: int) -> bool:
    try:
        return b"\x00agent\x00" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True
