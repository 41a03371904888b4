"""A node agent: runs workers on its host when the leading control plane asks.

One `autan agent` per host. It owns a `LocalProvider` (its fork server, sandboxes and
workers), reports the host to `autan_nodes` (`control.nodes.NodeReport`) every
`REPORT_EVERY_S` and at once when a worker starts, becomes ready or exits, and answers
orders on `autan.agent.<node>`. Orders carry the lease revision of the control plane that
sent them; one older than the highest seen comes from a deposed leader and is refused.

An agent that could not report for `lost_s` (NATS away, or the process stopped and
continued) has been declared lost, and its calls delivered again elsewhere: it stops its
own workers and registers afresh under a new epoch, so no host serves on after its loss.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import time
from pathlib import Path

import anyio
import msgspec
import structlog
from anyio.abc import TaskStatus

from broker import NODES_BUCKET, BrokerError, Bucket, Watch, agent_subject
from runtime.control.local import LocalProvider
from runtime.control.nodes import (
    NODE_LOST_S,
    REPORT_EVERY_S,
    AgentAnswer,
    Gpu,
    NodeReport,
    NodeWorker,
    Order,
    Reservation,
    StartOrder,
    StopOrder,
)
from runtime.core import FunctionSpec, Link, StartRefused, WorkerDirectory

__all__ = ["Agent", "OrderedIdentities"]

log = structlog.get_logger("autan.node")

_EXITS_REPORTED = 64
_CACHED_REPORTED = 256
_PREPARE_EVERY_S = 2.0
_CACHED_EVERY_S = 10.0


class Agent:
    """Starts and stops this host's workers on orders, and reports the host."""

    def __init__(
        self,
        link: Link,
        provider: LocalProvider,
        *,
        node: str,
        gpus: tuple[Gpu, ...],
        lost_s: float = NODE_LOST_S,
        report_every_s: float = REPORT_EVERY_S,
        identities: OrderedIdentities | None = None,
    ) -> None:
        """`identities`: each function's workers run as the NATS identity its orders name,
        and only so (an embedded stack's agents); the provider must take them as its
        access. Without, workers connect as the agent does."""
        self.link = link
        self.identities = identities
        self.provider = provider
        self.node = node
        self.gpus = gpus
        self.lost_s = lost_s
        self.report_every_s = report_every_s
        self._epoch = secrets.token_hex(4)
        self._seq = 0
        self._reported_at = time.monotonic()  # when a report last reached NATS
        self._reserved: dict[str, Reservation] = {}
        self._exits: dict[str, int] = {}
        self._highest_lease = 0
        self._wake = anyio.Event()
        self._bucket: Bucket | None = None
        self._cached: tuple[str, ...] = ()
        self._cached_at = float("-inf")  # the cache folders are read at most every 10 s

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        broker = self.link.broker
        identities = self.identities
        self._bucket = await broker.bucket(NODES_BUCKET)
        directory = await WorkerDirectory.open(broker)
        orders: Watch | None = None
        try:
            async with anyio.create_task_group() as group:
                await group.start(self.provider.serve)
                group.start_soon(self._follow_workers, directory)
                if identities is None:  # a sandbox is made with its function's identity
                    group.start_soon(self._prepare_functions)
                await self._report()
                orders = await broker.answer(agent_subject(self.node), self._answer)
                group.start_soon(self._keep_reporting)
                log.info("agent is up", node=self.node, cores=self.provider.cores,
                         gpus=len(self.gpus), isolated=self.provider.isolate)  # fmt: skip
                task_status.started()
                await anyio.sleep_forever()
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(2.0):
                if orders is not None:
                    await orders.stop()
                # If NATS is away, the control plane declares it lost after the bound.
                with contextlib.suppress(BrokerError):
                    await self._bucket.delete(self.node)

    # -- orders --------------------------------------------------------------------------

    async def _answer(self, data: bytes) -> bytes:
        try:
            order = msgspec.msgpack.decode(data, type=Order)
        except msgspec.DecodeError as exc:
            return _encode(AgentAnswer(error=f"not an order: {exc}"))
        if order.lease_revision < self._highest_lease:
            return _encode(
                AgentAnswer(error="refused: sent by a control plane that no longer leads")
            )
        self._highest_lease = order.lease_revision
        if isinstance(order, StopOrder):
            await self.provider.stop(order.worker_id)
            self._changed()
            return _encode(AgentAnswer())
        return _encode(await self._start(order))

    async def _start(self, order: StartOrder) -> AgentAnswer:
        if time.monotonic() - self._reported_at > self.lost_s:
            return AgentAnswer(error=f"node {self.node} cannot report to NATS; start elsewhere")
        if self.identities is not None:
            if not order.creds:
                return AgentAnswer(error="this agent runs workers as their own identity only")
            self.identities.seeds[order.spec.qualname] = Path(order.creds)
        try:
            worker = await self.provider.start(order.spec, devices=order.reserved.devices)
        except StartRefused as exc:
            return AgentAnswer(error=str(exc), refused=True)
        except Exception as exc:  # the control plane backs off and places again
            log.exception("cannot start a worker", function=order.spec.qualname)
            return AgentAnswer(error=f"cannot start a worker on {self.node}: {exc}")
        self._reserved[worker.worker_id] = order.reserved
        self._changed()
        return AgentAnswer(worker=worker)

    # -- reports -------------------------------------------------------------------------

    async def _follow_workers(self, directory: WorkerDirectory) -> None:
        async for info in directory.announcements():
            if self.provider.observe(info) is not None:
                self._changed()

    async def _prepare_functions(self) -> None:
        """Each deployed function's sandbox made ahead of its first worker here, as the
        control plane does for its own host when it learns of a function."""
        prepared: dict[str, str] = {}
        while True:
            try:
                specs = await self.link.registry.all()
            except BrokerError:
                specs = []
            for spec in specs:
                if prepared.get(spec.qualname) != spec.version:
                    prepared[spec.qualname] = spec.version
                    self.provider.prepare(spec)
            await anyio.sleep(_PREPARE_EVERY_S)

    def _changed(self) -> None:
        self._wake.set()

    async def _keep_reporting(self) -> None:
        while True:
            with anyio.move_on_after(self.report_every_s):
                await self._wake.wait()
            self._wake = anyio.Event()
            if time.monotonic() - self._reported_at > self.lost_s:
                await self._fence()
            try:
                await self._report()
            except BrokerError as exc:
                log.warning("cannot report this node", node=self.node, error=str(exc))

    async def _fence(self) -> None:
        """Lost for longer than the bound: the fleet has replaced these workers."""
        away_s = time.monotonic() - self._reported_at
        log.error("this node was lost (no report for the bound); stopping its workers",
                  node=self.node, away_s=round(away_s, 1))  # fmt: skip
        for worker in self.provider.workers():
            await self.provider.stop(worker.worker_id)
        self._epoch = secrets.token_hex(4)

    def _cached_now(self) -> tuple[str, ...]:
        """What the caches hold, read again at most every `_CACHED_EVERY_S` (a report goes
        out twice a second; a placement preference need not be fresher)."""
        if time.monotonic() - self._cached_at > _CACHED_EVERY_S:
            self._cached = _cached_digests(self.link.settings.data_dir)
            self._cached_at = time.monotonic()
        return self._cached

    async def _report(self) -> None:
        workers = self.provider.workers()
        live = {worker.worker_id for worker in workers}
        for worker_id in [w for w in self._reserved if w not in live]:
            del self._reserved[worker_id]
            self._exits[worker_id] = await self.provider.exit_code(worker_id)
        while len(self._exits) > _EXITS_REPORTED:
            del self._exits[next(iter(self._exits))]
        self._seq += 1
        report = NodeReport(
            node=self.node,
            host=socket.gethostname(),
            pid=os.getpid(),
            epoch=self._epoch,
            seq=self._seq,
            sent_unix_s=time.time(),
            cores=self.provider.cores,
            memory_mb=self.provider.capacity().memory_mb,
            gpus=self.gpus,
            isolated=self.provider.isolate,
            workers=tuple(
                NodeWorker(worker=w, reserved=self._reserved.get(w.worker_id, Reservation()))
                for w in workers
            ),
            exits=dict(self._exits),
            cached=self._cached_now(),
        )
        assert self._bucket is not None
        await self._bucket.put(self.node, msgspec.msgpack.encode(report))
        self._reported_at = time.monotonic()


class OrderedIdentities:
    """The NATS identity of each function's workers, as the control plane's orders name it
    (a `WorkerAccess` for the agent's provider)."""

    def __init__(self) -> None:
        self.seeds: dict[str, Path] = {}

    async def worker_creds(self, spec: FunctionSpec) -> Path:
        try:
            return self.seeds[spec.qualname]
        except KeyError:
            raise StartRefused(f"no NATS identity ordered for {spec.qualname}") from None


def _encode(answer: AgentAnswer) -> bytes:
    return msgspec.msgpack.encode(answer)


def _cached_digests(data_dir: Path) -> tuple[str, ...]:
    """Digests of the artifacts and models this host's caches hold, newest first."""
    found: list[tuple[float, str]] = []
    for folder in [data_dir / "cache" / "sha256", *data_dir.glob("sandboxes/*/cache/sha256")]:
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        found += [(entry.stat().st_mtime, entry.name) for entry in entries if entry.is_file()]
    newest = sorted(found, reverse=True)[:_CACHED_REPORTED]
    return tuple(dict.fromkeys(name for _, name in newest))
