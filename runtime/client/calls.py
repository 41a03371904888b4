"""`Call`, the handle of a spawned call: its result now, later, or from another process."""

from __future__ import annotations

from typing import Any, Generic, Protocol, TypeVar

from runtime.client.sessions import SessionProvider

__all__ = ["Call"]

R = TypeVar("R")


class _HasSessions(Protocol):
    @property
    def sessions(self) -> SessionProvider: ...


class Call(Generic[R]):
    """A spawned call: `get(timeout)` waits for its result; `Call.from_id(id)` finds it again."""

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

    async def _get(self, timeout_s: float | None) -> R:
        session = await self._sessions.current()
        result: R = await session.result(self.id, timeout_s)
        return result
