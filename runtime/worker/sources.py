"""Remote tracebacks that name the user's files: code unpickled from an artifact says
`File "<dynamic-code>"` (cloudpickle drops file names so that its bytes do not depend on
where the code was deployed from); each code object of the function, its setup hook and
the functions and classes of the modules that travelled with them gets back a file name
made from its module (`functions/embed.py`). Line numbers were kept all along."""

from __future__ import annotations

import types
from typing import Any

__all__ = ["name_sources"]

_DYNAMIC = "<dynamic-code>"
_DEPTH = 4  # function -> its module's helpers -> their classes -> methods


def name_sources(*roots: Any) -> None:
    """Give every dynamic code object reachable from `roots` its module's file name."""
    seen: set[int] = set()
    for root in roots:
        if root is not None:
            _visit(root, seen, depth=0)


def _visit(obj: Any, seen: set[int], depth: int) -> None:
    if id(obj) in seen or depth > _DEPTH:
        return
    seen.add(id(obj))
    if isinstance(obj, types.FunctionType):
        if obj.__code__.co_filename != _DYNAMIC:
            return  # installed code: its file is known, and its globals are not ours
        obj.__code__ = _renamed(obj.__code__, _file_of(obj.__module__))
        members: list[Any] = list(obj.__globals__.values())
    elif isinstance(obj, type):
        members = [getattr(value, "__func__", value) for value in vars(obj).values()]
    elif isinstance(obj, types.ModuleType) and getattr(obj, "__file__", None) is None:
        members = list(vars(obj).values())  # a module pickled by value
    else:
        return
    for member in members:
        if isinstance(member, types.FunctionType | type | types.ModuleType):
            _visit(member, seen, depth + 1)


def _renamed(code: types.CodeType, filename: str) -> types.CodeType:
    if code.co_filename != _DYNAMIC:
        return code
    consts = tuple(
        _renamed(const, filename) if isinstance(const, types.CodeType) else const
        for const in code.co_consts
    )
    return code.replace(co_filename=filename, co_consts=consts)


def _file_of(module: str | None) -> str:
    return f"{(module or 'unknown').replace('.', '/')}.py"
