"""Typed handles returned by `@app.function`: `.remote`, `.remote_gen`, `.spawn`, `.map`,
`.local`."""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import AsyncGenerator, Callable, Iterable, Iterator, Sized
from pathlib import Path
from typing import Any, Generic, ParamSpec, TypeVar

import numpy as np

from runtime.client.calls import Call
from runtime.client.session import Session
from runtime.client.sessions import SessionProvider
from runtime.core import (
    Context,
    FunctionOptions,
    InvalidOption,
    ModelFile,
    load_models,
    takes_array,
)

__all__ = ["BatchedFunction", "Function"]

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")
U = TypeVar("U")


class _Handle:
    """What both handle kinds share: identity, options, local execution."""

    def __init__(
        self,
        app_name: str,
        name: str,
        fn: Callable[..., Any],
        options: FunctionOptions,
        setup: Callable[[Context], Any] | None,
        sessions: SessionProvider,
    ) -> None:
        self.app_name = app_name
        self.sessions = sessions
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
        return f"{self.app_name}.{self.name}"

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.qualname}>"

    def local_context(self) -> Context:
        """The context `.local()` uses: models loaded in this process, setup run once."""
        with self._local_lock:
            if self._local_ctx is None:
                files = {
                    k: ModelFile(Path(m.path), optimization=m.optimization)
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
        return await self.sessions.current()

    def _sync(self, fn: Callable[..., Any], *args: Any) -> Any:
        return self.sessions.run_sync(fn, *args)


async def _await(awaitable: Any) -> Any:
    return await awaitable


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
        result: R = await session.call(self._handle.app_name, self._handle.name, args, kwargs)
        return result


class _RemoteGen(Generic[P]):
    """`for item in handle.remote_gen(...)` iterates what a generator function yields, as it
    comes; `async for item in handle.remote_gen.aio(...)` in async code. Leaving the
    loop early stops the generator in its worker."""

    def __init__(self, handle: _Handle) -> None:
        self._handle = handle

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Iterator[Any]:
        return self._handle.sessions.iterate_sync(self._items, args, kwargs)

    def aio(self, *args: P.args, **kwargs: P.kwargs) -> AsyncGenerator[Any, None]:
        return self._items(args, kwargs)

    async def _items(
        self, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> AsyncGenerator[Any, None]:
        session = await self._handle._session()
        items = session.stream(self._handle.app_name, self._handle.name, args, kwargs)
        try:
            async for item in items:
                yield item
        finally:
            await items.aclose()


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
        call_id = await session.spawn(self._handle.app_name, self._handle.name, args, kwargs)
        return Call(call_id, self._handle.sessions)


class _Map(Generic[R]):
    """`handle.map(xs)` yields results in input order; `handle.map.aio(xs)` is its async form.

    Calls are published without waiting for each other, at most `window` in flight.
    """

    def __init__(self, handle: _Handle) -> None:
        self._handle = handle

    def __call__(self, *inputs: Iterable[Any], window: int = 1024) -> Iterator[R]:
        _check_window(window)
        return self._handle.sessions.iterate_sync(self.aio, *inputs, window=window)

    async def aio(self, *inputs: Iterable[Any], window: int = 1024) -> AsyncGenerator[R, None]:
        _check_window(window)
        session = await self._handle._session()
        arg_tuples = zip(*inputs, strict=False)
        sized = [len(x) for x in inputs if isinstance(x, Sized)]
        count = min(sized) if inputs and len(sized) == len(inputs) else None
        async for result in session.map(
            self._handle.app_name, self._handle.name, arg_tuples, window=window, count=count
        ):
            yield result


class Function(_Handle, Generic[P, R]):
    """A deployed-or-deployable function: `.remote`, `.spawn`, `.map`, `.local`; a generator
    function: `.remote_gen`."""

    def __init__(
        self,
        app_name: str,
        name: str,
        fn: Callable[..., Any],
        options: FunctionOptions,
        setup: Callable[[Context], Any] | None,
        sessions: SessionProvider,
    ) -> None:
        super().__init__(app_name, name, fn, options, setup, sessions)
        self.remote: _Remote[P, R] = _Remote(self)
        self.remote_gen: _RemoteGen[P] = _RemoteGen(self)
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
        app_name: str,
        name: str,
        fn: Callable[..., Any],
        options: FunctionOptions,
        setup: Callable[[Context], Any] | None,
        sessions: SessionProvider,
    ) -> None:
        super().__init__(app_name, name, fn, options, setup, sessions)
        self.remote: _Remote[[T], U] = _Remote(self)
        self.spawn: _Spawn[[T], U] = _Spawn(self)
        self.map: _Map[U] = _Map(self)

    def local(self, item: T) -> U:
        """Run a batch of one in this process, no broker (stacked, for a function whose
        batch is annotated as an array, as its worker would)."""
        batch: list[Any] = [item]
        results = self._invoke_local(np.stack(batch) if takes_array(self.raw) else batch)
        if not isinstance(results, list | tuple | np.ndarray) or len(results) != 1:
            raise TypeError(f"{self.qualname} returned {type(results).__name__} for 1 input")
        result: U = results[0]
        return result


def _check_window(window: int) -> None:
    if not isinstance(window, int) or window < 1:
        raise InvalidOption(f"map(window={window!r}): give the calls in flight at most, 1 or more")
