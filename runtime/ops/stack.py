"""The long-running commands: `autan up` (the embedded stack), `autan serve`, `autan gateway`.

`serve` deploys, then runs the scaler with the local provider, the HTTP bridge and the
metrics endpoint until a signal; `up` does the same around an embedded nats-server
and the filesystem store.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket

import anyio
import msgspec
import structlog
from anyio.abc import TaskStatus

from broker import (
    CONFIG_BUCKET,
    DEFAULT_MAX_QUEUED_BYTES,
    GATEWAY_CALLS_BUCKET,
    LEASES_BUCKET,
    REGISTRY_BUCKET,
    SECRETS_BUCKET,
    SEQUENCES_BUCKET,
    SPAWNED_BUCKET,
    STATUS_BUCKET,
    Identities,
)
from runtime.control import (
    LEASE_S,
    Children,
    EmbeddedAccess,
    FleetProvider,
    Lease,
    LeaseHolder,
    LocalProvider,
    NatsServer,
    PayloadSweeper,
    Provider,
    Scaler,
    ScalerMetrics,
    StackSecrets,
    StoreWatch,
    Undeliverable,
    WorkerAccess,
)
from runtime.core import (
    ADMIN,
    Link,
    PartReporter,
    SecretsKey,
    SecretStore,
    Settings,
    StackError,
    WorkerDirectory,
    instance_name,
    record_storage_url,
    record_trust,
    storage_problem,
)
from runtime.ops.deploy import deploy_target
from runtime.ops.fleet import LocalAgents
from runtime.ops.hosting import (
    claimed_data_dir,
    isolation,
    jetstream_ready,
    private_data_dir,
    wait_for_signal,
)

__all__ = ["gateway", "make_buckets", "serve", "up", "wait_for_signal"]

log = structlog.get_logger("autan")

_MIN_QUEUED_BYTES = 1 << 20
_MAX_LOCAL_AGENTS = 16


async def up(
    settings: Settings, *, nats_port: int, target: str, unisolated: bool = False, agents: int = 0
) -> int:
    """The embedded stack: nats-server, file storage, `target` deployed, the scaler.

    Workers run isolated where this machine allows it; where it does not, they run
    unisolated with a warning (`serve` refuses instead), or when `unisolated`. `agents`:
    that many node agents on this machine run the workers, placed as in a fleet.
    """
    if not 0 <= agents <= _MAX_LOCAL_AGENTS:
        raise StackError(f"--agents {agents}: run 1 to {_MAX_LOCAL_AGENTS} agents (0: none)")
    isolate = isolation(unisolated=unisolated, required=False)
    private_data_dir(settings.data_dir)
    with claimed_data_dir(settings.data_dir) as children:
        settings = _fit_to_disk(settings)
        access = EmbeddedAccess(Identities(settings.creds_dir))
        server = NatsServer(
            settings.data_dir / "nats",
            port=nats_port,
            authorization=access.authorization(),
            children=children,
        )
        server.start()
        access.attach(server)
        settings = msgspec.structs.replace(
            settings,
            nats_url=server.url,
            storage_url=settings.storage_url or settings.default_storage_url(),
        )
        try:
            return await _serve(
                settings, target=target, access=access, isolate=isolate, server=server,
                children=children, agents=agents,
            )  # fmt: skip
        finally:
            server.stop()
            log.info("stopped; data kept", data_dir=str(settings.data_dir.resolve()))


async def serve(
    settings: Settings, *, target: str, unisolated: bool = False, fleet: bool = False
) -> int:
    """Deploy `target`, then scale its functions' workers on this host until a signal.

    Workers connect as this process does (an external NATS with its own users), each
    function's in a sandbox of its own: `StackError` where none can be had, unless
    `unisolated`. `fleet`: run no worker here; place them on node agents (`autan agent`).
    """
    isolate = False if fleet else isolation(unisolated=unisolated, required=True)
    private_data_dir(settings.data_dir)
    with claimed_data_dir(settings.data_dir) as children:
        return await _serve(
            settings, target=target, access=None, isolate=isolate, children=children,
            fleet=fleet,
        )  # fmt: skip


def _fit_to_disk(settings: Settings) -> Settings:
    """The calls stream's reservation, lowered to a quarter of the data dir's free disk
    when that is less than the default (unless AUTAN_MAX_QUEUED_BYTES says)."""
    if settings.max_queued_bytes is not None:
        return settings
    free = shutil.disk_usage(settings.data_dir).free
    if free // 4 >= DEFAULT_MAX_QUEUED_BYTES:
        return settings
    fitted = max(_MIN_QUEUED_BYTES, free // 4)
    logs = min(settings.logs_max_bytes, max(_MIN_QUEUED_BYTES, free // 16))
    log.warning("little free disk: the calls stream holds less", free_mib=free >> 20,
                max_queued_mib=fitted >> 20, logs_mib=logs >> 20,
                setting="AUTAN_MAX_QUEUED_BYTES")  # fmt: skip
    return msgspec.structs.replace(settings, max_queued_bytes=fitted, logs_max_bytes=logs)


async def _serve(
    settings: Settings,
    *,
    target: str,
    access: WorkerAccess | None,
    isolate: bool,
    server: NatsServer | None = None,
    children: Children | None = None,
    fleet: bool = False,
    agents: int = 0,
) -> int:
    """`fleet`: workers on node agents, none here; `agents`: that many on this machine.
    `access`: each function's workers get their own NATS identity (the embedded stack);
    `server`: the embedded nats-server, kept running (and writing) by this stack;
    `children`: where the processes it starts are recorded."""
    private_data_dir(settings.data_dir)
    settings.stack_keys()  # the deploy key and the trusted keys, made on first use
    secrets_key = SecretsKey.load_or_create(settings.secrets_key_path)
    await jetstream_ready(settings)
    async with await Link.open(settings, name="autan-scaler", role=ADMIN) as link:
        await record_storage_url(link.broker, settings)
        await record_trust(link.broker, settings.trust())
        await make_buckets(link)
        store = SecretStore(link.broker)
        await store.record_key(secrets_key)
        secrets = StackSecrets(store, secrets_key)
        local_agents = None
        if agents and children is not None:
            local_agents = LocalAgents(settings, agents, unisolated=not isolate, children=children)
            local_agents.start()
        fleet = fleet or local_agents is not None
        provider: Provider = (
            FleetProvider(link.broker, access=access if local_agents else None)
            if fleet
            else LocalProvider(
                settings, access=access, isolate=isolate, secrets=secrets, children=children
            )
        )
        try:
            await _deploy_and_run(link, provider, target, server, isolate=isolate, fleet=fleet)
        finally:
            if local_agents is not None:
                with anyio.CancelScope(shield=True):
                    await local_agents.stop()
    return 0


async def _deploy_and_run(
    link: Link,
    provider: Provider,
    target: str,
    server: NatsServer | None,
    *,
    isolate: bool,
    fleet: bool,
) -> None:
    settings = link.settings
    results = await deploy_target(link, target)
    metrics = ScalerMetrics()
    if settings.metrics_port:
        metrics.serve_http(settings.metrics_port)
    log.info("autan is up", nats=settings.nats_url, storage=settings.storage_url,
             isolated=isolate, workers="on node agents" if fleet else "on this host",
             metrics_port=settings.metrics_port or None,
             functions=[f"{r.qualname}@{r.version}" for r in results])  # fmt: skip
    await _run_scaler(link, provider, metrics, server)


async def make_buckets(link: Link) -> None:
    """Every bucket the stack's roles use, made here: they may read and write keys, and
    only the stack may make buckets."""
    await link.results()
    await WorkerDirectory.open(link.broker)
    for bucket in (CONFIG_BUCKET, STATUS_BUCKET, SEQUENCES_BUCKET, REGISTRY_BUCKET, SECRETS_BUCKET):
        await link.broker.bucket(bucket)
    await link.broker.bucket(LEASES_BUCKET, ttl_s=LEASE_S)
    for recorded in (GATEWAY_CALLS_BUCKET, SPAWNED_BUCKET):
        await link.broker.bucket(recorded, ttl_s=link.settings.result_ttl_s)


async def _run_scaler(
    link: Link,
    provider: Provider,
    metrics: ScalerMetrics,
    server: NatsServer | None,
) -> None:
    async with anyio.create_task_group() as group:
        if server is not None:
            group.start_soon(server.supervise)
            await group.start(StoreWatch(server).serve)
        await group.start(provider.serve)
        stack = f"{socket.gethostname()}:{link.settings.data_dir.resolve()}"
        lease = Lease(link.broker, LeaseHolder(stack=stack, pid=os.getpid()))
        if isinstance(provider, FleetProvider):  # its orders carry the lease: fenced
            provider.lease_revision = lambda: lease.revision
        group.start_soon(_lead, link, provider, metrics, lease)
        reporter = PartReporter(
            lambda: link.broker, "control", instance_name(_short_hash(stack)),
            where=lambda: f"{link.settings.nats_url}, {'leads' if lease.held else 'stands by'}",
            problem=lambda: storage_problem(link),
        )  # fmt: skip
        group.start_soon(reporter.serve)
        if link.settings.http.port:
            await group.start(_serve_http, link.settings)  # it logs where it listens
        await wait_for_signal()
        group.cancel_scope.cancel()


async def _lead(link: Link, provider: Provider, metrics: ScalerMetrics, lease: Lease) -> None:
    """Act for the whole stack while holding the lease: scale, dead-letter undeliverable
    calls, sweep payloads. On losing it, stand by again; once another control plane leads,
    stop this host's workers (the new leader counts only its own; agents' workers are
    the fleet's, which the new leader adopts)."""

    async def stop_workers() -> None:
        if isinstance(provider, FleetProvider):
            return
        log.warning("another control plane leads; stopping this host's workers")
        for worker in provider.workers():
            await provider.stop(worker.worker_id)

    try:
        while True:
            await lease.acquire(stop_workers)
            log.info("this control plane leads")
            async with anyio.create_task_group() as group:
                scaler = Scaler(link.broker, provider, metrics=metrics, trust=link.settings.trust())
                await group.start(scaler.serve)
                await group.start(Undeliverable(link).serve)
                await group.start(PayloadSweeper(link).serve)
                why = await lease.keep()
                group.cancel_scope.cancel()
            log.warning("this control plane no longer leads", reason=why)
    finally:
        with anyio.CancelScope(shield=True), anyio.move_on_after(2.0):
            await lease.release()


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:8]


async def gateway(settings: Settings) -> int:
    """The HTTP bridge alone, against the stack's NATS, until a signal."""
    async with anyio.create_task_group() as group:
        await group.start(_serve_http, settings)  # it logs where it listens
        await wait_for_signal()
        group.cancel_scope.cancel()
    return 0


async def _serve_http(
    settings: Settings, *, task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED
) -> None:
    # Imported here: starlette and uvicorn cost ~60 ms to import, for commands without HTTP.
    from runtime.gateway import serve_gateway

    await serve_gateway(settings, task_status=task_status)
