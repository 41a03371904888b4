"""The `autan` command as people type it: options anywhere, one line per error, exit codes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from runtime.core import Settings
from runtime.ops.cli import _parser

ROOT = Path(__file__).resolve().parent.parent


def _autan(*args: str, settings: Settings | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTAN_")}
    env["PYTHONPATH"] = str(ROOT)
    if settings is not None:
        env.update(settings.to_env())
    command = [sys.executable, "-m", "runtime.ops.cli", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(
    "argv",
    [
        ["--data-dir", "/x", "--nats-url", "nats://h:1", "dlq", "ls", "app.fn"],
        ["dlq", "ls", "app.fn", "--data-dir", "/x", "--nats-url", "nats://h:1"],
        ["--data-dir", "/y", "dlq", "ls", "app.fn", "--data-dir", "/x", "--nats-url", "nats://h:1"],
    ],
)
def test_global_options_go_before_or_after_the_command(argv: list[str]) -> None:
    args = _parser().parse_args(argv)
    assert (args.data_dir, args.nats_url, args.function) == (Path("/x"), "nats://h:1", "app.fn")


def _one_line(done: subprocess.CompletedProcess[str], code: int, says: str) -> None:
    assert done.returncode == code, done.stderr
    assert done.stderr.count("\n") == 1, done.stderr  # one line, no traceback
    assert says in done.stderr


def test_deploying_nothing_there_is_one_line(tmp_path: Path) -> None:
    _one_line(_autan("deploy", str(tmp_path / "nothere.py")), 1, "no such file or directory")
    _one_line(_autan("deploy", "no_such_module_anywhere"), 1, "no such file, directory or module")


@pytest.mark.usefixtures("stack")
def test_a_dead_letter_that_is_not_there_is_one_line(settings: Settings) -> None:
    _one_line(_autan("dlq", "show", "999999", settings=settings), 1, "'autan dlq ls' lists them")


@pytest.mark.usefixtures("stack")
def test_output_closed_early_ends_quietly(settings: Settings) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), **settings.to_env()}
    command = [sys.executable, "-m", "runtime.ops.cli", "ls"]
    reader, writer = os.pipe()
    os.close(reader)  # like `| head` that has read all it wanted
    done = subprocess.run(command, env=env, stdout=writer, capture_output=False,
                          stderr=subprocess.PIPE, text=True, timeout=60)  # fmt: skip
    os.close(writer)
    assert done.returncode == 141
    assert done.stderr == ""
