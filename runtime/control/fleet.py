"""Workers on node agents: the `Provider` of a control plane that runs none itself.

`FleetProvider` reads every agent's `NodeReport` (`autan_nodes`: all of them at start,
then each write as the server routes it), places a new worker with `control.placement`,
and sends the chosen agent a `StartOrder` (a `StopOrder` to stop one). The scaler sees the
fleet as one provider: `max_workers` and `min_warm` hold fleet-wide, since one control
plane (the lease holder) decides for every host.

A worker this provider started counts at once, before its agent's next report. A node
whose reports stop for `lost_s` is lost: its workers are no longer counted (the scaler
starts replacements, placed elsewhere), their exit is reported as a kill, and the calls
they held come back from JetStream after the ack wait. A node that reports again later
does so under a new epoch, its old workers stopped by its agent.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import anyio
import msgspec
import structlog
from anyio.abc import TaskStatus

from broker import NODES_BUCKET, Broker, BrokerError, agent_subject
from runtime.control.environment import WorkerAccess
from runtime.control.nodes import (
    NODE_LOST_S,
    AgentAnswer,
    NodeReport,
    NodeWorker,
    Order,
    StartOrder,
    StopOrder,
)
from runtime.control.placement import NodeView, Placed, needs_of, place
from runtime.control.provider import Capacity, ProvidedWorker, StartBackoff
from runtime.core import FunctionSpec, StartRefused, WorkerInfo

__all__ = ["FleetProvider"]

log = structlog.get_logger("autan.fleet")

_PENDING_S = 10.0  # a start its node's reports never showed is forgotten after this
_ORDER_TIMEOUT_S = 15.0  # an agent may have to make a sandbox first
_EXITS_KEPT = 4096


class _Node:
    def __init__(self, report: NodeReport, seen_at: float) -> None:
        self.report = report
        self.seen_at = seen_at  # monotonic: when its last report arrived here


class FleetProvider:
    """Starts and stops workers through the agents of the fleet's nodes."""

    def __init__(
        self,
        broker: Broker,
        *,
        lease_revision: Callable[[], int] = lambda: 0,
        lost_s: float = NODE_LOST_S,
        access: WorkerAccess | None = None,
    ) -> None:
        """`lease_revision`: the lease this control plane holds, sent with each order so
        that agents refuse a deposed leader's. `access`: makes each function's NATS
        identity, whose seed the order names (agents on this machine: `autan up --agents`)."""
        self.broker = broker
        self.access = access
        self.lease_revision = lease_revision
        self.lost_s = lost_s
        self._nodes: dict[str, _Node] = {}
        self._pending: dict[str, tuple[str, NodeWorker, float]] = {}  # by worker id
        self._ready: set[str] = set()
        self._stopping: set[str] = set()
        self._exits: dict[str, int] = {}
        self._backoff = StartBackoff()
        self.unplaceable: dict[str, str] = {}  # why a function's last start found no node
        self._changed = anyio.Event()

    # -- lifetime ----------------------------------------------------------------------

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Follow the nodes until cancelled; the agents keep their workers (another
        control plane adopts them)."""
        bucket = await self.broker.bucket(NODES_BUCKET)
        following = await bucket.follow(self._on_report)
        try:
            now, wall = time.monotonic(), time.time()
            for name, value in (await bucket.values()).items():
                if name not in self._nodes and (report := _decode(value)) is not None:
                    # Adopted as it is, with the age it has (its own clock: stale ones expire).
                    self._nodes[name] = _Node(report, now - min(report.age_s(wall), self.lost_s))
            self._notify()
            task_status.started()
            while True:
                await anyio.sleep(0.1)
                self._expire()
        finally:
            with anyio.CancelScope(shield=True):
                await following.stop()

    def _on_report(self, name: str, value: bytes | None) -> None:
        report = _decode(value) if value is not None else None
        if report is None:
            self._lose(name, "its agent stopped")
            return
        node = self._nodes.get(name)
        if node is not None and node.report.epoch != report.epoch:
            self._lose(name, "its agent registered afresh")
        if node is not None and node.report.epoch == report.epoch:
            node.report, node.seen_at = report, time.monotonic()
        else:
            log.info("node joined", node=name, cores=report.cores, gpus=len(report.gpus))
            self._nodes[name] = _Node(report, time.monotonic())
        for worker_id, code in report.exits.items():
            self._exited(worker_id, code, node.report if node is not None else None)
        for worker in report.workers:
            self._pending.pop(worker.worker.worker_id, None)
        self._notify()

    def _expire(self) -> None:
        now = time.monotonic()
        for name, node in list(self._nodes.items()):
            if now - node.seen_at > self.lost_s:
                self._lose(name, f"no report for {self.lost_s:g} s")
        for worker_id, (_, _, at) in list(self._pending.items()):
            if now - at > _PENDING_S:
                del self._pending[worker_id]
                self._notify()

    def _lose(self, name: str, why: str) -> None:
        node = self._nodes.pop(name, None)
        if node is None:
            return
        lost = [w.worker.worker_id for w in node.report.workers]
        lost += [wid for wid, (where, _, _) in self._pending.items() if where == name]
        for worker_id in lost:
            self._pending.pop(worker_id, None)
            self._exited(worker_id, -9)
        log.warning("node lost; its workers are replaced elsewhere", node=name, reason=why,
                    workers=len(lost))  # fmt: skip
        self._notify()

    # -- the Provider protocol -------------------------------------------------------------

    def workers(self, function: str | None = None) -> list[ProvidedWorker]:
        seen = [
            worker
            for node in self._nodes.values()
            for worker in node.report.workers
            if worker.worker.worker_id not in self._exits
        ]
        seen += [worker for _, worker, _ in self._pending.values()]
        views = [self._view(w.worker) for w in seen]
        return sorted(
            (v for v in views if function in (None, v.function)),
            key=lambda v: v.started_unix_s,
        )

    def _view(self, worker: ProvidedWorker) -> ProvidedWorker:
        state = worker.state
        if worker.worker_id in self._stopping:
            state = "stopping"
        elif state == "starting" and worker.worker_id in self._ready:
            state = "ready"
        return worker if state == worker.state else msgspec.structs.replace(worker, state=state)

    def capacity(self) -> Capacity:
        reports = [node.report for node in self._nodes.values()]
        return Capacity(
            hosts=tuple(sorted(r.node for r in reports)),
            cores=sum(r.cores for r in reports),
            memory_mb=sum(r.memory_mb for r in reports),
            gpus=tuple(range(sum(len(r.gpus) for r in reports))),
            workers=len(self.workers()),
        )

    def prepare(self, spec: FunctionSpec) -> None:
        """Agents make a function's sandbox at its first start on their host."""

    async def start(self, spec: FunctionSpec) -> ProvidedWorker:
        placed = place(needs_of(spec.options), self._views(spec))
        if not isinstance(placed, Placed):
            self.unplaceable[spec.qualname] = placed.reason
            self._backoff.failed(spec.qualname)
            raise StartRefused(placed.reason)
        self.unplaceable.pop(spec.qualname, None)
        creds = await self.access.worker_creds(spec) if self.access is not None else None
        order = StartOrder(spec, placed.reserved, self.lease_revision(), str(creds or ""))
        answer = await self._send(placed.node, order)
        if answer.worker is None:
            self._backoff.failed(spec.qualname)
            raise StartRefused(answer.error or f"node {placed.node} started nothing")
        worker = answer.worker
        if self._node_of(worker.worker_id) is None:  # its node's report may have come first
            self._pending[worker.worker_id] = (
                placed.node,
                NodeWorker(worker=worker, reserved=placed.reserved),
                time.monotonic(),
            )
        self._notify()
        log.info("worker placed", function=spec.qualname, node=placed.node,
                 worker=worker.worker_id, devices=placed.reserved.devices)  # fmt: skip
        return worker

    async def stop(self, worker_id: str) -> None:
        node = self._node_of(worker_id)
        if node is None or worker_id in self._stopping:
            return
        self._stopping.add(worker_id)
        self._notify()
        try:
            await self._send(node, StopOrder(worker_id, self.lease_revision()))
        except StartRefused as exc:  # its node is going: the worker goes with it
            log.warning("cannot stop a worker", worker=worker_id, error=str(exc))

    async def exit_code(self, worker_id: str) -> int:
        while worker_id not in self._exits:
            if self._node_of(worker_id) is None:
                raise LookupError(f"no worker {worker_id!r} was started in the fleet")
            await self._wait_change()
        return self._exits[worker_id]

    def start_delay_s(self, function: str) -> float:
        return self._backoff.delay_s(function)

    def observe(self, info: WorkerInfo) -> ProvidedWorker | None:
        worker = next((w for w in self.workers() if w.worker_id == info.worker_id), None)
        if worker is None:
            return None
        if info.state == "ready" and info.worker_id not in self._ready:
            self._ready.add(info.worker_id)
            self._backoff.succeeded(info.function)
            self._notify()
        return self._view(worker)

    async def wait_until(
        self, done: Callable[[list[ProvidedWorker]], bool], timeout_s: float
    ) -> list[ProvidedWorker]:
        with anyio.fail_after(timeout_s):
            while not done(self.workers()):
                await self._wait_change()
        return self.workers()

    # -- helpers -----------------------------------------------------------------------

    def nodes(self) -> list[NodeReport]:
        """The live nodes' latest reports."""
        return [node.report for node in self._nodes.values()]

    def _views(self, spec: FunctionSpec) -> list[NodeView]:
        views = []
        for name, node in sorted(self._nodes.items()):
            held = [w for w in node.report.workers if w.worker.worker_id not in self._exits]
            held += [w for where, w, _ in self._pending.values() if where == name]
            views.append(
                NodeView(
                    name=name,
                    cores=node.report.cores,
                    memory_mb=node.report.memory_mb,
                    gpus=node.report.gpus,
                    reserved=tuple(w.reserved for w in held),
                    function_workers=sum(w.worker.function == spec.qualname for w in held),
                    caches_artifact=spec.artifact in node.report.cached,
                )
            )
        return views

    def _node_of(self, worker_id: str) -> str | None:
        if worker_id in self._pending:
            return self._pending[worker_id][0]
        for name, node in self._nodes.items():
            if any(w.worker.worker_id == worker_id for w in node.report.workers):
                return name
        return None

    async def _send(self, node: str, order: Order) -> AgentAnswer:
        try:
            data = await self.broker.request(
                agent_subject(node), msgspec.msgpack.encode(order), timeout_s=_ORDER_TIMEOUT_S
            )
        except BrokerError as exc:
            raise StartRefused(f"node {node} did not answer: {exc}") from exc
        return msgspec.msgpack.decode(data, type=AgentAnswer)

    def _exited(self, worker_id: str, code: int, before: NodeReport | None = None) -> None:
        """Note an exit once; one before its worker was ready, unasked, is a failed start."""
        if worker_id in self._exits:
            return
        self._exits[worker_id] = code
        while len(self._exits) > _EXITS_KEPT:
            del self._exits[next(iter(self._exits))]
        workers = before.workers if before is not None else ()
        was = next((w.worker for w in workers if w.worker.worker_id == worker_id), None)
        if was is None and worker_id in self._pending:  # it died before any report showed it
            was = self._pending[worker_id][1].worker
        asked = worker_id in self._ready | self._stopping
        if was is not None and not asked and was.state != "ready":
            self._backoff.failed(was.function)
        self._ready.discard(worker_id)
        self._stopping.discard(worker_id)

    async def _wait_change(self) -> None:
        with anyio.move_on_after(0.5):
            await self._changed.wait()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()


def _decode(value: bytes) -> NodeReport | None:
    try:
        return msgspec.msgpack.decode(value, type=NodeReport)
    except msgspec.DecodeError:
        log.warning("unreadable node report in autan_nodes; ignored")
        return None
