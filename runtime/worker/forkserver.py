"""A pre-initialised process that forks workers: imports done, ONNX Runtime loaded.

A fresh interpreter spends ~250 ms importing onnxruntime, numpy and the runtime
before it can serve; a fork of this process starts with all of it in memory.
It must not start threads or an event loop before forking (ONNX Runtime starts
its thread pools at session creation, not at import; the provider starts it with
OPENBLAS_NUM_THREADS=1 so that numpy's BLAS starts none), so it speaks a line
protocol on stdin/stdout with plain blocking I/O:

    -> {"id": 1, "argv": ["demo.echo", "--worker-id", "..."], "env": {...}}
    <- {"id": 1, "pid": 4242}
    <- {"exit": 4242, "code": 0}          (when a child ends; SIGCHLD)
    -> {"signal": 15, "pid": 4242}        (signal a child: in a sandbox, its pid is the
                                            sandbox's, which only the fork server knows)
"""

from __future__ import annotations

import os

os.environ["ORT_DISABLE_TELEMETRY"] = "1"

import contextlib
import json
import selectors
import signal
import sys
import time
from typing import Any

from runtime.core import die_with_parent, set_title

__all__ = ["main", "preload"]


def preload() -> None:
    """Import what every worker needs, without starting anything."""
    import anyio._backends._asyncio  # noqa: F401  (anyio loads its backend on first run: ~20 ms)
    import cloudpickle  # noqa: F401
    import numpy  # noqa: F401
    import tokenizers  # noqa: F401

    import storage.s3  # noqa: F401
    from runtime.core import preload_onnxruntime
    from runtime.worker import main  # noqa: F401  (the worker's modules)

    preload_onnxruntime()


def main(argv: list[str] | None = None) -> None:
    """Serve fork requests until stdin closes; `--parent-pid PID`: end with that process."""
    args = argv if argv is not None else sys.argv[1:]
    if args[:1] == ["--parent-pid"]:
        die_with_parent(int(args[1]))
    preload()
    set_title("autan fork server")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the provider decides when this ends
    reader, writer = os.pipe()
    os.set_blocking(writer, False)
    signal.set_wakeup_fd(writer)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    _emit({"ready": os.getpid()})
    selector = selectors.DefaultSelector()
    selector.register(sys.stdin.fileno(), selectors.EVENT_READ, "request")
    selector.register(reader, selectors.EVENT_READ, "child")
    buffered = b""
    while True:
        for key, _ in selector.select():
            if key.data == "child":
                os.read(reader, 4096)
                _reap()
                continue
            chunk = os.read(sys.stdin.fileno(), 65536)
            if not chunk:
                return  # the provider is gone
            buffered += chunk
            *lines, buffered = buffered.split(b"\n")
            for line in lines:
                _request(json.loads(line))


def _request(request: dict[str, Any]) -> None:
    if "signal" in request:
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(request["pid"]), int(request["signal"]))
        return
    _spawn(request)


def _spawn(request: dict[str, Any]) -> None:
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:
        die_with_parent(parent)  # a worker never outlives the fork server
        _child(request["argv"], request["env"])
    _emit({"id": request["id"], "pid": pid})


def _child(argv: list[str], env: dict[str, str]) -> None:
    code = 70
    try:
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGCHLD, signal.SIGINT):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(2, 1)  # stdout is the protocol pipe: the child writes to stderr
        forked_unix_s = time.time()
        os.environ.clear()
        os.environ.update(env)
        from runtime.worker.main import main as worker_main

        code = worker_main(argv, forked_unix_s=forked_unix_s)
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _reap() -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        _emit({"exit": pid, "code": os.waitstatus_to_exitcode(status)})


def _emit(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
