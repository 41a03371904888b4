"""A worker process's entry point: `python -m runtime.worker APP.FN --worker-id ...`.

The fork server's children and `autan worker` come here too. The command line is a
`WorkerLaunch` (what the provider asked for); the settings come from the environment
the provider gave (`Settings.to_env`), or, for `autan worker`, from the CLI.
"""

from __future__ import annotations

import os

os.environ["ORT_DISABLE_TELEMETRY"] = "1"

import resource
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import anyio

from broker import dial, route_nats_through
from runtime.core import (
    Settings,
    WorkerLaunch,
    configure_logging,
    die_with_parent,
    known_error,
    set_title,
    split_qualname,
)
from runtime.worker.logship import LogShipper
from runtime.worker.worker import Boot, Worker

__all__ = ["main", "run"]


def main(argv: Sequence[str] | None = None, *, forked_unix_s: float = 0.0) -> int:
    """Serve the function `argv` names until SIGTERM; the process's exit code."""
    main_unix_s = time.time()  # after the imports: a forked worker has them already
    launch = WorkerLaunch.from_argv(sys.argv[1:] if argv is None else argv)
    set_title(f"autan worker {launch.function}")
    if launch.parent_pid:
        die_with_parent(launch.parent_pid)
    try:
        settings = Settings.from_env()
    except ValueError as exc:
        print(f"autan worker: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_format, settings.log_level)
    if launch.isolated:  # what user code finds in its environment: no settings of ours
        for name in [name for name in os.environ if Settings.reads(name)]:
            del os.environ[name]
    if launch.gate:
        _through_gate(Path(launch.gate), settings)
    boot = Boot(
        spawned_unix_s=launch.spawned_unix_s, forked_unix_s=forked_unix_s, main_unix_s=main_unix_s
    )
    try:
        return int(anyio.run(run, settings, launch, boot))
    except KeyboardInterrupt:
        return 130
    except BaseException as exc:
        known = known_error(exc)
        if known is None:
            raise
        print(f"autan worker: {known}", file=sys.stderr)
        return 1


def _through_gate(gate: Path, settings: Settings) -> None:
    """An isolated worker has no network: NATS and storage are dialed by its gate."""
    route_nats_through(gate)
    if (settings.storage_url or "").startswith("s3://"):
        from storage import route_s3_through

        route_s3_through(lambda host, port, timeout_s: dial(gate, host, port, timeout_s))


async def run(settings: Settings, launch: WorkerLaunch, boot: Boot) -> int:
    """Serve until SIGINT or SIGTERM: stop pulling, finish what runs, hand back the rest."""
    app, fn = split_qualname(launch.function)
    if launch.memory_mb:
        # Address space, not resident memory: ONNX Runtime and thread stacks reserve some.
        limit = launch.memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    logs = LogShipper(app, fn, launch.worker_id or f"{launch.node or 'worker'}-{os.getpid()}")
    logs.install()
    worker = Worker(
        settings,
        app,
        fn,
        logs=logs,
        worker_id=launch.worker_id,
        device_id=launch.device,
        intra_op_threads=launch.threads,
        boot=boot,
        guard_loop=True,
        min_sequence=launch.min_sequence,
        isolated=launch.isolated,
        node=launch.node,
    )
    async with anyio.create_task_group() as group:
        group.start_soon(_stop_on_signal, worker)
        await worker.serve()
        group.cancel_scope.cancel()
    return worker.exit_code


async def _stop_on_signal(worker: Worker) -> None:
    """The first SIGINT or SIGTERM drains the worker; later ones find it draining already
    (the receiver stays open: a second signal must not kill a call half way)."""
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            worker.stop()
