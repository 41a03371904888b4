"""Deploy's clean build step: can a worker load each function, and import what it imports?

A worker unpickles a function in an interpreter that has only what is installed where it
runs, then imports whatever the function imports as it runs. So before anything is
uploaded, deploy hands the packaged functions to `python -I -m runtime.ops.buildcheck` (no
user site, no PYTHONPATH, no current directory: only what is installed), which unpickles
each one and looks up every module its code imports, also inside function bodies (found
in the bytecode of the function, its setup hook, and the functions of the modules that
travel with it). A module the environment lacks fails the deploy with its name, rather
than every call with `No module named ...`.

The environment checked is the deploying interpreter's: where workers run elsewhere, with
other packages, `AUTAN_DEPLOY_IMPORT_CHECK=false` turns the check off.
"""

from __future__ import annotations

import dis
import importlib.util
import os
import sys
from collections.abc import Iterable, Iterator
from types import CodeType, FunctionType, ModuleType
from typing import Any

import anyio
import msgspec

__all__ = ["imported_modules", "main", "unloadable"]

_TIMEOUT_S = 120.0


class _Case(msgspec.Struct, frozen=True):
    qualname: str
    artifact: bytes
    modules: list[str]
    paths: list[str] = []  # its layer, first on the path as on a worker


def imported_modules(functions: Iterable[Any], modules: Iterable[ModuleType]) -> list[str]:
    """Top-level names of the modules imported by `functions` and by the functions of
    `modules` (absolute imports only: relative ones travel with their package)."""
    codes: list[CodeType] = [f.__code__ for f in functions if isinstance(f, FunctionType)]
    for module in modules:
        codes += [
            value.__code__
            for value in vars(module).values()
            if isinstance(value, FunctionType) and value.__module__ == module.__name__
        ]
    names = {name for code in codes for name in _imports(code)}
    return sorted(names)


def _imports(code: CodeType) -> Iterator[str]:
    level = 0
    for instruction in dis.get_instructions(code):
        if instruction.opname == "LOAD_CONST" and isinstance(instruction.argval, int):
            level = instruction.argval
        elif instruction.opname == "IMPORT_NAME" and level == 0:
            yield str(instruction.argval).split(".")[0]
    for const in code.co_consts:
        if isinstance(const, CodeType):
            yield from _imports(const)


async def unloadable(cases: dict[str, tuple[bytes, list[str], list[str]]]) -> dict[str, str]:
    """Why a worker could not run each function that it could not (by qualname), from a
    clean interpreter; `cases`: qualname to (artifact, imported module names, folders first
    on its path)."""
    if not cases:
        return {}
    data = msgspec.msgpack.encode([_Case(q, a, m, p) for q, (a, m, p) in cases.items()])
    env = {**os.environ, "ORT_DISABLE_TELEMETRY": "1"}
    with anyio.fail_after(_TIMEOUT_S):
        done = await anyio.run_process(
            [sys.executable, "-I", "-m", "runtime.ops.buildcheck"], input=data, env=env,
            check=False,
        )  # fmt: skip
    if done.returncode != 0:
        tail = done.stderr.decode(errors="replace").strip().splitlines()[-1:]
        return dict.fromkeys(cases, f"the build check failed: {' '.join(tail)}")
    found: dict[str, str] = msgspec.json.decode(done.stdout)
    return found


def _check(case: _Case) -> str | None:
    import cloudpickle

    sys.path[:0] = case.paths

    for name in case.modules:
        try:
            missing = importlib.util.find_spec(name) is None
        except (ImportError, ValueError):
            missing = True
        if missing:
            return f"it imports {name!r}, which is not installed here"
    try:
        cloudpickle.loads(case.artifact)
    except Exception as exc:
        return f"it cannot be loaded: {type(exc).__name__}: {exc}"
    return None


def main() -> None:
    cases = msgspec.msgpack.decode(sys.stdin.buffer.read(), type=list[_Case])
    found = {case.qualname: why for case in cases if (why := _check(case)) is not None}
    sys.stdout.buffer.write(msgspec.json.encode(found))


if __name__ == "__main__":
    main()
