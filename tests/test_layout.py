"""The design's structure, checked on the source: import direction between packages and
between the rooms of `runtime/`, third parties confined, no import circle, short modules,
and every NATS name spelled in `broker/names.py` alone."""

from __future__ import annotations

import ast
import graphlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("runtime", "broker", "storage", "functions")
MAX_LINES = 400

# package -> our packages it must never import
FORBIDDEN = {
    "broker": {"runtime", "storage", "functions"},
    "storage": {"runtime", "broker", "functions"},
    "runtime": {"functions"},
}
# room of runtime/ -> the rooms it may import (its own included); ops may import them all
ROOMS: dict[str, set[str]] = {
    "core": {"core"},
    "client": {"core", "client"},
    "worker": {"core", "worker"},
    "control": {"core", "control"},
    "gateway": {"core", "gateway"},
    "ops": {"core", "client", "worker", "control", "gateway", "ops"},
}
# the public face, runtime/__init__.py: what a caller imports
PUBLIC_ROOMS = {"core", "client"}
# third-party module -> the only files allowed to import it
CONFINED: dict[str, Callable[[Path], bool]] = {
    "nats": lambda path: path.parts[0] == "broker",
    "nkeys": lambda path: path.parts[0] == "broker",
    "nacl": lambda path: path in (Path("runtime/core/trust.py"), Path("runtime/core/secrets.py")),
    "minio": lambda path: path == Path("storage/s3.py"),
    "onnxruntime": lambda path: (
        path == Path("runtime/core/models.py") or path.parts[0] == "functions"
    ),
    "urllib3": lambda path: path.parts[0] == "storage",
    "starlette": lambda path: path.parts[:2] == ("runtime", "gateway"),
    "uvicorn": lambda path: path.parts[:2] == ("runtime", "gateway"),
    "swagger_ui_bundle": lambda path: path.parts[:2] == ("runtime", "gateway"),
    "httpx": lambda path: False,  # a test client only
}
# module -> modules it must not import: the scaler sees workers only through the protocol
NOT_IMPORTED = {
    "runtime.control.scaler": {"runtime.control.local", "runtime.control.forking"},
}


def _sources() -> list[Path]:
    return sorted(p.relative_to(ROOT) for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def _module(path: Path) -> str:
    parts = path.with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module(path): path for path in _sources()}


def _imported(path: Path) -> set[str]:
    """Every module `path` imports, at any level (TYPE_CHECKING and functions included):
    `from a.b import c` names `a.b.c` when that is a module of ours, else `a.b`."""
    tree = ast.parse((ROOT / path).read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                whole = f"{node.module}.{alias.name}"
                names.add(whole if whole in MODULES else node.module)
    return names


def _room(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "runtime" and len(parts) > 1 else None


@pytest.mark.parametrize("path", _sources(), ids=str)
def test_import_rules(path: Path) -> None:
    imported = _imported(path)
    tops = {name.split(".")[0] for name in imported}
    package = path.parts[0]
    assert not tops & FORBIDDEN.get(package, set()), f"{path} imports across layers"
    for module, allowed in CONFINED.items():
        if module in tops:
            assert allowed(path), f"{path} imports {module}, confined elsewhere"
    banned = imported & NOT_IMPORTED.get(_module(path), set())
    assert not banned, f"{path} imports {sorted(banned)}: use the Provider protocol"


@pytest.mark.parametrize("path", [p for p in _sources() if p.parts[0] == "runtime"], ids=str)
def test_room_rules(path: Path) -> None:
    """Each room imports only the rooms it may, and another room only through its package."""
    module = _module(path)
    room = _room(module)
    allowed = PUBLIC_ROOMS if room is None else ROOMS[room]
    for name in sorted(n for n in _imported(path) if n.split(".")[0] == "runtime"):
        target = _room(name)
        assert target is not None, f"{path} imports {name}: import from a room, not runtime"
        assert target in allowed, f"{path} (room {room}) imports {name} (room {target})"
        if target != room:
            assert name == f"runtime.{target}", (
                f"{path} imports {name}: import runtime.{target}'s public names instead"
            )


def test_every_room_is_known() -> None:
    rooms = {p.parts[1] for p in _sources() if p.parts[0] == "runtime" and len(p.parts) > 2}
    assert rooms == set(ROOMS)


def _circle(graph: dict[str, set[str]]) -> list[str]:
    """A circle of imports in `graph` (module -> the modules it imports), else []."""
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as exc:
        circle: list[str] = exc.args[1]
        return circle
    return []


def test_no_import_circle() -> None:
    graph = {
        module: {name for name in _imported(path) if name in MODULES}
        for module, path in MODULES.items()
    }
    assert _circle(graph) == []


def test_the_circle_finder_finds_circles() -> None:
    assert _circle({"a": {"b"}, "b": {"c"}, "c": set()}) == []
    assert sorted(set(_circle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}))) == ["a", "b", "c"]


@pytest.mark.parametrize("path", [p for p in _sources() if p.parts[0] != "functions"], ids=str)
def test_modules_stay_short(path: Path) -> None:
    lines = len((ROOT / path).read_text().splitlines())
    assert lines <= MAX_LINES, f"{path} has {lines} lines: split it by concern"


def test_onnxruntime_is_never_imported_without_telemetry_off() -> None:
    for path in _sources():
        text = (ROOT / path).read_text()
        if "import onnxruntime" in text and path.parts[0] == "runtime":
            assert text.index('os.environ["ORT_DISABLE_TELEMETRY"] = "1"') < text.index(
                "import onnxruntime"
            )


# -- NATS names ---------------------------------------------------------------------------

NAMES = Path("broker/names.py")
# Prefixes no other module may spell: Autan's subjects and streams, JetStream's API.
_RESERVED = ("autan.call", "autan.dlq", "AUTAN_CALLS", "AUTAN_DLQ", "AUTAN_TRIGGER", "$JS.",
             "$KV.", "KV_", "_INBOX")  # fmt: skip
# Calls whose first argument is a NATS name.
_NAMING_CALLS = {"bucket", "subscribe", "publish", "submit", "stream_info", "key_value",
                 "consumer_info", "add_stream", "delete_consumer", "get_msg"}  # fmt: skip


def _names_table() -> set[str]:
    """The values of the string constants `broker/names.py` defines."""
    tree = ast.parse((ROOT / NAMES).read_text())
    return {
        node.value.value
        for node in tree.body
        if isinstance(node, ast.Assign)
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
    }


def _not_names(tree: ast.AST) -> set[int]:
    """Strings that are no NATS name: docstrings, `__all__`, Prometheus metric names."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
            skipped.add(id(body[0].value))
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
        ):
            skipped.update(id(n) for n in ast.walk(node.value))
        if isinstance(node, ast.Call) and node.args and _called(node) in _METRICS:
            skipped.add(id(node.args[0]))
    return skipped


def _called(call: ast.Call) -> str | None:
    if isinstance(call.func, ast.Attribute):
        return call.func.attr
    return call.func.id if isinstance(call.func, ast.Name) else None


_METRICS = {"Counter", "Gauge", "Histogram", "HistogramMetricFamily"}


def _strings(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """String literals (f-strings' literal parts too) that could be NATS names."""
    skipped = _not_names(tree)
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in skipped
        ):
            yield node.lineno, node.value


def _literal_names(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """String literals passed as the name to a call that takes a NATS name."""
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and node.args):
            continue
        first = node.args[0]
        if _called(node) in _NAMING_CALLS and isinstance(first, ast.Constant | ast.JoinedStr):
            yield node.lineno, ast.unparse(first)


def _offences(path: Path, table: set[str]) -> list[str]:
    tree = ast.parse((ROOT / path).read_text())
    found = [
        f"{path}:{line}: {text!r}"
        for line, text in _strings(tree)
        if text in table or text.startswith(_RESERVED)
    ]
    return found + [f"{path}:{line}: a literal name {text}" for line, text in _literal_names(tree)]


def test_nats_names_live_in_one_module() -> None:
    table = _names_table()
    assert {"autan_functions", "AUTAN_CALLS", "autan_workers", "autan_status"} <= table
    offences = [o for path in _sources() if path != NAMES for o in _offences(path, table)]
    assert offences == []


def test_the_names_check_finds_a_literal_name() -> None:
    tree = ast.parse('bucket = broker.bucket("autan_status")\nx = f"$KV.{b}.{k}"\n')
    assert [text for _, text in _literal_names(tree)] == ["'autan_status'"]
    assert [text for _, text in _strings(tree) if text.startswith(_RESERVED)] == ["$KV."]
