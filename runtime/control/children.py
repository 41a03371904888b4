"""The processes a stack starts, recorded in its data dir, so that a restart stops what an
earlier run left running.

Children end with the stack (`core.lifeline`: SIGTERM when their parent dies), but
ending is not instant: a worker told so drains, and finishes a long call first, while
a new `autan up` on the same data dir would already start workers of its own (more than
`max_workers`, and two fork servers of one function). So each child the stack starts
directly (nats-server, fork servers, workers started without one) is a file
`<data_dir>/children/<pid>` with its kind and its start time (a pid the kernel gave
again to another process does not match it), removed once it has ended.

`autan up` and `autan serve` hold the data dir (`DataDirLock`: one stack per data dir),
then stop every recorded process still running (SIGTERM, SIGKILL after a grace) before
they start anything, and say which.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import time
from pathlib import Path
from typing import IO

import msgspec
import structlog

from runtime.core import StackError

__all__ = ["Children", "DataDirLock", "descendants"]

log = structlog.get_logger("autan")

_LEFTOVER_GRACE_S = 5.0


class _Record(msgspec.Struct, frozen=True):
    pid: int
    kind: str
    started: int  # clock ticks after boot (/proc/<pid>/stat, field 22)


class DataDirLock:
    """One running stack per data dir: held from start to exit (the kernel lets go of it
    when its holder dies, however it died)."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "stack.lock"
        self._file: IO[str] | None = None

    def acquire(self) -> None:
        """Hold it, or StackError naming the stack that does."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        file = self.path.open("a+")
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            file.seek(0)
            holder = file.read().strip() or "?"
            file.close()
            raise StackError(
                f"another 'autan up' or 'autan serve' (pid {holder}) runs on the data dir "
                f"{self.path.parent}: stop it, or give this one another --data-dir"
            ) from None
        file.seek(0)
        file.truncate()
        file.write(f"{os.getpid()}\n")
        file.flush()
        self._file = file

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing lets go of the lock
            self._file = None


class Children:
    """The record of the processes this stack started (see the module's docstring)."""

    def __init__(self, data_dir: Path) -> None:
        self.folder = data_dir / "children"

    def record(self, pid: int, kind: str) -> None:
        """Note a process just started (never fails: a record is a safety net)."""
        started = _start_ticks(pid)
        if started is None:
            return  # already gone
        record = _Record(pid=pid, kind=kind, started=started)
        try:
            self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            (self.folder / str(pid)).write_bytes(msgspec.json.encode(record))
        except OSError as exc:  # a full disk: the process runs all the same, unrecorded
            log.warning("cannot record a process the stack started", kind=kind, pid=pid,
                        error=str(exc))  # fmt: skip

    def forget(self, pid: int) -> None:
        with contextlib.suppress(OSError):
            (self.folder / str(pid)).unlink()

    def stop_leftovers(self, grace_s: float = _LEFTOVER_GRACE_S) -> list[str]:
        """Stop every recorded process that still runs (it was left by an earlier run:
        hold the `DataDirLock` first); returns what was stopped, as 'kind pid N'."""
        running = [r for r in self._records() if _start_ticks(r.pid) == r.started]
        for record in running:
            log.warning("stopping a process an earlier run left", kind=record.kind,
                        pid=record.pid)  # fmt: skip
            _signal(record.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        left = running
        while left and time.monotonic() < deadline:
            time.sleep(0.05)
            left = [r for r in left if _start_ticks(r.pid) == r.started]
        for record in left:
            log.warning("killing a process an earlier run left", kind=record.kind,
                        pid=record.pid)  # fmt: skip
            _signal(record.pid, signal.SIGKILL)
        for path in self.folder.glob("*"):
            path.unlink(missing_ok=True)
        return [f"{record.kind} pid {record.pid}" for record in running]

    def _records(self) -> list[_Record]:
        records = []
        for path in self.folder.glob("*"):
            try:
                records.append(msgspec.json.decode(path.read_bytes(), type=_Record))
            except (OSError, msgspec.DecodeError):
                path.unlink(missing_ok=True)  # not a record of ours: nothing to stop
        return records


def _start_ticks(pid: int) -> int | None:
    """When `pid` started (clock ticks after boot); None when no such process runs (a
    zombie has ended)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if fields[0] == "Z":
        return None
    return int(fields[19])


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def descendants(root: int) -> list[int]:
    """Every live process under `root`, children first (read from /proc)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                stat = (entry / "stat").read_text()
                parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found: list[int] = []
    frontier = [root]
    while frontier:
        children = [pid for pid, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found
