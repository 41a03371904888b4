"""A worker forked from the fork server or from a template: the child's side of the fork."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anyio

from runtime.core import die_with_parent

if TYPE_CHECKING:
    from runtime.worker.prepared import Prepared

__all__ = ["fork_spare", "fork_worker", "order_spare"]

_REHEARSAL_S = 0.5


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


def fork_spare(release: Callable[[], None], prepared: Prepared) -> tuple[int, int]:
    """A worker forked ahead of its order: blocked on a pipe, nothing running, until
    `order_spare` hands it its argv and environment (or the pipe closes: it exits). Its
    pid, and the pipe to write its order to."""
    orders_out, orders_in = os.pipe()
    parent = os.getpid()
    gc.freeze()
    pid = os.fork()
    if pid == 0:
        die_with_parent(parent)
        os.close(orders_in)
        release()
        _rehearse(prepared)
        order = _read_order(orders_out)
        if order is None:
            os._exit(0)  # not needed after all
        os.close(orders_out)
        _child(order["argv"], order["env"], lambda: None, prepared, str(order["template"]))
    os.close(orders_out)
    return pid, orders_in


def _rehearse(prepared: Prepared) -> None:
    """What a worker's start does first, done once ahead of the order: the pages it
    touches (interpreter state, code, an event loop's, a connection's) are copied now,
    not on its clock. The connection is closed at once (or given up after 0.5 s).

    Best effort, and nothing may escape it: this runs in the forked child on the
    template's own stack, so an exception would unwind through the template's frames (its
    handler prints and exits, and the template forks the next spare at once: a loop of
    forks for as long as NATS is away)."""
    with contextlib.suppress(Exception, asyncio.CancelledError):
        from runtime.core import Settings, configure_logging

        Settings.from_env()
        settings = prepared.settings
        configure_logging(settings.log_format, settings.log_level)
        anyio.run(_connect_once, prepared)


async def _connect_once(prepared: Prepared) -> None:
    from broker import Broker, worker_role

    settings, spec = prepared.settings, prepared.spec
    role = worker_role(spec.app, spec.name)
    with anyio.move_on_after(_REHEARSAL_S):
        broker = await Broker.connect(settings.nats_url, name="autan-spare",
                                      connect_timeout_s=_REHEARSAL_S,
                                      creds=settings.creds_for(role), role=role,
                                      tls=settings.nats_tls(), replicas=1)  # fmt: skip
        await broker.close()


def order_spare(orders: int, request: dict[str, Any], template: str) -> None:
    """Start the spare waiting on `orders` as the worker `request` describes."""
    order = {"argv": request["argv"], "env": request["env"], "template": template}
    data = json.dumps(order).encode() + b"\n"
    try:
        while data:
            data = data[os.write(orders, data) :]
    finally:
        os.close(orders)


def _read_order(orders: int) -> dict[str, Any] | None:
    data = b""
    while not data.endswith(b"\n"):
        chunk = os.read(orders, 65536)
        if not chunk:
            return None
        data += chunk
    order: dict[str, Any] = json.loads(data)
    return order


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
