"""Deployed code that looks around its worker, as an attacker's function would."""

from __future__ import annotations

import os
import resource
import socket
from pathlib import Path

from runtime import App, Context

app = App("snoop")


def _attempt(action: object) -> str:
    """'ok', or the name of the error the attempt raised."""
    try:
        action() if callable(action) else None
    except Exception as exc:
        return type(exc).__name__
    return "ok"


def _title(pid: str) -> str:
    """A process's title as `ps` shows it (its command line's first words)."""
    try:
        words = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError as exc:
        return type(exc).__name__
    return " ".join(word.decode(errors="replace") for word in words[:3] if word)


def _status(field: str) -> str:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return line.split(":", 1)[1].strip()
    return ""


def _connect(port: int) -> None:
    socket.create_connection(("127.0.0.1", port), timeout=2).close()


def _through_gate(gate: Path, port: int) -> None:
    from broker import dial

    dial(gate, "127.0.0.1", port).close()


@app.function()
def look(ctx: Context, data_dir: str, objects: str, port: int) -> dict[str, object]:
    """What this function's worker can see and do; `port`: a host's port, not NATS."""
    data = Path(data_dir)
    pids = [p for p in os.listdir("/proc") if p.isdigit()]
    return {
        "uid": os.getuid(),
        "euid": os.geteuid(),
        "gid": os.getgid(),
        "groups": os.getgroups(),
        "caps": _status("CapEff"),
        "bounding": _status("CapBnd"),
        "no_new_privs": _status("NoNewPrivs"),
        "data_dir": sorted(os.listdir(data)),
        "creds": sorted(os.listdir(data / "creds")) if (data / "creds").exists() else [],
        "read_deploy_key": _attempt(lambda: (data / "deploy.key").read_bytes()),
        "read_admin_seed": _attempt(lambda: (data / "creds" / "admin.nk").read_bytes()),
        "read_shadow": _attempt(lambda: Path("/etc/shadow").read_bytes()),
        "write_etc": _attempt(lambda: Path("/etc/autan-was-here").write_text("x")),
        "write_artifacts": _attempt(lambda: (Path(objects) / "planted").write_text("x")),
        "write_tmp": _attempt(lambda: Path("/tmp/scratch").write_text("x")),
        "processes": sorted(_title(pid) for pid in pids),
        "environment": sorted(os.environ),
        "nproc": resource.getrlimit(resource.RLIMIT_NPROC)[0],
        "fsize": resource.getrlimit(resource.RLIMIT_FSIZE)[0],
        "core": resource.getrlimit(resource.RLIMIT_CORE)[0],
        "setuid_root": _attempt(lambda: os.setuid(0)),
        "interfaces": [name for _, name in socket.if_nameindex()],
        "connect_port": _attempt(lambda: _connect(port)),
        "gate_port": _attempt(lambda: _through_gate(Path("/tmp/autan-gate.sock"), port)),
    }


@app.function()
def other(ctx: Context, data_dir: str) -> list[str]:
    """A second function: what it sees of the data dir (its own seed only)."""
    return sorted(os.listdir(Path(data_dir) / "creds"))
