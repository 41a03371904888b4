"""`Call`, the handle of a spawned call: its result now, later, or from another process."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Iterator
from typing import Any, Generic, Protocol, TypeVar

from runtime.client.sessions import SessionProvider

__all__ = ["Call"]

R = TypeVar("R")


class _HasSessions(Protocol):
    @property
    def sessions(self) -> SessionProvider: ...


class Call(Generic[R]):
    """A spawned call: `get(timeout)` waits for its result (a generator's: its item count),
    `items()` iterates a generator's items; `Call.from_id(id)` finds it again."""

    _default_sessions: SessionProvider | None = None

    def __init__(self, call_id: str, sessions: SessionProvider) -> None:
        self.id = call_id
        self._sessions = sessions

    def __repr__(self) -> str:
        return f"Call({self.id!r})"

    @classmethod
    def from_id(cls, call_id: str, app: _HasSessions | None = None) -> Call[Any]:
        """The call `call_id`, read through `app`'s sessions, or settings from the environment."""
        if app is not None:
            return cls(call_id, app.sessions)
        if Call._default_sessions is None:
            Call._default_sessions = SessionProvider()
        return cls(call_id, Call._default_sessions)

    def get(self, timeout: float | None = None) -> R:
        """The result, raising the function's error; TimeoutError after `timeout` seconds."""
        result: R = self._sessions.run_sync(self._get, timeout)
        return result

    async def get_aio(self, timeout_s: float | None = None) -> R:
        """`get` for async code."""
        return await self._get(timeout_s)

    def items(self, start: int = 0) -> Iterator[Any]:
        """A spawned generator's items from item `start`, as they come (or came: they are
        kept as long as results are), from any process."""
        return self._sessions.iterate_sync(self._items, start)

    def items_aio(self, start: int = 0) -> AsyncGenerator[Any, None]:
        """`items` for async code."""
        return self._items(start)

    async def _items(self, start: int) -> AsyncGenerator[Any, None]:
        session = await self._sessions.current()
        items = session.kept(self.id, start)
        try:
            async for item in items:
                yield item
        finally:
            await items.aclose()

    async def _get(self, timeout_s: float | None) -> R:
        session = await self._sessions.current()
        result: R = await session.result(self.id, timeout_s)
        return result
