"""What the CLI's commands do, with settings already parsed."""

from __future__ import annotations

import resource
import signal
import time
from typing import Any

import anyio
import msgspec
import structlog

from broker import CONFIG_BUCKET, Broker, ConsumerPolicy, StreamLimits
from runtime.deadletters import DeadLetters, Letter
from runtime.deploy import DeployResult, deploy_app, discover_apps
from runtime.embedded import NatsServer
from runtime.metrics import ScalerMetrics
from runtime.provider import LocalProvider
from runtime.scaler import STATUS_BUCKET, FunctionStatus, Scaler
from runtime.session import Session, storage_url
from runtime.settings import Settings
from runtime.worker import Boot, Worker
from runtime.workers import function_states
from storage import ArtifactStore

__all__ = [
    "Http",
    "deploy",
    "dlq",
    "gateway",
    "invoke",
    "ls",
    "replay",
    "serve",
    "status",
    "up",
    "worker",
]

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
    await session.broker.ensure_calls_stream(_limits(settings))
    artifacts = ArtifactStore(await session.store())
    key = settings.signing_key_bytes(create=True)
    results = []
    for app in discover_apps(target):
        results += await deploy_app(
            app,
            broker=session.broker,
            artifacts=artifacts,
            signing_key=key,
            consumer=ConsumerPolicy(ack_wait_s=settings.ack_wait_s),
        )
    return results


async def invoke(settings: Settings, qualname: str, value: Any, kwargs: dict[str, Any]) -> Any:
    app, fn = _split(qualname)
    session = await Session.open(settings, name="autan-invoke")
    try:
        return await session.call(app, fn, (value,), kwargs)
    finally:
        await session.close()


async def replay(
    settings: Settings, qualname: str, *, since_s: float | None, from_seq: int | None
) -> int:
    """Deliver the past events of a trigger again (at least once, from the given point)."""
    app, fn = _split(qualname)
    session = await Session.open(settings, name="autan-replay")
    try:
        spec = await session.registry.get(app, fn, cached=False)
        if spec.trigger is None:
            raise ValueError(f"{qualname} has no trigger (on=...): nothing to replay")
        await session.broker.replay(spec.trigger, since_s=since_s, from_seq=from_seq)
    finally:
        await session.close()
    start = f"sequence {from_seq}" if from_seq is not None else f"the last {since_s:g} s"
    print(f"{qualname}: events of {spec.trigger.stream} from {start} will be delivered again")
    return 0


async def dlq(settings: Settings, command: str, args: Any) -> int:
    """`autan dlq ls|show|redrive|purge`."""
    session = await Session.open(settings, name="autan-dlq")
    try:
        letters = DeadLetters(session.broker)
        match command:
            case "ls":
                print(_letters_table(await letters.list(*_optional_split(args.function))))
            case "show":
                letter = await letters.find(args.ref)
                print(msgspec.json.format(msgspec.json.encode(_shown(letter)), indent=2).decode())
            case "redrive":
                for letter in await _to_redrive(letters, args.ref):
                    new_id = await letters.redrive(letter)
                    print(f"{letter.letter.call_id} -> {new_id}  ({letter.letter.app}."
                          f"{letter.letter.fn}, was {letter.letter.reason})")  # fmt: skip
            case "purge":
                count = await letters.purge(*_optional_split(args.function))
                print(f"purged {count} dead letter(s)")
    finally:
        await session.close()
    return 0


async def _to_redrive(letters: DeadLetters, ref: str) -> list[Letter]:
    if ref == "all":
        return await letters.list()
    if "." in ref and not ref.isdigit():
        return await letters.list(*_split(ref))
    return [await letters.find(ref)]


def _optional_split(qualname: str | None) -> tuple[str | None, str | None]:
    return _split(qualname) if qualname else (None, None)


def _shown(letter: Letter) -> dict[str, Any]:
    dead = letter.letter
    return {
        "seq": letter.seq,
        "call_id": dead.call_id,
        "function": f"{dead.app}.{dead.fn}",
        "reason": dead.reason,
        "attempts": dead.attempts,
        "failed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(dead.failed_unix_s)),
        "worker": dead.worker,
        "error": {
            "type": dead.error.type,
            "message": dead.error.message,
            "traceback": dead.error.traceback,
        },
        "input_bytes": len(dead.call),
    }


def _letters_table(letters: list[Letter]) -> str:
    if not letters:
        return "no dead letters"
    lines = [f"{'SEQ':>5}  {'CALL ID':<24} {'FUNCTION':<20} {'REASON':<9} {'TRIES':>5}  ERROR"]
    for item in letters:
        dead = item.letter
        error = f"{dead.error.type}: {dead.error.message}"[:60]
        lines.append(
            f"{item.seq:>5}  {dead.call_id:<24} {dead.app + '.' + dead.fn:<20} "
            f"{dead.reason:<9} {dead.attempts:>5}  {error}"
        )
    return "\n".join(lines)


async def ls(settings: Settings) -> int:
    session = await Session.open(settings, name="autan-ls")
    try:
        states = await function_states(session.broker, await session.registry.all())
        print(f"{'FUNCTION':<24} {'VERSION':<18} {'WORKERS':>7} {'BACKLOG':>7}  PROVIDERS")
        for state in states:
            spec = state.spec
            backlog = "?" if state.backlog is None else str(state.backlog)
            providers = sorted({p for w in state.workers for p in w.providers})
            print(
                f"{spec.qualname:<24} {spec.version:<18} {len(state.workers):>7} {backlog:>7}  "
                f"{','.join(providers) or '-'}"
            )
        for state in states:
            if state.missing is not None:
                print(f"{state.spec.qualname}: {state.missing}")
        if not states:
            print("nothing deployed: run 'autan deploy PATH' (or 'autan up')")
    finally:
        await session.close()
    return 0


async def worker(
    settings: Settings,
    qualname: str,
    *,
    threads: int,
    device: int,
    boot: Boot,
    memory_mb: int | None = None,
) -> int:
    app, fn = _split(qualname)
    if memory_mb:
        # Address space, not resident memory: ONNX Runtime and thread stacks reserve some.
        limit = memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    serving = Worker(settings, app, fn, device_id=device, intra_op_threads=threads, boot=boot)
    async with anyio.create_task_group() as group:
        group.start_soon(_stop_on_signal, serving.stop)
        await serving.serve()
        group.cancel_scope.cancel()
    return serving.exit_code


class Http(msgspec.Struct, frozen=True):
    """The HTTP bridge to run beside the scaler (`--http-port`; port 0: none).

    `api_keys` and `config` are `runtime.gateway`'s ApiKeys and GatewayConfig, imported
    only where the bridge runs (starlette and uvicorn cost ~60 ms to import).
    """

    host: str = "127.0.0.1"
    port: int = 8000
    api_keys: Any = None
    config: Any = None


async def gateway(settings: Settings, http: Http) -> int:
    """The HTTP bridge alone, against the stack's NATS, until a signal."""
    async with anyio.create_task_group() as group:
        await group.start(_serve_http, settings, http)  # it logs where it listens
        await _wait_for_signal()
        group.cancel_scope.cancel()
    return 0


async def _serve_http(settings: Settings, http: Http, *, task_status: Any) -> None:
    from runtime.gateway import serve_gateway

    await serve_gateway(
        settings,
        host=http.host,
        port=http.port,
        api_keys=http.api_keys,
        config=http.config,
        task_status=task_status,
    )


async def up(
    settings: Settings, *, nats_port: int, target: str, metrics_port: int, http: Http
) -> int:
    """The embedded stack: nats-server, file storage, bundled functions, the scaler."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    server = NatsServer(settings.data_dir / "nats", port=nats_port)
    server.start()
    settings = msgspec.structs.replace(
        settings,
        nats_url=server.url,
        storage_url=settings.storage_url or settings.default_storage_url(),
    )
    try:
        return await serve(settings, target=target, metrics_port=metrics_port, http=http)
    finally:
        server.stop()
        log.info("stopped; data kept", data_dir=str(settings.data_dir.resolve()))


async def serve(settings: Settings, *, target: str, metrics_port: int, http: Http) -> int:
    """Deploy `target`, then scale its functions' workers on this host until a signal."""
    session = await Session.open(settings, name="autan-scaler")
    try:
        await _record_storage(session.broker, settings)
        results = await deploy_target(session, settings, target)
        metrics = ScalerMetrics()
        if metrics_port:
            metrics.serve_http(metrics_port)
        log.info("autan is up", nats=settings.nats_url, storage=settings.storage_url,
                 metrics_port=metrics_port or None,
                 functions=[f"{r.qualname}@{r.version}" for r in results])  # fmt: skip
        await _run_scaler(session, LocalProvider(settings), metrics, settings, http)
    finally:
        await session.close()
    return 0


async def _run_scaler(
    session: Session,
    provider: LocalProvider,
    metrics: ScalerMetrics,
    settings: Settings,
    http: Http,
) -> None:
    async with anyio.create_task_group() as group:
        await group.start(provider.serve)
        await group.start(Scaler(session.broker, provider, metrics=metrics).serve)
        if http.port:
            await group.start(_serve_http, settings, http)  # it logs where it listens
        await _wait_for_signal()
        group.cancel_scope.cancel()


async def status(settings: Settings) -> int:
    """Per function: backlog, oldest age, workers starting/idle/busy, the last decision."""
    session = await Session.open(settings, name="autan-status")
    try:
        bucket = await session.broker.bucket(STATUS_BUCKET)
        rows = [
            msgspec.json.decode(value, type=FunctionStatus)
            for value in (await bucket.values()).values()
        ]
    finally:
        await session.close()
    print(_status_table(rows))
    return 0


def _status_table(rows: list[FunctionStatus]) -> str:
    if not rows:
        return "no scaler has reported yet: is 'autan up' (or 'autan serve') running?"
    lines = [
        f"{'FUNCTION':<20} {'BACKLOG':>7} {'OLDEST':>7} {'START':>5} {'IDLE':>4} {'BUSY':>4} "
        f"{'WANT':>4}  LAST DECISION"
    ]
    now = time.time()
    for row in sorted(rows, key=lambda r: r.function):
        ago = f"{now - row.decided_unix_s:.0f} s ago" if row.decided_unix_s else "-"
        lines.append(
            f"{row.function:<20} {row.backlog:>7} {row.oldest_age_s:>6.1f}s {row.starting:>5} "
            f"{row.idle:>4} {row.busy:>4} {row.desired:>4}  {row.reason} ({ago})"
        )
    return "\n".join(lines)


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


def _limits(settings: Settings) -> StreamLimits:
    return StreamLimits(max_msgs=settings.max_queued_calls)


def _split(qualname: str) -> tuple[str, str]:
    app, sep, fn = qualname.partition(".")
    if not sep or not app or not fn:
        raise ValueError(f"name the function as APP.FN (e.g. demo.embed), got {qualname!r}")
    return app, fn
