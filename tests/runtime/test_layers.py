"""`requirements=`: deploy builds a layer of packages once, workers import from it.

The packages come from a wheelhouse made here (`AUTAN_WHEELHOUSE`): pure-Python wheels
that are installed nowhere else, so only the layer can give them to a worker.
"""

from __future__ import annotations

import base64
import hashlib
import shutil
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest

from runtime.core import DeployError, Link, Settings
from runtime.ops import deploy_target
from tests.stack import Stack

pytestmark = pytest.mark.timeout(120)

_APP = """
from runtime import App, Context

app = App("{app}")


@app.function(timeout_s=10, requirements={requirements!r})
def greet(ctx: Context, who: str) -> str:
    import autan_testpkg  # in the layer only

    return autan_testpkg.greet(who)
"""


_HASHING = """
from runtime import App, Context

app = App("hashing")


@app.function(timeout_s=10, requirements=["mmh3==5.1.0"])
def murmur(ctx: Context, text: str) -> int:
    import mmh3

    return mmh3.hash(text, signed=False)
"""


def _wheel(
    folder: Path, name: str, version: str, code: str, requires: tuple[str, ...] = ()
) -> None:
    """A pure-Python wheel of one module, written as pip expects it."""
    module = name.replace("-", "_")
    info = f"{module}-{version}.dist-info"
    files = {
        f"{module}/__init__.py": code.encode(),
        f"{info}/METADATA": (
            f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
            + "".join(f"Requires-Dist: {r}\n" for r in requires)
        ).encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\n"
        b"Tag: py3-none-any\n",
    }
    record = [f"{path},sha256={_b64(data)},{len(data)}" for path, data in files.items()]
    files[f"{info}/RECORD"] = ("\n".join([*record, f"{info}/RECORD,,"]) + "\n").encode()
    with zipfile.ZipFile(folder / f"{module}-{version}-py3-none-any.whl", "w") as wheel:
        for path, data in files.items():
            wheel.writestr(path, data)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("wheelhouse")
    _wheel(folder, "autan-testpkg", "1.0", "def greet(who):\n    return 'hello ' + who\n")
    _wheel(folder, "autan-clash", "1.0", "", requires=("msgspec==0.0.1",))
    return folder


def _script(folder: Path, app: str, requirements: list[str]) -> str:
    path = folder / f"{app}.py"
    path.write_text(_APP.format(app=app, requirements=requirements))
    return str(path)


@pytest.fixture
async def layered(settings: Settings, wheelhouse: Path, tmp_path: Path) -> AsyncIterator[Stack]:
    own = msgspec.structs.replace(settings, wheelhouse=wheelhouse)
    async with Stack.running(own, _script(tmp_path, "layered", ["autan-testpkg==1.0"])) as stack:
        yield stack


async def test_a_function_imports_what_its_requirements_installed(layered: Stack) -> None:
    assert await layered.session.call("layered", "greet", ("layers",), {}) == "hello layers"
    spec = await layered.session.registry.get("layered", "greet")
    assert spec.layer
    assert spec.layer_bytes > 0


async def test_the_same_requirements_build_and_send_nothing_again(
    layered: Stack, tmp_path: Path
) -> None:
    store = await layered.session.link.store()
    before = {info.key for info in await store.list()}
    again = tmp_path / "again"
    again.mkdir()
    [result] = await deploy_target(
        layered.session.link, _script(again, "layered_again", ["autan-testpkg==1.0"])
    )  # another function, the same requirements: only its own artifact goes up
    added = {info.key for info in await store.list()} - before
    assert result.changed
    assert len(added) == 1
    assert not any(key.startswith("layers/") for key in added)
    spec = await layered.session.registry.get("layered_again", "greet")
    assert spec.layer == (await layered.session.registry.get("layered", "greet")).layer


COMPILED = Path(__file__).resolve().parents[2] / ".venv" / "wheelhouse"  # `make test` fills it


async def test_a_compiled_wheel_works_from_its_layer(
    stack: Stack, wheelhouse: Path, tmp_path: Path
) -> None:
    """mmh3 (a C extension, `make test` downloads its wheel) is installed nowhere here."""
    wheels = list(COMPILED.glob("mmh3-*.whl"))
    assert wheels, "run 'make test' (it downloads the mmh3 wheel into .venv/wheelhouse)"
    for wheel in wheels:
        shutil.copy(wheel, wheelhouse)
    source = tmp_path / "hashing.py"
    source.write_text(_HASHING)
    own = msgspec.structs.replace(stack.session.settings, wheelhouse=wheelhouse)
    async with Stack.running(own, str(source)) as hashing:
        value = await hashing.session.call("hashing", "murmur", ("autan",), {})
    assert value == 4048746462  # mmh3.hash("autan", signed=False), MurmurHash3 x86 32-bit


async def test_a_requirement_that_would_replace_a_base_package_is_refused(
    stack: Stack, wheelhouse: Path, tmp_path: Path
) -> None:
    link = stack.session.link
    settings = msgspec.structs.replace(link.settings, wheelhouse=wheelhouse)
    with pytest.raises(
        DeployError, match=r"cannot install requirements \['autan-clash==1.0'\].*msgspec"
    ):
        await deploy_target(
            Link(link.broker, link.registry, settings),
            _script(tmp_path, "clashing", ["autan-clash==1.0"]),
        )
    assert await stack.session.registry.find("clashing", "greet") is None


async def test_a_requirement_nowhere_to_be_found_is_named(
    stack: Stack, wheelhouse: Path, tmp_path: Path
) -> None:
    link = stack.session.link
    settings = msgspec.structs.replace(link.settings, wheelhouse=wheelhouse)
    with pytest.raises(DeployError, match=r"autan-nowhere"):
        await deploy_target(
            Link(link.broker, link.registry, settings),
            _script(tmp_path, "nowhere", ["autan-nowhere==1.0"]),
        )
