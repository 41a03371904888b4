"""Stored payloads are deleted once nothing can need them any more.

Arguments and results too large to travel inline are stored under `payloads/<id>` and
`results/<id>` (`Link.offload`). The sweeper, run by the control plane, deletes

- a result once it is older than the results' retention (`result_ttl_s`): the record that
  points at it has expired by then, and a live caller has read it long before;
- an argument once no call can still be waiting on it (older than the longest `max_age_s`
  plus `timeout_s` of any deployed function, and an hour at least), unless a dead letter
  holds it: redrive reads it again (`autan dlq purge` deletes those with their letters).

Deletion goes by when an object was written, so a sweep is one listing per folder and
one read of the dead letters; nothing is deleted on the path of a call.
"""

from __future__ import annotations

import time

import anyio
import structlog
from anyio.abc import TaskStatus

from broker import DLQ_SUBJECTS, BrokerUnavailable, StoredRef, decode_call, decode_dead_letter
from runtime.core import FunctionSpec, Link
from storage import StorageError

__all__ = ["PayloadSweeper", "held_by_dead_letters"]

log = structlog.get_logger("autan.sweeper")

_MIN_ARGUMENT_AGE_S = 3600.0
_MARGIN_S = 60.0


class PayloadSweeper:
    """Deletes stored results and arguments no call, record or dead letter needs."""

    def __init__(self, link: Link, *, every_s: float = 300.0) -> None:
        self.link = link
        self.every_s = every_s

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            try:
                await self.sweep()
            except (BrokerUnavailable, StorageError) as exc:
                log.warning("cannot sweep stored payloads now", error=str(exc))
            await anyio.sleep(self.every_s)

    async def sweep(self, now_unix_s: float | None = None) -> int:
        """One pass; how many objects it deleted."""
        now = time.time() if now_unix_s is None else now_unix_s
        store = await self.link.store()
        result_age_s = self.link.settings.result_ttl_s + _MARGIN_S
        argument_age_s = self.argument_age_s(await self.link.registry.all())
        held = await held_by_dead_letters(self.link)
        deleted = 0
        for folder, age_s in (("results/", result_age_s), ("payloads/", argument_age_s)):
            for info in await store.list(folder):
                if now - info.modified_unix_s > age_s and info.key not in held:
                    await store.delete(info.key)
                    deleted += 1
        if deleted:
            log.info("stored payloads deleted", count=deleted)
        return deleted

    @staticmethod
    def argument_age_s(specs: list[FunctionSpec]) -> float:
        """How long a stored argument may still be read by a call waiting or running."""
        longest = max((s.options.max_age_s + s.options.timeout_s for s in specs), default=0.0)
        return max(_MIN_ARGUMENT_AGE_S, longest + _MARGIN_S)


async def held_by_dead_letters(link: Link) -> set[str]:
    """The stored payloads the dead letters' calls point at (redrive reads them)."""
    held = set()
    for stored in await link.broker.dead_letters.read(DLQ_SUBJECTS, limit=None):
        try:
            call = decode_call(decode_dead_letter(stored.data).call)
        except ValueError:
            continue
        if isinstance(call.payload, StoredRef):
            held.add(call.payload.key)
    return held
