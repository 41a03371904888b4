"""A pre-initialised process that forks workers: imports done, ONNX Runtime loaded.

A fresh interpreter spends ~250 ms importing onnxruntime, numpy and the runtime
before it can serve; a fork of this process starts with all of it in memory.
It must not start threads or an event loop before forking (ONNX Runtime starts
its thread pools at session creation, not at import; the provider starts it with
OPENBLAS_NUM_THREADS=1 so that numpy's BLAS starts none), so it speaks a line
protocol on stdin/stdout with plain blocking I/O (`worker.lines`):

    -> {"id": 1, "argv": ["demo.echo", "--worker-id", "..."], "env": {...}}
    <- {"id": 1, "pid": 4242}
    <- {"exit": 4242, "code": 0}          (when a child ends; SIGCHLD)
    -> {"signal": 15, "pid": 4242}        (signal a child: in a sandbox, its pid is the
                                            sandbox's, which only the fork server knows)

Function templates (`worker.templates`): a request may name one,

    -> {"id": 2, "argv": [...], "env": {...},
        "template": {"key": "demo.embed@v1#3", "version": "v1", "argv": [...], "env": {...}}}

and the worker is forked from that template, which is built first if it is not
running (`{"template": {...}}` alone builds it, `{"drop": KEY}` lets it go). What
becomes of a template is reported:

    <- {"template": KEY, "ready": PID, "memory_mb": 140.5}
    <- {"template": KEY, "failed": "why"}   (its workers start as before)
    <- {"template": KEY, "gone": CODE}
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from typing import Any

from runtime.core import adopt_orphans, die_with_parent, set_title
from runtime.worker.forks import fork_worker
from runtime.worker.lines import LineLoop, emit, ended_children
from runtime.worker.templates import Templates

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
    adopt_orphans()  # a template's worker outlives its template: its exit is ours to report
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the provider decides when this ends
    loop = LineLoop(on_child=lambda: _reap(templates))
    templates = Templates(loop, lambda request: _spawn(request, loop, templates))
    loop.read_lines(0, lambda request: _request(request, loop, templates), loop.stop)
    emit({"ready": os.getpid()})
    loop.run()  # until the provider is gone


def _request(request: dict[str, Any], loop: LineLoop, templates: Templates) -> None:
    if "signal" in request:
        with contextlib.suppress(ProcessLookupError):
            if int(request["pid"]) > 0:  # never a process group
                os.kill(int(request["pid"]), int(request["signal"]))
    elif "drop" in request:
        templates.drop(str(request["drop"]))
    elif "id" not in request:
        templates.build(request["template"])
    elif "template" in request:
        templates.route(request)
    else:
        _spawn(request, loop, templates)


def _spawn(request: dict[str, Any], loop: LineLoop, templates: Templates) -> None:
    def release() -> None:
        loop.close_in_child()
        templates.close_in_child()

    pid = fork_worker(request, release)
    emit({"id": request["id"], "pid": pid})


def _reap(templates: Templates) -> None:
    for pid, code in ended_children():
        if not templates.ended(pid, code):
            emit({"exit": pid, "code": code})


if __name__ == "__main__":
    main()
