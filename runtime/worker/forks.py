"""A worker forked from the fork server or from a template: the child's side of the fork."""

from __future__ import annotations

import gc
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from runtime.core import die_with_parent

if TYPE_CHECKING:
    from runtime.worker.prepared import Prepared

__all__ = ["fork_worker"]


def fork_worker(
    request: dict[str, Any],
    release: Callable[[], None],
    prepared: Prepared | None = None,
    template: str = "",
) -> int:
    """Fork a worker for `request` (its argv and environment); its pid. `release()` lets
    go, in the child, of what the parent holds (its loop's descriptors). `prepared`: the
    function as a template loaded it; `template`: "hit" (it was ready) or "built" (the
    worker waited for it)."""
    parent = os.getpid()
    gc.freeze()  # the child's collections leave what it inherits alone: no copy on write
    pid = os.fork()
    if pid == 0:
        die_with_parent(parent)  # a worker never outlives what forked it
        _child(request["argv"], request["env"], release, prepared, template)
    return pid


def _child(
    argv: list[str],
    env: dict[str, str],
    release: Callable[[], None],
    prepared: Prepared | None,
    template: str,
) -> None:
    code = 70
    try:
        forked_unix_s = time.time()
        release()
        signal.signal(signal.SIGINT, signal.default_int_handler)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
        os.dup2(2, 1)  # stdout is a protocol pipe: the child writes to stderr
        os.environ.clear()
        os.environ.update(env)
        from runtime.worker.main import main as worker_main

        code = worker_main(argv, forked_unix_s=forked_unix_s, prepared=prepared, template=template)
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
