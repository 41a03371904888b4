"""The HTTP framework stays in the gateway's modules (the design's third-party confinement)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("runtime", "broker", "storage", "functions")


def _imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def _is_gateway(path: Path) -> bool:
    return path.parent == ROOT / "runtime" and path.name.startswith("gateway")


def test_http_framework_only_in_gateway_modules() -> None:
    sources = [path for package in PACKAGES for path in (ROOT / package).rglob("*.py")]
    offenders = [
        str(path.relative_to(ROOT))
        for path in sources
        if _imported(path) & {"starlette", "uvicorn"} and not _is_gateway(path)
    ]
    assert offenders == []


def test_gateway_modules_stay_above_the_broker() -> None:
    for path in (ROOT / "runtime").glob("gateway*.py"):
        assert not _imported(path) & {"nats", "minio", "onnxruntime", "httpx"}, path.name
