"""One run at a time per key: calls that come while it runs wait for its outcome.

For what is opened or fetched on first use by many concurrent callers (the session of
an event loop, a function's spec): without it, each caller of a burst would open or
fetch its own, and only one would be kept.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from functools import partial
from typing import Generic, TypeVar

__all__ = ["Coalesced"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Coalesced(Generic[K, V]):
    """`run(key, fetch)` runs `fetch()` unless a run for `key` is under way, and returns
    (or raises) what that one run does. A caller that stops waiting does not stop the
    run for the others; a run that failed is not remembered, so the next call tries again.
    """

    def __init__(self) -> None:
        self._running: dict[K, asyncio.Task[V]] = {}

    async def run(self, key: K, fetch: Callable[[], Awaitable[V]]) -> V:
        task = self._running.get(key)
        if task is None:
            task = self._running[key] = asyncio.ensure_future(fetch())
            task.add_done_callback(partial(self._finished, key))
        return await asyncio.shield(task)

    def _finished(self, key: K, task: asyncio.Task[V]) -> None:
        if self._running.get(key) is task:
            del self._running[key]
        if not task.cancelled():
            task.exception()  # seen here: no "never retrieved" report when nobody waited
