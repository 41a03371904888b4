"""A worker process's entry point: `python -m runtime.worker APP.FN --worker-id ...`.

The fork server's children and `autan worker` come here too. The command line is a
`WorkerLaunch` (what the provider asked for); the settings come from the environment
the provider gave (`Settings.to_env`), or, for `autan worker`, from the CLI.
"""

from __future__ import annotations

import os
import resource
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import anyio

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
from runtime.worker.network import through_gate
from runtime.worker.prepared import Prepared
from runtime.worker.worker import Boot, Worker

__all__ = ["main", "run"]


def main(
    argv: Sequence[str] | None = None,
    *,
    forked_unix_s: float = 0.0,
    prepared: Prepared | None = None,
    template: str = "",
) -> int:
    """Serve the function `argv` names until SIGTERM; the process's exit code. `prepared`:
    the function as the template this process was forked from loaded it (`template`:
    "hit" when it was ready, "built" when this worker waited for it)."""
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
        through_gate(Path(launch.gate), settings)
    boot = Boot(
        spawned_unix_s=launch.spawned_unix_s,
        forked_unix_s=forked_unix_s,
        main_unix_s=main_unix_s,
        template=template if prepared is not None else "",
        template_unix_s=prepared.ready_unix_s if prepared is not None else 0.0,
    )
    try:
        return int(anyio.run(run, settings, launch, boot, prepared))
    except KeyboardInterrupt:
        return 130
    except BaseException as exc:
        known = known_error(exc)
        if known is None:
            raise
        print(f"autan worker: {known}", file=sys.stderr)
        return 1


async def run(
    settings: Settings, launch: WorkerLaunch, boot: Boot, prepared: Prepared | None = None
) -> int:
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
        prepared=prepared,
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
