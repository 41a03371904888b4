"""What the CLI's commands do, with settings already parsed."""

from __future__ import annotations

import os
import signal
from typing import Any

import anyio
import msgspec
import structlog

from broker import CONFIG_BUCKET, Broker, StreamLimits
from runtime.deploy import DeployResult, deploy_app, discover_apps
from runtime.embedded import NatsServer
from runtime.provider import LocalProvider
from runtime.session import Session, storage_url
from runtime.settings import Settings
from runtime.workers import WorkerDirectory
from storage import ArtifactStore

__all__ = ["deploy", "invoke", "ls", "serve", "up", "worker"]

log = structlog.get_logger("autan")


async def deploy(settings: Settings, target: str) -> int:
    session = await Session.open(settings, name="autan-deploy")
    try:
        results = await deploy_target(session, settings, target)
    finally:
        await session.close()
    for result in results:
        state = "deployed" if result.changed else "unchanged"
        print(f"{result.qualname}  {result.version}  {state}  {result.uploaded_bytes} bytes sent")
    return 0


async def deploy_target(session: Session, settings: Settings, target: str) -> list[DeployResult]:
    await session.broker.ensure_calls_stream(StreamLimits())
    artifacts = ArtifactStore(await session.store())
    key = settings.signing_key_bytes(create=True)
    results = []
    for app in discover_apps(target):
        results += await deploy_app(
            app, broker=session.broker, artifacts=artifacts, signing_key=key
        )
    return results


async def invoke(settings: Settings, qualname: str, value: Any, kwargs: dict[str, Any]) -> Any:
    app, fn = _split(qualname)
    session = await Session.open(settings, name="autan-invoke")
    try:
        return await session.call(app, fn, (value,), kwargs)
    finally:
        await session.close()


async def ls(settings: Settings) -> int:
    session = await Session.open(settings, name="autan-ls")
    try:
        specs = await session.registry.all()
        workers = await WorkerDirectory.open(session.broker)
        alive = await workers.alive()
        print(f"{'FUNCTION':<24} {'VERSION':<18} {'WORKERS':>7} {'BACKLOG':>7}  PROVIDERS")
        for spec in sorted(specs, key=lambda s: s.qualname):
            backlog = await session.broker.backlog(spec.app, spec.name)
            mine = [w for w in alive if w.function == spec.qualname]
            providers = sorted({p for w in mine for p in w.providers})
            print(
                f"{spec.qualname:<24} {spec.version:<18} {len(mine):>7} {backlog.total:>7}  "
                f"{','.join(providers) or '-'}"
            )
        if not specs:
            print("nothing deployed: run 'autan deploy PATH' (or 'autan up')")
    finally:
        await session.close()
    return 0


async def worker(settings: Settings, qualname: str, *, threads: int, device: int) -> int:
    from runtime.worker import Worker

    app, fn = _split(qualname)
    serving = Worker(settings, app, fn, device_id=device, intra_op_threads=threads)
    async with anyio.create_task_group() as group:
        group.start_soon(_stop_on_signal, serving.stop)
        await serving.serve()
        group.cancel_scope.cancel()
    return serving.exit_code


async def up(settings: Settings, *, nats_port: int, target: str) -> int:
    """The embedded stack: nats-server, file storage, bundled functions, one worker each."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    server = NatsServer(settings.data_dir / "nats", port=nats_port)
    server.start()
    settings = msgspec.structs.replace(
        settings,
        nats_url=server.url,
        storage_url=settings.storage_url or settings.default_storage_url(),
    )
    try:
        return await _serve_stack(settings, target)
    finally:
        server.stop()
        log.info("stopped; data kept", data_dir=str(settings.data_dir.resolve()))


async def serve(settings: Settings, *, target: str) -> int:
    """`up` without the embedded server: deploy and run workers against existing NATS/storage."""
    return await _serve_stack(settings, target)


async def _serve_stack(settings: Settings, target: str) -> int:
    session = await Session.open(settings, name="autan-up")
    try:
        await session.broker.ensure_calls_stream(StreamLimits())
        await _record_storage(session.broker, settings)
        results = await deploy_target(session, settings, target)
    finally:
        await session.close()
    provider = LocalProvider(settings)
    threads = max(1, (os.cpu_count() or 1) // max(1, len(results)))
    log.info("autan is up", nats=settings.nats_url, storage=settings.storage_url,
             functions=[f"{r.qualname}@{r.version}" for r in results])  # fmt: skip
    async with anyio.create_task_group() as group:
        for result in results:
            await group.start(_keep, provider, result.qualname, threads)
        await _wait_for_signal()
        group.cancel_scope.cancel()
    return 0


async def _keep(provider: LocalProvider, qualname: str, threads: int, *, task_status: Any) -> None:
    await provider.keep_running(qualname, threads=threads, task_status=task_status)


async def _record_storage(broker: Broker, settings: Settings) -> None:
    bucket = await broker.bucket(CONFIG_BUCKET)
    await bucket.put("storage_url", (await storage_url(broker, settings)).encode())


async def _wait_for_signal() -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            return


async def _stop_on_signal(stop: Any) -> None:
    await _wait_for_signal()
    stop()


def _split(qualname: str) -> tuple[str, str]:
    app, sep, fn = qualname.partition(".")
    if not sep or not app or not fn:
        raise ValueError(f"name the function as APP.FN (e.g. demo.embed), got {qualname!r}")
    return app, fn
