"""Which function templates a provider's fork servers hold, and which to let go.

A template (`runtime.worker.templates`) is a process per function version that has
loaded the function and forks its workers. Each costs memory (MiniLM's: its sessions
and tokenizer, ~100 MB): the book keeps what they hold within `budget_mb`, letting the
least recently used go first, and a function's templates of other versions go once a
new version starts. A template let go ends once its workers have.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import structlog
from anyio.abc import TaskGroup

from broker import worker_role
from runtime.control.environment import WorkerAccess, worker_env
from runtime.control.forking import ForkServer, ForkServers
from runtime.control.processes import launch_for
from runtime.control.sandbox import Sandbox
from runtime.core import FunctionSpec, Settings, WorkerLaunch

__all__ = ["ProviderTemplates", "TemplateBook", "template_key"]

log = structlog.get_logger("autan.provider")


# Keys name templates in logs: the digest of the secrets is keyed by this process's own
# random key, so that a log line gives no way to test a guess of a secret's value.
_KEY = os.urandom(32)


def template_key(spec: FunctionSpec, secrets: dict[str, str]) -> str:
    """What a template is built for: a version, as deployed (its sequence), with the
    secrets its `setup` saw (a secret set anew makes a new template)."""
    seen = hmac.new(_KEY, repr(sorted(secrets.items())).encode(), hashlib.sha256)
    return f"{spec.qualname}@{spec.version}#{spec.sequence}.{seen.hexdigest()[:12]}"


@dataclass
class _Entry:
    server: str  # the fork server holding it
    function: str
    memory_mb: float = 0.0
    state: str = "building"  # ready, failed
    used_unix_s: float = 0.0
    reason: str = ""


class TemplateBook:
    """The templates of every fork server, least recently used first."""

    def __init__(self, budget_mb: float) -> None:
        self.budget_mb = budget_mb
        self._entries: OrderedDict[str, _Entry] = OrderedDict()

    def use(self, key: str, server: str, function: str) -> list[tuple[str, str]]:
        """A worker is forked from `key` (built if it was not); what to drop, as
        (server, key): the function's templates of other versions."""
        entry = self._entries.get(key)
        if entry is None or entry.server != server:
            entry = self._entries[key] = _Entry(server, function)
        entry.used_unix_s = time.time()
        self._entries.move_to_end(key)
        stale = [
            (other.server, name)
            for name, other in self._entries.items()
            if other.function == function and name != key
        ]
        for _, name in stale:
            del self._entries[name]
        return stale

    def reported(self, server: str, key: str, message: dict[str, object]) -> list[tuple[str, str]]:
        """A fork server's report on a template; what to drop to keep within the budget."""
        entry = self._entries.get(key)
        if entry is None or entry.server != server:
            return []
        if "ready" in message:
            entry.state = "ready"
            entry.memory_mb = float(str(message.get("memory_mb", 0.0)))
        elif "failed" in message:
            entry.state, entry.reason = "failed", str(message["failed"])
        elif "gone" in message:
            if entry.state != "failed":  # a failed one stays: the fork server keeps it
                del self._entries[key]
            return []
        return self._over_budget(keep=key)

    def ready(self, key: str) -> bool:
        entry = self._entries.get(key)
        return entry is not None and entry.state == "ready"

    def failure(self, key: str) -> str:
        """Why the template of `key` could not be built ("" if it was, or is not known)."""
        entry = self._entries.get(key)
        return entry.reason if entry is not None else ""

    def server_gone(self, server: str) -> None:
        for key in [key for key, entry in self._entries.items() if entry.server == server]:
            del self._entries[key]

    def states(self) -> dict[str, str]:
        """Each template's state ("building", "ready", "failed"), least recently used first."""
        return {key: entry.state for key, entry in self._entries.items()}

    def held_mb(self) -> float:
        return sum(entry.memory_mb for entry in self._entries.values())

    def _over_budget(self, keep: str) -> list[tuple[str, str]]:
        dropped: list[tuple[str, str]] = []
        held = self.held_mb()
        for key, entry in list(self._entries.items()):  # least recently used first
            if held <= self.budget_mb:
                break
            if key != keep and entry.state == "ready":
                dropped.append((entry.server, key))
                held -= entry.memory_mb
                del self._entries[key]
        return dropped


class ProviderTemplates:
    """A local provider's templates: whether a function has one, what its fork server
    needs to build it, and what the book says to let go."""

    def __init__(
        self,
        settings: Settings,
        forks: ForkServers,
        *,
        access: WorkerAccess | None,
        isolate: bool,
        fork: bool,
        gpus: list[int],
    ) -> None:
        self.settings = settings
        self.book = TemplateBook(settings.template_memory_mb)
        self._forks = forks
        self._access = access
        self._isolate = isolate
        self._fork = fork
        self._gpus = gpus

    def applies(self, spec: FunctionSpec) -> bool:
        """Whether `spec`'s workers fork from a template: not on a GPU (a CUDA context does
        not survive a fork), so not when it may take one here."""
        gpu = spec.options.gpu
        return (
            self._fork
            and self.settings.templates != "off"
            and (not gpu or (gpu == "auto" and not self._gpus))
        )

    def request(
        self,
        spec: FunctionSpec,
        launch: WorkerLaunch,
        opened: dict[str, str],
        settings: Settings,
        creds: Path | None,
    ) -> dict[str, Any] | None:
        """What a fork server needs to build `spec`'s template: it loads as the worker
        `launch` would (`settings` and `creds` as that worker sees them, the function's
        secrets, which its `setup` may read), with one thread. None when it has none, or
        its template could not be built."""
        if not self.applies(spec):
            return None
        key = template_key(spec, opened)
        if self.book.failure(key):
            return None  # its workers load as before
        env = worker_env(settings, threads=1, device=None, creds=creds, secrets=opened,
                         isolated=self._isolate)  # fmt: skip
        argv = msgspec.structs.replace(launch, worker_id="", threads=1, spawned_unix_s=0.0)
        return {"key": key, "version": spec.version, "argv": argv.argv(), "env": env}

    async def build(
        self, spec: FunctionSpec, key: str, server: ForkServer, host: str, opened: dict[str, str]
    ) -> None:
        """Build `spec`'s template on `server` (named `key`) now (AUTAN_TEMPLATES=deploy)."""
        launch = launch_for(spec, self.settings, host, threads=1, fork=True,
                            isolate=self._isolate)  # fmt: skip
        creds = await self._access.worker_creds(spec) if self._access is not None else None
        settings = self.settings
        if self._isolate:  # its seed and settings, as the sandbox shows them
            sandbox = Sandbox(self.settings, worker_role(spec.app, spec.name))
            creds = sandbox.seed if creds or self.settings.nats_creds else None
            settings = sandbox.worker_settings()
        template = self.request(spec, launch, opened, settings, creds)
        if template is not None:
            await self.use(template, key, spec)
            await server.build_template(template)

    async def use(self, template: dict[str, Any], server: str, spec: FunctionSpec) -> bool:
        """A worker forks from `template` on `server`: the function's other versions go.
        Whether it is ready (else the fork waits for its build)."""
        for stale in self.book.use(template["key"], server, spec.qualname):
            await self.drop(*stale)
        return self.book.ready(template["key"])

    def reported(
        self, server: str, key: str, report: dict[str, Any], group: TaskGroup | None
    ) -> None:
        if "failed" in report:
            log.warning("function template refused; its workers load as before", template=key,
                        reason=report["failed"])  # fmt: skip
        elif "ready" in report:
            log.info("function template ready", template=key, memory_mb=report.get("memory_mb"))
        for stale in self.book.reported(server, key, report):
            if group is not None:
                group.start_soon(self.drop, *stale)

    async def drop(self, server: str, key: str) -> None:
        if (fork_server := self._forks.get(server)) is not None:
            await fork_server.drop_template(key)
