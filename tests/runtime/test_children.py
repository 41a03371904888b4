"""The stack's record of its processes, and its hold on the data dir."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from runtime.control import Children, DataDirLock
from runtime.core import StackError

_SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]


def test_a_recorded_process_left_running_is_stopped(tmp_path: Path) -> None:
    children = Children(tmp_path)
    left = subprocess.Popen(_SLEEPER)
    try:
        children.record(left.pid, "worker")
        assert children.stop_leftovers(grace_s=5) == [f"worker pid {left.pid}"]
        assert left.wait(timeout=5) != 0
        assert list(children.folder.iterdir()) == []
    finally:
        left.kill()


def test_one_that_ignores_sigterm_is_killed_after_the_grace(tmp_path: Path) -> None:
    stubborn = subprocess.Popen(
        [sys.executable, "-c", "import signal, sys, time; signal.signal(signal.SIGTERM, "
         "signal.SIG_IGN); print(flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert stubborn.stdout is not None
        stubborn.stdout.readline()  # SIGTERM is ignored from here
        Children(tmp_path).record(stubborn.pid, "fork server")
        assert Children(tmp_path).stop_leftovers(grace_s=0.3) == [f"fork server pid {stubborn.pid}"]
        assert stubborn.wait(timeout=5) == -9
    finally:
        stubborn.kill()
        stubborn.communicate()


def test_a_pid_given_to_another_process_is_left_alone(tmp_path: Path) -> None:
    """The record holds the process's start time: another process with the pid does not
    match it."""
    children = Children(tmp_path)
    other = subprocess.Popen(_SLEEPER)
    try:
        children.record(other.pid, "worker")
        path = children.folder / str(other.pid)
        record = msgspec.json.decode(path.read_bytes())
        path.write_bytes(msgspec.json.encode({**record, "started": record["started"] - 1}))
        assert children.stop_leftovers(grace_s=0.3) == []
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()


def test_an_ended_process_is_forgotten(tmp_path: Path) -> None:
    children = Children(tmp_path)
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    children.record(ended.pid, "worker")
    ended.wait()
    children.forget(ended.pid)
    assert children.stop_leftovers() == []


def test_one_stack_per_data_dir(tmp_path: Path) -> None:
    first = DataDirLock(tmp_path)
    first.acquire()
    try:
        with pytest.raises(StackError, match=r"another 'autan up' or 'autan serve' \(pid \d+\)"):
            DataDirLock(tmp_path).acquire()
    finally:
        first.release()
    again = DataDirLock(tmp_path)  # let go of: a restart takes it
    again.acquire()
    again.release()
