"""The design's import rules: direction between packages, third parties confined."""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("runtime", "broker", "storage", "functions")

# package -> our packages it must never import
FORBIDDEN = {
    "broker": {"runtime", "storage", "functions"},
    "storage": {"runtime", "broker", "functions"},
    "runtime": {"functions"},
}
# third-party module -> the only files allowed to import it
CONFINED: dict[str, Callable[[Path], bool]] = {
    "nats": lambda path: path.parts[0] == "broker",
    "minio": lambda path: path == Path("storage/s3.py"),
    "onnxruntime": lambda path: path == Path("runtime/models.py") or path.parts[0] == "functions",
    "urllib3": lambda path: path.parts[0] == "storage",
    "starlette": lambda path: path.name.startswith("gateway") and path.parts[0] == "runtime",
    "uvicorn": lambda path: path.name.startswith("gateway") and path.parts[0] == "runtime",
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def _sources() -> list[Path]:
    return sorted(p.relative_to(ROOT) for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


@pytest.mark.parametrize("path", _sources(), ids=str)
def test_import_rules(path: Path) -> None:
    imported = _imports(ROOT / path)
    package = path.parts[0]
    assert not imported & FORBIDDEN.get(package, set()), f"{path} imports across layers"
    for module, allowed in CONFINED.items():
        if module in imported:
            assert allowed(path), f"{path} imports {module}, confined elsewhere"


def test_onnxruntime_is_never_imported_without_telemetry_off() -> None:
    for path in _sources():
        text = (ROOT / path).read_text()
        if "import onnxruntime" in text and path.parts[0] == "runtime":
            assert text.index('os.environ["ORT_DISABLE_TELEMETRY"] = "1"') < text.index(
                "import onnxruntime"
            )
