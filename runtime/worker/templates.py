"""Function templates: a process per function version, loaded once, that forks its workers.

The fork server (`worker.forkserver`) forks a template from itself when a request names
one it does not have; the template loads the function (`worker.prepared`: verified,
fetched, unpickled, sessions built, `setup` run) and then forks workers on request, as
the fork server does, each starting with the function in memory. Requests that arrive
while it loads wait for it; if it cannot be a template (`TemplateUnsafe`, a failing
`setup`, a newer deploy), they are forked the ordinary way and the failure is kept, so
that one broken function does not load twice per worker.

A template that is dropped (the provider keeps their memory within a budget) forks no
more and ends once its last worker has. A template's workers die with it (SIGTERM: they
drain); the fork server adopts them (`adopt_orphans`) and reports their exits. The
pipes: requests to the template on a descriptor of its own, reports back on another;
its stdin is /dev/null and its stdout goes to stderr, like a worker's, so that what
`setup` prints cannot break the protocol.
"""

from __future__ import annotations

import contextlib
import gc
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from runtime.core import die_with_parent, set_title
from runtime.worker.forks import fork_spare, order_spare
from runtime.worker.lines import LineLoop, emit, ended_children
from runtime.worker.prepared import Prepared, prepare

__all__ = ["Templates"]

Message = dict[str, Any]

SPARE_AFTER_S = 0.05


@dataclass
class _Template:
    key: str
    pid: int
    requests: int  # the fork server writes requests here
    reports: int  # and reads the template's reports here
    state: str = "building"  # ready, failed, closing
    waiting: list[Message] = field(default_factory=list)


class Templates:
    """The fork server's templates, by key."""

    def __init__(self, loop: LineLoop, fork_plain: Callable[[Message], None]) -> None:
        """`fork_plain(request)`: fork a request's worker from the fork server itself."""
        self._loop = loop
        self._fork_plain = fork_plain
        self._by_key: dict[str, _Template] = {}
        self._by_pid: dict[int, _Template] = {}

    def route(self, request: Message) -> None:
        """Fork `request`'s worker from its template: at once if it is ready, once it is
        built if it is being built (or now), and the ordinary way if it cannot be."""
        template = self.build(request["template"])
        if template.state == "ready":
            self._send(template, {**_worker_request(request), "template": "hit"})
        elif template.state == "building":
            template.waiting.append(request)
        else:
            self._fork_plain(request)

    def build(self, spec: Message) -> _Template:
        """The template `spec` names, started unless it is running or failed."""
        template = self._by_key.get(spec["key"])
        if template is None:
            template = self._by_key[spec["key"]] = self._start(spec)
            self._by_pid[template.pid] = template
        return template

    def drop(self, key: str) -> None:
        """Fork no more from `key`; it ends once its workers have."""
        template = self._by_key.pop(key, None)
        if template is None:
            return
        waiting, template.waiting = template.waiting, []
        if template.state != "failed":
            template.state = "closing"
            self._send(template, {"close": True})
        for request in waiting:
            self._fork_plain(request)

    def ended(self, pid: int, code: int) -> bool:
        """Whether `pid` was a template (its end is reported here)."""
        template = self._by_pid.pop(pid, None)
        if template is None:
            return False
        if self._by_key.get(template.key) is template and template.state != "failed":
            del self._by_key[template.key]  # a failed one is remembered: not built again
        with contextlib.suppress(OSError):
            os.close(template.requests)
        if template.reports >= 0:
            self._loop.forget(template.reports)
        waiting, template.waiting = template.waiting, []
        for request in waiting:
            self._fork_plain(request)
        emit({"template": template.key, "gone": code})
        return True

    def close_in_child(self) -> None:
        """In a child just forked: close the pipes to the templates."""
        for template in self._by_pid.values():
            with contextlib.suppress(OSError):
                os.close(template.requests)

    def _start(self, spec: Message) -> _Template:
        requests_out, requests_in = os.pipe()  # template reads, fork server writes
        reports_out, reports_in = os.pipe()  # fork server reads, template writes
        parent = os.getpid()
        gc.freeze()
        pid = os.fork()
        if pid == 0:
            die_with_parent(parent)
            self._loop.close_in_child()
            self.close_in_child()
            os.close(requests_in)
            os.close(reports_out)
            _template_main(spec, requests_out, reports_in)
        os.close(requests_out)
        os.close(reports_in)
        template = _Template(spec["key"], pid, requests_in, reports_out)
        self._loop.read_lines(
            reports_out, lambda m: self._report(template, m), lambda: self._closed(template)
        )
        return template

    def _closed(self, template: _Template) -> None:
        template.reports = -1  # closed by the loop: its number may be another pipe's soon

    def _report(self, template: _Template, message: Message) -> None:
        if "ready" in message and template.state == "building":
            template.state = "ready"
            waiting, template.waiting = template.waiting, []
            for request in waiting:
                self._send(template, {**_worker_request(request), "template": "built"})
        elif "failed" in message:
            template.state = "failed"
            waiting, template.waiting = template.waiting, []
            for request in waiting:
                self._fork_plain(request)
        emit(message)  # forks, exits and the template's state: the provider's to know

    def _send(self, template: _Template, message: Message) -> None:
        try:
            emit(message, template.requests)
        except OSError:  # it died: its end is reported when it is reaped
            if "id" in message:
                self._fork_plain(message)


def _worker_request(request: Message) -> Message:
    return {"id": request["id"], "argv": request["argv"], "env": request["env"]}


# -- the template process ------------------------------------------------------------------


def _template_main(spec: Message, requests: int, reports: int) -> None:
    code = 0
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # it ends with the fork server
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
        os.dup2(2, 1)  # what setup prints goes to stderr, as a worker's does
        set_title(f"autan template {spec['key']}")
        try:
            prepared = prepare(spec["argv"], spec["env"], spec["version"])
        except Exception as exc:
            emit({"template": spec["key"], "failed": f"{type(exc).__name__}: {exc}"}, reports)
            return
        emit({"template": spec["key"], "ready": os.getpid(), "memory_mb": _private_mb()}, reports)
        _serve(prepared, requests, reports)
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 70
    finally:
        os._exit(code)


def _serve(prepared: Prepared, requests: int, reports: int) -> None:
    """Fork workers on request until told to close, then live until the last one ends."""
    _Forker(prepared, requests, reports).loop.run()


class _Forker:
    """A template's loop. One child is kept forked ahead (`fork_spare`): a request hands
    it its order, and the next is forked once no request came for `SPARE_AFTER_S` (not at
    once: the worker just started needs the cores more), so that a worker's start seldom
    waits for a fork of this (large) process. A spare holds no connection, runs nothing."""

    def __init__(self, prepared: Prepared, requests: int, reports: int) -> None:
        self.prepared = prepared
        self.reports = reports
        self.children: set[int] = set()
        self.unused: set[int] = set()  # spares let go: their ends are nobody's business
        self.closing = False
        self.loop = LineLoop(on_child=self.reap)
        self.loop.read_lines(requests, self.on_request, self.close)  # end: fork server gone
        self.spare = self._ahead()  # its pid, and the pipe its order goes to

    def _release(self) -> None:
        self.loop.close_in_child()
        os.close(self.reports)

    def _ahead(self) -> tuple[int, int] | None:
        return None if self.closing else fork_spare(self._release, self.prepared)

    def on_request(self, request: Message) -> None:
        if "close" in request:
            self.close()
            return
        pid, orders = self.spare or fork_spare(self._release, self.prepared)
        self.spare = None
        order_spare(orders, request, str(request.get("template", "hit")))
        self.children.add(pid)
        emit({"id": request["id"], "pid": pid}, self.reports)
        self.loop.later(SPARE_AFTER_S, self._refill)

    def _refill(self) -> None:
        if self.spare is None:
            self.spare = self._ahead()

    def reap(self) -> None:
        for pid, code in ended_children():
            if self.spare is not None and pid == self.spare[0]:  # it died unused
                os.close(self.spare[1])
                self.spare = self._ahead()
            elif pid in self.unused:
                self.unused.discard(pid)
            else:
                self.children.discard(pid)
                emit({"exit": pid, "code": code}, self.reports)
        if self.closing and not self.children and not self.unused and self.spare is None:
            self.loop.stop()

    def close(self) -> None:
        self.closing = True
        if self.spare is not None:  # it exits when its pipe closes
            os.close(self.spare[1])
            self.unused.add(self.spare[0])
            self.spare = None
        self.reap()


def _private_mb() -> float:
    """What this process holds apart from the fork server it came from (MB)."""
    fields: dict[str, int] = {}
    with contextlib.suppress(OSError), open("/proc/self/smaps_rollup") as rollup:
        for line in rollup:
            name, _, rest = line.partition(":")
            if name in ("Private_Clean", "Private_Dirty"):
                fields[name] = int(rest.split()[0])
    return round(sum(fields.values()) / 1024, 1)
