"""A function's version: a digest of what it does, so that it changes when its own code,
or code of its package it uses, changes, and not when a sibling does.

What goes in: the function's source and its setup hook's, then, followed by the names
their code (nested functions and closures included) reads: the source of each function
and class of the function's top-level package they reach (recursively), the whole source
of each such module they use as a module, and a stable rendering of each data value they
read (a set in sorted order, an array by a digest of its bytes, an object by its type
where its repr shows an address).
Then its options, its models' digests, its name and the Python version. Not followed: the
other functions' handles it calls (their versions are their own), names it reaches by
`getattr` or `importlib` (a module it uses as a module is whole), and top-level
statements of a module that bind no name it reads.
"""

from __future__ import annotations

import hashlib
import inspect
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec

from runtime.client import App, BatchedFunction, Function
from runtime.core import python_version
from storage import Digest

__all__ = ["function_version"]

Handle = Function[Any, Any] | BatchedFunction[Any, Any]


def function_version(
    handle: Handle, models: dict[str, tuple[Path, Digest]], package_tops: set[str]
) -> str:
    """16 hex digits; `package_tops`: the top-level packages whose code travels with it."""
    hasher = hashlib.sha256()
    for part in _parts(handle, models, package_tops):
        hasher.update(part)
        hasher.update(b"\0")
    return hasher.hexdigest()[:16]


def _parts(
    handle: Handle, models: dict[str, tuple[Path, Digest]], tops: set[str]
) -> Iterator[bytes]:
    yield f"{handle.qualname}|{python_version()}|{handle.raw.__qualname__}".encode()
    used = _Used(tops)
    for root in (handle.raw, handle.setup):
        if root is not None:
            used.visit(root)
    for key in sorted(used.parts):
        yield key.encode()
        yield used.parts[key]
    yield msgspec.json.encode(msgspec.structs.replace(handle.options, models={}))
    for name, (_, digest) in sorted(models.items()):
        yield f"{name}={digest.hex}".encode()


class _Used:
    """What a function reaches in its own package, by a key that names it."""

    def __init__(self, tops: set[str]) -> None:
        self.tops = tops
        self.parts: dict[str, bytes] = {}

    def visit(self, value: Any, via: str = "") -> None:
        if isinstance(value, Function | BatchedFunction | App):
            return  # another function's handle: versioned on its own
        if isinstance(value, types.ModuleType):
            if self._own(value.__name__):
                self._module(value)
        elif isinstance(value, types.FunctionType | type):
            if self._own(getattr(value, "__module__", None) or ""):
                self._definition(value)
        elif via:
            key = f"value {via}"
            if key not in self.parts:
                self.parts[key] = hashlib.sha256(_stable(value).encode()).digest()

    def _own(self, module: str) -> bool:
        return module.split(".")[0] in self.tops or module == "__main__"

    def _module(self, module: types.ModuleType) -> None:
        key = f"module {module.__name__}"
        if key in self.parts:
            return
        self.parts[key] = _source(module)
        for name, member in vars(module).items():
            if not name.startswith("__"):
                self.visit(member, f"{module.__name__}.{name}")

    def _definition(self, obj: types.FunctionType | type) -> None:
        key = f"code {obj.__module__}.{obj.__qualname__}"
        if key in self.parts:
            return
        self.parts[key] = _source(obj)
        functions = [obj] if isinstance(obj, types.FunctionType) else _methods(obj)
        for function in functions:
            for name in sorted(_names(function.__code__)):
                if name in function.__globals__:  # else a builtin, or an attribute's name
                    self.visit(function.__globals__[name], f"{function.__module__}.{name}")
            for cell in function.__closure__ or ():
                try:
                    self.visit(cell.cell_contents, f"{key} closure")
                except ValueError:  # an empty cell
                    continue


def _methods(cls: type) -> list[types.FunctionType]:
    found = []
    for value in vars(cls).values():
        inner = getattr(value, "__func__", value)
        if isinstance(inner, types.FunctionType):
            found.append(inner)
    return found


def _names(code: types.CodeType) -> set[str]:
    """Global names the code (and code nested in it) reads."""
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _names(const)
    return names


def _source(obj: Any) -> bytes:
    try:
        return inspect.getsource(obj).encode()
    except (OSError, TypeError):
        code = getattr(obj, "__code__", None)
        return code.co_code if code is not None else repr(obj).encode()


def _stable(value: Any, depth: int = 0) -> str:
    """A rendering that is the same in every process (sets sorted, no addresses)."""
    if depth > 6:
        return "..."
    if isinstance(value, set | frozenset):
        return "{" + ",".join(sorted(_stable(v, depth + 1) for v in value)) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_stable(v, depth + 1) for v in value) + "]"
    if isinstance(value, dict):
        items = (f"{_stable(k, depth + 1)}:{_stable(v, depth + 1)}" for k, v in value.items())
        return "{" + ",".join(items) + "}"
    tobytes = getattr(value, "tobytes", None)
    if callable(tobytes):  # an array: its repr elides the middle
        shape = getattr(value, "shape", "")
        return f"{type(value).__qualname__}{shape}{getattr(value, 'dtype', '')}:" + (
            hashlib.sha256(tobytes()).hexdigest()
        )
    text = repr(value)
    return type(value).__qualname__ if " at 0x" in text else text
