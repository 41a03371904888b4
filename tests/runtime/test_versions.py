"""A function's version changes with its own code and the code of its package it uses, not
with a sibling's, and is the same in every process (whatever its hash seed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

_PRINT_VERSIONS = """
import json, sys
from runtime.ops.deploy import _own_modules, discover_apps
from runtime.ops.versions import function_version
versions = {}
for app in discover_apps("shop.app"):
    for handle in app.functions.values():
        tops = {m.__name__.split(".")[0] for m in _own_modules(handle)}
        versions[handle.name] = function_version(handle, {}, tops)
print(json.dumps(versions))
"""


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / "shop" / name).write_text(textwrap.dedent(text))


def _versions(root: Path, seed: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTAN_")}
    env.update(PYTHONPATH=f"{root}:{ROOT}", PYTHONHASHSEED=str(seed))
    done = subprocess.run([sys.executable, "-c", _PRINT_VERSIONS], env=env, cwd=root,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    versions: dict[str, str] = json.loads(done.stdout)
    return versions


def test_versions_follow_what_each_function_uses(tmp_path: Path) -> None:
    (tmp_path / "shop").mkdir()
    _write(tmp_path, {
        "__init__.py": "",
        "util.py": """
            TAGS = {"red", "green", "blue", "cyan"}

            def tidy(text):
                return text.strip().lower()
        """,
        "app.py": """
            from runtime import App
            from shop.util import TAGS, tidy

            app = App("shop")

            @app.function()
            def clean(ctx, text: str) -> str:
                return tidy(text) if text not in {"x", "y", "z"} else ""

            @app.function()
            def tags(ctx, n: int) -> list:
                return sorted(TAGS)[:n]

            @app.function()
            def echo(ctx, text: str) -> str:
                return text
        """,
    })  # fmt: skip
    first = _versions(tmp_path, seed=1)
    assert _versions(tmp_path, seed=2) == first  # sets and hash seeds do not move it

    app_py = tmp_path / "shop" / "app.py"
    app_py.write_text(app_py.read_text().replace("return text\n", "return text + '!'\n"))
    echo_edited = _versions(tmp_path, seed=3)
    assert echo_edited["echo"] != first["echo"]
    assert {k: echo_edited[k] for k in ("clean", "tags")} == {
        k: first[k] for k in ("clean", "tags")
    }

    util_py = tmp_path / "shop" / "util.py"
    util_py.write_text(util_py.read_text().replace(".lower()", ".casefold()"))
    tidy_edited = _versions(tmp_path, seed=4)
    assert tidy_edited["clean"] != echo_edited["clean"]  # it uses tidy
    assert tidy_edited["tags"] == echo_edited["tags"]  # it does not

    util_py.write_text(util_py.read_text().replace('"cyan"', '"magenta"'))
    tags_edited = _versions(tmp_path, seed=5)
    assert tags_edited["tags"] != tidy_edited["tags"]  # the data it reads changed
    assert tags_edited["echo"] == tidy_edited["echo"]
