"""Typed handles returned by `@app.function`, and `Call`, the handle of a spawned call."""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import AsyncGenerator, Callable, Iterable, Iterator, Sized
from typing import TYPE_CHECKING, Any, Generic, Literal, ParamSpec, TypeVar

import msgspec

from runtime.context import Context
from runtime.options import Batching, InvalidOption, Model, Retries, Scaling

if TYPE_CHECKING:
    from runtime.app import App
    from runtime.session import Session, SessionProvider

__all__ = ["BatchedFunction", "Call", "Function", "FunctionOptions"]

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")
U = TypeVar("U")


class FunctionOptions(msgspec.Struct, frozen=True, kw_only=True):
    """Everything `@app.function` was given, as it travels in the function's spec."""

    models: dict[str, Model] = {}
    batching: Batching | None = None
    scaling: Scaling = Scaling()
    retries: Retries = Retries()
    timeout_s: float = 60.0
    gpu: bool | Literal["auto"] = False
    concurrency: int = 1
    max_age_s: float = 6 * 3600.0  # a call still waiting after this goes to the dead letters
    memory_mb: int | None = None  # the worker's address-space limit; over it, MemoryError
    on: str | None = None  # a NATS subject: every message published there is a call
    emit: str | None = None  # publish each result (of any call) to this subject

    def validate(self) -> None:
        if not 0 < self.timeout_s <= 7 * 24 * 3600:
            raise InvalidOption(f"timeout_s={self.timeout_s}: use a positive number of seconds")
        _check_subject("on", self.on, wildcards=True)
        _check_subject("emit", self.emit, wildcards=False)
        if self.gpu not in (True, False, "auto"):
            raise InvalidOption(f"gpu={self.gpu!r}: use True, False or 'auto'")
        if self.memory_mb is not None and self.memory_mb < 256:
            raise InvalidOption(f"memory_mb={self.memory_mb}: give at least 256 (MiB)")
        if self.max_age_s <= 0:
            raise InvalidOption(f"max_age_s={self.max_age_s}: use a positive number of seconds")
        if not 1 <= self.concurrency <= 1024:
            raise InvalidOption(f"concurrency={self.concurrency}: use 1 to 1024")
        for key, model in self.models.items():
            if not isinstance(model, Model):
                raise InvalidOption(
                    f"models[{key!r}] is {model!r}: use Model.file('path/to/model.onnx')"
                )


def _check_subject(option: str, subject: str | None, *, wildcards: bool) -> None:
    if subject is None:
        return
    tokens = subject.split(".")
    allowed = "'*' and a final '>'" if wildcards else "no wildcards"
    bad = (
        not subject
        or any(not t or any(c.isspace() for c in t) for t in tokens)
        or (not wildcards and any(t in ("*", ">") for t in tokens))
        or ">" in tokens[:-1]
        or subject.startswith(("autan.", "$", "_INBOX."))
    )
    if bad:
        raise InvalidOption(
            f"{option}={subject!r}: give a NATS subject like 'uploads.images' ({allowed}; "
            "not under autan., $ or _INBOX.)"
        )


class _Handle:
    """What both handle kinds share: identity, options, local execution."""

    def __init__(
        self,
        app: App,
        name: str,
        fn: Callable[..., Any],
        options: FunctionOptions,
        setup: Callable[[Context], Any] | None,
    ) -> None:
        self.app = app
        self.name = name
        self.raw = fn
        self.options = options
        self.setup = setup
        self._local_ctx: Context | None = None
        self._local_lock = threading.Lock()
        self.__doc__ = fn.__doc__

    @property
    def qualname(self) -> str:
        """`<app>.<fn>`, as the CLI and the registry name it."""
        return f"{self.app.name}.{self.name}"

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.qualname}>"

    def local_context(self) -> Context:
        """The context `.local()` uses: models loaded in this process, setup run once."""
        with self._local_lock:
            if self._local_ctx is None:
                from runtime.models import ModelFile, load_models

                files = {
                    k: ModelFile(_path(m), optimization=m.optimization)
                    for k, m in self.options.models.items()
                }
                ctx = Context(
                    function=self.qualname, models=load_models(files, gpu=self.options.gpu)
                )
                ctx.state = self.setup(ctx) if self.setup else None
                self._local_ctx = ctx
            return self._local_ctx

    def _invoke_local(self, *args: Any, **kwargs: Any) -> Any:
        result = self.raw(self.local_context(), *args, **kwargs)
        if inspect.isawaitable(result):
            return asyncio.run(_await(result))
        return result

    async def _session(self) -> Session:
        return await self.app.sessions.current()

    def _sync(self, fn: Callable[..., Any], *args: Any) -> Any:
        return self.app.sessions.run_sync(fn, *args)


async def _await(awaitable: Any) -> Any:
    return await awaitable


def _path(model: Model) -> Any:
    from pathlib import Path

    return Path(model.path)


class _Remote(Generic[P, R]):
    """`handle.remote(...)` blocks; `await handle.remote.aio(...)` in async code."""

    def __init__(self, handle: _Handle) -> None:
        self._handle = handle

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        result: R = self._handle._sync(self._call, args, kwargs)
        return result

    async def aio(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return await self._call(args, kwargs)

    async def _call(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> R:
        session = await self._handle._session()
        result: R = await session.call(self._handle.app.name, self._handle.name, args, kwargs)
        return result


class _Spawn(Generic[P, R]):
    """`handle.spawn(...)` returns a `Call` once JetStream has stored the call."""

    def __init__(self, handle: _Handle) -> None:
        self._handle = handle

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Call[R]:
        call: Call[R] = self._handle._sync(self._spawn, args, kwargs)
        return call

    async def aio(self, *args: P.args, **kwargs: P.kwargs) -> Call[R]:
        return await self._spawn(args, kwargs)

    async def _spawn(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Call[R]:
        session = await self._handle._session()
        call_id = await session.spawn(self._handle.app.name, self._handle.name, args, kwargs)
        return Call(call_id, self._handle.app.sessions)


class _Map(Generic[R]):
    """`handle.map(xs)` yields results in input order; `handle.map.aio(xs)` is its async form.

    Calls are published without waiting for each other, at most `window` in flight.
    """

    def __init__(self, handle: _Handle) -> None:
        self._handle = handle

    def __call__(self, *inputs: Iterable[Any], window: int = 1024) -> Iterator[R]:
        _check_window(window)
        return self._handle.app.sessions.iterate_sync(self.aio, *inputs, window=window)

    async def aio(self, *inputs: Iterable[Any], window: int = 1024) -> AsyncGenerator[R, None]:
        _check_window(window)
        session = await self._handle._session()
        arg_tuples = zip(*inputs, strict=False)
        sized = [len(x) for x in inputs if isinstance(x, Sized)]
        count = min(sized) if inputs and len(sized) == len(inputs) else None
        async for result in session.map(
            self._handle.app.name, self._handle.name, arg_tuples, window=window, count=count
        ):
            yield result


class Function(_Handle, Generic[P, R]):
    """A deployed-or-deployable function: `.remote`, `.spawn`, `.map`, `.local`."""

    def __init__(
        self,
        app: App,
        name: str,
        fn: Callable[..., Any],
        options: FunctionOptions,
        setup: Callable[[Context], Any] | None,
    ) -> None:
        super().__init__(app, name, fn, options, setup)
        self.remote: _Remote[P, R] = _Remote(self)
        self.spawn: _Spawn[P, R] = _Spawn(self)
        self.map: _Map[R] = _Map(self)

    def local(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run in this process, no broker: the plain function with a local context."""
        result: R = self._invoke_local(*args, **kwargs)
        return result


class BatchedFunction(_Handle, Generic[T, U]):
    """A function declared with `batching=`: callers pass one input, the worker batches."""

    def __init__(
        self,
        app: App,
        name: str,
        fn: Callable[..., Any],
        options: FunctionOptions,
        setup: Callable[[Context], Any] | None,
    ) -> None:
        super().__init__(app, name, fn, options, setup)
        self.remote: _Remote[[T], U] = _Remote(self)
        self.spawn: _Spawn[[T], U] = _Spawn(self)
        self.map: _Map[U] = _Map(self)

    def local(self, item: T) -> U:
        """Run a batch of one in this process, no broker."""
        results = self._invoke_local([item])
        if not isinstance(results, list) or len(results) != 1:
            raise TypeError(f"{self.qualname} returned {type(results).__name__} for 1 input")
        result: U = results[0]
        return result


class Call(Generic[R]):
    """A spawned call: `get(timeout)` waits for its result; `Call.from_id(id)` finds it again."""

    _default_sessions: SessionProvider | None = None

    def __init__(self, call_id: str, sessions: SessionProvider) -> None:
        self.id = call_id
        self._sessions = sessions

    def __repr__(self) -> str:
        return f"Call({self.id!r})"

    @classmethod
    def from_id(cls, call_id: str, app: App | None = None) -> Call[Any]:
        """The call `call_id`, read through `app`'s sessions, or settings from the environment."""
        if app is not None:
            return cls(call_id, app.sessions)
        if Call._default_sessions is None:
            from runtime.session import SessionProvider

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


def _check_window(window: int) -> None:
    if not isinstance(window, int) or window < 1:
        raise InvalidOption(f"map(window={window!r}): give the calls in flight at most, 1 or more")
