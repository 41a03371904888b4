"""Isolated workers: each function's fork server, and so its workers, in a sandbox.

bubblewrap (`bwrap`) gives the sandbox its own mount, pid, ipc and uts namespaces and a
new terminal session, a read-only view of the system with the data directory hidden, a
private /tmp of bounded size (the interpreter and the project, if they live under the
host's /tmp, are shown in it read-only), and an unprivileged user: run as root, `setpriv` drops to
uid and gid 65534 with no capabilities and no way back (no_new_privs); run as another
user, a user namespace maps that user to 65534 inside. Folders the sandbox user could
not reach (a Python installed under /root) are shown to it, read-only, alone in an
empty folder. What a function's workers see of the data directory is their own: their
NATS identity's seed (read-only), a cache of their own (artifacts, models, optimized
graphs), and the object store's payload and result folders. Resource limits: processes,
file size, no core dumps (CPU time is bounded per call by the worker's deadline guards,
not per process: a worker lives for many calls).

The network namespace is empty but for its own loopback: the only way out is the
provider's gate (`control.gate`), which connects to NATS and the object store alone.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from pathlib import Path

import msgspec
import structlog

from runtime.core import Settings

__all__ = ["SANDBOX_UID", "Sandbox", "gate_inside", "gate_path", "isolation_unavailable"]

log = structlog.get_logger("autan.provider")

SANDBOX_UID = 65534  # nobody
_MAX_PROCESSES = 4096  # processes and threads of the sandbox user, all sandboxes together
_MAX_FILE_BYTES = 1 << 30  # one file written by user code: 1 GiB at most
_SCRATCH_BYTES = 1 << 30  # the sandbox's /tmp (memory-backed)
_PROBE_TIMEOUT_S = 30.0
_PROBE = "import runtime.worker.forkserver"


@functools.cache
def isolation_unavailable() -> str | None:
    """None when workers can be isolated here, else why not (what to install or allow)."""
    if not sys.platform.startswith("linux"):
        return "isolation needs Linux namespaces"
    if shutil.which("bwrap") is None:
        return "bubblewrap is not installed (apt-get install bubblewrap)"
    for tool in ("setpriv", "prlimit"):
        if shutil.which(tool) is None:
            return f"{tool} (util-linux) is not installed"
    command = [*_sandbox_args(), "--", *_limited([sys.executable, "-c", _PROBE])]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=_PROBE_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"bubblewrap cannot run here ({exc})"
    if done.returncode != 0:
        why = done.stderr.strip().splitlines()[-1:] or [f"exit {done.returncode}"]
        return f"a sandbox cannot run Autan's worker here: {why[0]}"
    return None


class Sandbox:
    """How one function's processes are run isolated, and the folders they get."""

    def __init__(self, settings: Settings, role: str) -> None:
        self.settings = settings
        self.role = role
        self.home = settings.data_dir.resolve() / "sandboxes" / role

    @property
    def cache(self) -> Path:
        return self.home / "cache"

    @property
    def seed(self) -> Path:
        """The function's NATS seed, as its sandbox sees it."""
        return self.settings.data_dir.resolve() / "creds" / f"{self.role}.nk"

    def _tls(self) -> dict[str, tuple[Path, Path]]:
        """TLS files for NATS: field -> (the file, where the sandbox sees its copy)."""
        inside = self.settings.data_dir.resolve() / "tls"
        fields = ("nats_tls_ca", "nats_tls_cert", "nats_tls_key")
        return {
            field: (path, inside / field.removeprefix("nats_tls_"))
            for field in fields
            if (path := getattr(self.settings, field)) is not None
        }

    def worker_settings(self) -> Settings:
        """The settings as a worker in the sandbox sees them (its TLS files' copies)."""
        changes = {field: inside for field, (_, inside) in self._tls().items()}
        return msgspec.structs.replace(self.settings, **changes)

    def prepare(self, seed: Path | None) -> None:
        """The function's own folders, owned by the sandbox user; its seed and the TLS
        files for NATS copied in (the sandbox user reads them; no one else does)."""
        self.cache.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            for folder in (self.home, self.cache):
                os.chown(folder, SANDBOX_UID, SANDBOX_UID)
        for field, (path, _) in self._tls().items():
            _copy_for_sandbox(path, self.home / field)
        if seed is not None:
            _copy_for_sandbox(seed, self.home / "seed.nk")
        for folder in self._store_folders():
            folder.mkdir(parents=True, exist_ok=True)
            folder.chmod(0o1777)  # the sandbox user writes its payloads and results here

    def command(self, inner: list[str]) -> list[str]:
        """`inner` run in this function's sandbox."""
        data = self.settings.data_dir.resolve()
        args = _sandbox_args() + _traversable(data)
        args += ["--tmpfs", str(data)]  # keys, every role's seed, other functions' caches
        args += ["--bind", str(self.cache), str(data / "cache")]
        seed = self.home / "seed.nk"
        if seed.exists():
            args += ["--perms", "0755", "--dir", str(self.seed.parent)]
            args += ["--ro-bind", str(seed), str(self.seed)]
        args += ["--bind", str(gate_path(self.settings)), str(gate_inside(self.settings))]
        tls = self._tls()
        if tls:
            args += ["--perms", "0755", "--dir", str(data / "tls")]
        for field, (_, inside) in tls.items():
            args += ["--ro-bind", str(self.home / field), str(inside)]
        objects = self._objects()
        if objects is not None:
            args += ["--ro-bind", str(objects), str(objects)]
            for folder in self._store_folders():
                args += ["--bind", str(folder), str(folder)]
        return [*args, "--", *_limited(inner)]

    def _objects(self) -> Path | None:
        """The file store's folder, when the stack stores objects on this host."""
        url = self.settings.storage_url or ""
        if not url.startswith("file://"):
            return None
        return Path(url.removeprefix("file://")).resolve()

    def _store_folders(self) -> list[Path]:
        objects = self._objects()
        if objects is None:
            return []
        return [objects / "payloads", objects / "results"]


def _copy_for_sandbox(source: Path, target: Path) -> None:
    """`source` copied to `target`, readable by the sandbox user alone, replaced in one
    step (a sandbox binding the path sees the old file or the new one, never a half)."""
    temp = target.with_name(f".{target.name}.new")
    temp.unlink(missing_ok=True)
    descriptor = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
    with os.fdopen(descriptor, "wb") as file:
        file.write(source.read_bytes())
    if os.geteuid() == 0:
        os.chown(temp, SANDBOX_UID, SANDBOX_UID)
    os.replace(temp, target)


def gate_path(settings: Settings) -> Path:
    """Where the provider's gate (`control.gate`) listens."""
    folder = settings.data_dir.resolve() / "sandboxes"
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    return folder / "gate.sock"


def gate_inside(settings: Settings) -> Path:
    """Where a sandbox sees the gate, its only way out: in its own /tmp, a path short
    enough for a socket whatever the data dir's."""
    return _TMP / "autan-gate.sock"


def _sandbox_args() -> list[str]:
    """bwrap's arguments up to the function's own folders."""
    bwrap = shutil.which("bwrap") or "bwrap"
    args = [bwrap, "--die-with-parent", "--new-session"]
    args += ["--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
    args += ["--unshare-net"]  # its own loopback alone: the way out is the gate
    if os.geteuid() != 0:  # as root, setpriv drops the user for real
        args += ["--unshare-user", "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID)]
    args += ["--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
    args += ["--perms", "1777", "--size", str(_SCRATCH_BYTES), "--tmpfs", "/tmp", "--chdir", "/tmp"]
    return args + _gpu_devices() + _reachable()


def _limited(inner: list[str]) -> list[str]:
    limits = [
        "prlimit", f"--nproc={_MAX_PROCESSES}", f"--fsize={_MAX_FILE_BYTES}", "--core=0", "--",
    ]  # fmt: skip
    if os.geteuid() != 0:
        return limits + inner
    drop = ["setpriv", f"--reuid={SANDBOX_UID}", f"--regid={SANDBOX_UID}", "--clear-groups",
            "--no-new-privs", "--inh-caps=-all", "--bounding-set=-all", "--"]  # fmt: skip
    return limits + drop + inner


def _gpu_devices() -> list[str]:
    """The NVIDIA device nodes, when this host has them (`--dev` makes a minimal /dev)."""
    nodes = sorted(Path("/dev").glob("nvidia*"))
    args: list[str] = []
    for node in nodes:
        args += ["--dev-bind", str(node), str(node)]
    return args


def _traversable(data: Path) -> list[str]:
    """The folders above the data dir, made traversable for the sandbox user: an agent's
    data dir lies in its stack's, which others may not enter (0700). A closed one becomes
    an empty one (what it holds is the stack's: keys, seeds); one in a folder the sandbox
    already replaced (its own /tmp, a closed folder `_reachable` emptied) is made there."""
    hidden = list(_hidden_tops())
    args: list[str] = []
    for folder in reversed(data.parents):
        if folder in hidden:
            continue
        if os.geteuid() == 0 and not folder.stat().st_mode & 0o001:
            args += ["--perms", "0755", "--tmpfs", str(folder)]
            hidden.append(folder)
        elif any(top in folder.parents for top in hidden):
            args += ["--perms", "0755", "--dir", str(folder)]
    return args


@functools.cache
def _hidden_tops() -> tuple[Path, ...]:
    """What the sandbox replaces by empty folders: its /tmp, and (as root) the closed
    folders above the interpreter and the project."""
    tops = _closed_tops(_needed()) if os.geteuid() == 0 else []
    return (_TMP, *tops)


@functools.cache
def _reachable() -> list[str]:
    """Show the sandbox the interpreter and Autan's code where the sandbox hides them: under
    /tmp (its own is empty), or, as root, under a folder closed to others (a Python under
    /root), which becomes an empty one with only them in it. Read-only."""
    needed = _needed()
    hidden = list(_hidden_tops())  # as another user than root, its folders are its own
    args: list[str] = []
    for top in hidden[1:]:
        args += ["--perms", "0755", "--tmpfs", str(top)]
    shown = [p for p in sorted(needed) if any(top in p.parents for top in hidden)]
    made: set[Path] = set()
    for path in shown:
        if any(other in path.parents for other in shown):
            continue
        for folder in reversed(path.parents):  # traversable: bwrap copies a parent's mode
            if folder not in made and any(top in folder.parents for top in hidden):
                made.add(folder)
                args += ["--perms", "0755", "--dir", str(folder)]
        args += ["--ro-bind", str(path), str(path)]
    return args


_TMP = Path("/tmp")


def _needed() -> set[Path]:
    """The interpreter, its library, `sys.path` and the project, as they exist."""
    needed = {Path(sys.prefix), Path(sys.base_prefix), Path(os.path.realpath(sys.executable))}
    needed |= {Path(entry) for entry in sys.path if entry}
    needed.add(Path(__file__).resolve().parents[2])  # the project: runtime/, broker/, ...
    needed = {path.resolve() for path in needed if path.exists()}
    if os.geteuid() == 0:  # a folder closed to others stays closed (a test's own tmp dir)
        needed = {path for path in needed if path.stat().st_mode & 0o005 == 0o005}
    return needed


def _closed_tops(needed: set[Path]) -> list[Path]:
    """The highest folders above `needed` that others may not enter (outside /tmp)."""
    closed: set[Path] = set()
    for path in needed:
        for folder in reversed(path.parents):  # from / down
            if folder == _TMP or _TMP in folder.parents:
                break  # bound into the sandbox's own /tmp, made traversable there
            if not folder.stat().st_mode & 0o001:
                closed.add(folder)
                break
    return sorted(c for c in closed if not any(o in c.parents for o in closed))
