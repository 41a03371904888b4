"""What every long-running command does with its host: hold its data dir, choose isolation,
wait for JetStream and for a signal."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio
import structlog

from broker import Broker
from runtime.control import Children, DataDirLock, isolation_unavailable
from runtime.core import ADMIN, Settings, StackError

__all__ = [
    "claimed_data_dir",
    "isolation",
    "jetstream_ready",
    "private_data_dir",
    "wait_for_signal",
]

log = structlog.get_logger("autan")


@contextmanager
def claimed_data_dir(data_dir: Path) -> Iterator[Children]:
    """The data dir, held for this stack alone (StackError if another runs on it), with
    what an earlier run on it left running stopped."""
    lock = DataDirLock(data_dir)
    lock.acquire()
    try:
        children = Children(data_dir)
        if stopped := children.stop_leftovers():
            log.warning("stopped what an earlier run left running", processes=stopped)
        yield children
    finally:
        lock.release()


def private_data_dir(data_dir: Path) -> None:
    """Keys, credentials, stored payloads: the stack's user's alone."""
    data_dir.mkdir(parents=True, exist_ok=True)
    data_dir.chmod(0o700)


def isolation(*, unisolated: bool, required: bool) -> bool:
    """Whether workers run isolated: where possible, unless the operator says not."""
    why = "--unisolated" if unisolated else isolation_unavailable()
    if why is None:
        return True
    if required and not unisolated:
        raise StackError(
            f"workers cannot be isolated here: {why}. Install what is missing, or run "
            "'autan serve --unisolated' to run deployed code as this user, unconfined"
        )
    log.warning(
        "WORKERS RUN UNISOLATED: deployed code runs as this user, unconfined, and can "
        "read the data dir (deploy key, NATS credentials); deploy only code you trust",
        reason=why,
    )
    return False


async def jetstream_ready(settings: Settings, timeout_s: float = 60.0) -> None:
    """Until JetStream answers: a NATS cluster started beside the stack elects its leader
    in its first seconds."""
    broker = await Broker.connect(
        settings.nats_url, name="autan-probe", connect_timeout_s=settings.connect_timeout_s,
        creds=settings.creds_for(ADMIN), role=ADMIN, tls=settings.nats_tls(),
    )  # fmt: skip
    try:
        await broker.wait_for_jetstream(timeout_s)
    finally:
        await broker.close()


async def wait_for_signal() -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            return
