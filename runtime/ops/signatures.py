"""A function's signature as JSON Schemas, from its annotations, for the HTTP bridge's
per-function OpenAPI: what each argument (after the Context) is, and what comes back.
A batched function is described per call: the element of its `list[...]` in and out."""

from __future__ import annotations

import collections.abc
import inspect
import typing
from collections.abc import Callable
from typing import Any

import msgspec

from runtime.core import Parameter, Signature, takes_array

__all__ = ["describe"]

_SKIPPED = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
_ITERATORS = (
    collections.abc.Iterator,
    collections.abc.Iterable,
    collections.abc.Generator,
    collections.abc.AsyncIterator,
    collections.abc.AsyncIterable,
    collections.abc.AsyncGenerator,
)


def describe(fn: Callable[..., Any], *, batched: bool = False) -> Signature:
    """The signature of `fn(ctx, ...)`; {} for what an annotation cannot say as JSON."""
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # an annotation naming what cannot be imported here
        hints = {}
    parameters = list(inspect.signature(fn).parameters.values())[1:]  # the Context first
    described = tuple(
        Parameter(
            name=p.name,
            schema=_schema(hints.get(p.name), element=batched),
            required=p.default is inspect.Parameter.empty,
        )
        for p in parameters
        if p.kind not in _SKIPPED
    )
    result = hints.get("return")
    if typing.get_origin(result) in _ITERATORS and typing.get_args(result):
        result = typing.get_args(result)[0]  # a generator: what each item is
    return Signature(
        parameters=described,
        result=_schema(result, element=batched),
        doc=inspect.getdoc(fn) or "",
        stacked=batched and takes_array(fn),
    )


def _schema(annotation: Any, *, element: bool) -> dict[str, Any]:
    if annotation is None:
        return {}
    if element:  # list[T] -> T
        args = typing.get_args(annotation)
        annotation = args[0] if typing.get_origin(annotation) is list and args else None
        if annotation is None:
            return {}
    try:
        schema: dict[str, Any] = msgspec.json.schema(annotation)
    except (TypeError, ValueError):
        return {}
    return schema
