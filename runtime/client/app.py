"""`App` and the `@app.function` decorator."""

from __future__ import annotations

import collections.abc
import inspect
import typing
from collections.abc import Callable, Coroutine, Mapping, Sequence
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar, overload

import msgspec
import numpy as np
import numpy.typing as npt

from runtime.client.handles import BatchedFunction, Function
from runtime.client.session import Session
from runtime.client.sessions import SessionProvider
from runtime.core import (
    DEFAULT_OPTIONS,
    Batching,
    Context,
    FunctionOptions,
    GpuChoice,
    InvalidOption,
    Model,
    Retries,
    Scaling,
    Settings,
    check_name,
)

__all__ = ["App"]

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")
U = TypeVar("U")


class _Decorator(Protocol):
    """`@app.function(...)` without batching: async functions give their awaited result type."""

    @overload
    def __call__(
        self, fn: Callable[Concatenate[Context, P], Coroutine[Any, Any, R]]
    ) -> Function[P, R]: ...

    @overload
    def __call__(self, fn: Callable[Concatenate[Context, P], R]) -> Function[P, R]: ...


class _BatchedDecorator(Protocol):
    """`@app.function(batching=...)`: a list of inputs in, a list of results out; or a
    batch annotated as an array (`npt.NDArray`) in, stacked, and an array out."""

    @overload
    def __call__(self, fn: Callable[[Context, list[T]], list[U]]) -> BatchedFunction[T, U]: ...

    @overload
    def __call__(
        self, fn: Callable[[Context, npt.NDArray[Any]], npt.NDArray[Any]]
    ) -> BatchedFunction[npt.NDArray[Any], npt.NDArray[Any]]: ...


class App:
    """A named group of functions deployed and called together.

    >>> app = App("demo")
    >>> @app.function(timeout_s=10)
    ... def echo(ctx: Context, value: str) -> str:
    ...     return value
    >>> echo.local("hi")
    'hi'
    """

    def __init__(
        self,
        name: str,
        *,
        settings: Settings | None = None,
        requirements: Sequence[str] | str = (),
    ) -> None:
        """`requirements`: packages every function of the app gets (beside its own
        `requirements=`), as a list or the path of a requirements file."""
        self.name = check_name("app", name)
        self.functions: dict[str, Function[Any, Any] | BatchedFunction[Any, Any]] = {}
        self._sessions = SessionProvider(settings)
        self.requirements = _requirements(requirements)

    def __repr__(self) -> str:
        return f"App({self.name!r}, functions={sorted(self.functions)})"

    @property
    def sessions(self) -> SessionProvider:
        """Connections to the broker used by the handles' remote methods."""
        return self._sessions

    async def session(self) -> Session:
        """The connected session for the running event loop."""
        return await self._sessions.current()

    @overload
    def function(
        self,
        *,
        batching: Batching,
        models: Mapping[str, Model] | None = ...,
        scaling: Scaling = ...,
        retries: Retries = ...,
        timeout_s: float = ...,
        gpu: GpuChoice = ...,
        concurrency: int = ...,
        setup: Callable[[Context], Any] | None = ...,
        name: str | None = ...,
        on: str | None = ...,
        emit: str | None = ...,
        max_age_s: float = ...,
        memory_mb: int | None = ...,
        cpu: float | None = ...,
        secrets: Sequence[str] = ...,
        requirements: Sequence[str] | str = ...,
    ) -> _BatchedDecorator: ...

    @overload
    def function(
        self,
        *,
        batching: None = ...,
        models: Mapping[str, Model] | None = ...,
        scaling: Scaling = ...,
        retries: Retries = ...,
        timeout_s: float = ...,
        gpu: GpuChoice = ...,
        concurrency: int = ...,
        setup: Callable[[Context], Any] | None = ...,
        name: str | None = ...,
        on: str | None = ...,
        emit: str | None = ...,
        max_age_s: float = ...,
        memory_mb: int | None = ...,
        cpu: float | None = ...,
        secrets: Sequence[str] = ...,
        requirements: Sequence[str] | str = ...,
    ) -> _Decorator: ...

    def function(
        self,
        *,
        batching: Batching | None = DEFAULT_OPTIONS.batching,
        models: Mapping[str, Model] | None = None,
        scaling: Scaling = DEFAULT_OPTIONS.scaling,
        retries: Retries = DEFAULT_OPTIONS.retries,
        timeout_s: float = DEFAULT_OPTIONS.timeout_s,
        gpu: GpuChoice = DEFAULT_OPTIONS.gpu,
        concurrency: int = DEFAULT_OPTIONS.concurrency,
        setup: Callable[[Context], Any] | None = None,
        name: str | None = None,
        on: str | None = DEFAULT_OPTIONS.on,
        emit: str | None = DEFAULT_OPTIONS.emit,
        max_age_s: float = DEFAULT_OPTIONS.max_age_s,
        memory_mb: int | None = DEFAULT_OPTIONS.memory_mb,
        cpu: float | None = DEFAULT_OPTIONS.cpu,
        secrets: Sequence[str] = DEFAULT_OPTIONS.secrets,
        requirements: Sequence[str] | str = DEFAULT_OPTIONS.requirements,
    ) -> Callable[[Callable[..., Any]], Any]:
        """Declare a function of this app; options are checked here, not at the first call.

        The function takes a `Context` first. With `batching`, it takes a list of inputs and
        returns a list of results of the same length; callers still pass one input. With
        `on="uploads.>"`, every message published on a matching subject is a call whose one
        argument is the message's bytes; `emit="subject"` publishes every result there.
        `secrets=["HF_TOKEN"]`: its workers find each secret (`autan secret set`) in their
        environment under its name; no other function's do. `requirements=["pkg==1.2"]` (or
        the path of a requirements file): packages its workers get, installed by deploy
        into a layer of their own beside this environment's (which they never replace).
        Where workers run on several hosts (`autan agent`), `cpu=`, `memory_mb=` and
        `gpu=GPU(memory_gb=10)` (or `GPU(count=2)`) say what each worker needs: it is placed
        on a host with that much free.
        """
        if isinstance(secrets, str):
            raise InvalidOption(f"secrets={secrets!r}: give a list of names, secrets=[{secrets!r}]")
        options = FunctionOptions(
            models=dict(models or {}),
            batching=batching,
            scaling=scaling,
            retries=retries,
            timeout_s=float(timeout_s),
            gpu=gpu,
            concurrency=concurrency,
            on=on,
            emit=emit,
            max_age_s=float(max_age_s),
            memory_mb=memory_mb,
            cpu=None if cpu is None else float(cpu),
            secrets=tuple(secrets),
            requirements=tuple(dict.fromkeys((*self.requirements, *_requirements(requirements)))),
        )

        def decorate(fn: Callable[..., Any]) -> Any:
            fn_name = check_name("function", name or fn.__name__)
            if fn_name in self.functions:
                raise InvalidOption(f"app {self.name!r} already has a function {fn_name!r}")
            streams = inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn)
            try:
                own = msgspec.structs.replace(options, streams=streams)
            except InvalidOption as exc:
                raise InvalidOption(f"{fn.__qualname__}: {exc}") from None
            _check_signature(fn, batched=batching is not None)
            handle: Function[Any, Any] | BatchedFunction[Any, Any]
            kind = Function if batching is None else BatchedFunction
            handle = kind(self.name, fn_name, fn, own, setup, self._sessions)
            self.functions[fn_name] = handle
            return handle

        return decorate


def _requirements(requirements: Sequence[str] | str) -> tuple[str, ...]:
    """Requirement strings, or those of a requirements file (comments and blanks left out)."""
    if not isinstance(requirements, str):
        return tuple(requirements)
    try:
        text = Path(requirements).read_text()
    except OSError as exc:
        raise InvalidOption(
            f"requirements={requirements!r}: give a list of requirements, or the path of a "
            f"requirements file ({exc.strerror})"
        ) from None
    lines = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return tuple(line for line in lines if line)


def _check_signature(fn: Callable[..., Any], *, batched: bool) -> None:
    if not callable(fn):
        raise InvalidOption(f"@app.function decorates a function, got {fn!r}")
    params = [
        p
        for p in inspect.signature(fn).parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    if not params:
        raise InvalidOption(
            f"{fn.__qualname__}: the first parameter receives the call context; "
            f"write def {fn.__name__}(ctx, ...)"
        )
    if batched:
        _check_batched(fn, params)


def _check_batched(fn: Callable[..., Any], params: list[inspect.Parameter]) -> None:
    example = f"def {fn.__name__}(ctx, items: list[str]) -> list[...]"
    if len(params) != 2:
        raise InvalidOption(
            f"{fn.__qualname__}: a batched function takes the context and one list (or "
            f"array): {example}"
        )
    try:
        hints = typing.get_type_hints(fn)
    except Exception as exc:
        raise InvalidOption(f"{fn.__qualname__}: cannot read its annotations: {exc}") from exc
    for label, hint in (("input", hints.get(params[1].name)), ("return", hints.get("return"))):
        if not _may_be_a_list(hint):
            raise InvalidOption(
                f"{fn.__qualname__}: batching needs a function that takes and returns a list "
                f"or an array (its {label} is annotated {hint!r}): {example}"
            )


# What a batch's annotation may say: a list (or a sequence of some kind), or nothing.
_SEQUENCES: tuple[Any, ...] = (
    list,
    tuple,
    collections.abc.Sequence,
    collections.abc.Iterable,
    collections.abc.Collection,
)


def _may_be_a_list(hint: Any) -> bool:
    """`list[str]`, `list`, `Sequence[...]`, an array (the batch stacked), no annotation or
    `Any`: yes; `str`: no."""
    if hint is None or hint is Any:
        return True
    return (typing.get_origin(hint) or hint) in (*_SEQUENCES, np.ndarray)
