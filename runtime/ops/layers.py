"""Dependency layers: the packages a function's `requirements=` names, built once by deploy.

Deploy installs the requirements with pip into an empty folder, constrained to the versions
installed here (so the base's numpy, onnxruntime, msgspec... are never replaced: a
requirement that needs other versions of them fails the deploy, naming the conflict),
drops what the base already has, and stores the rest as one zip, content-addressed like
artifacts. The layer is found again by a key over the requirements, the Python version and
the base's packages (`layers/<key>` names its digest): unchanged requirements build and
upload nothing. Workers fetch it by digest, verify it, unpack it once into their cache and
put it first on `sys.path` before they unpickle the function: they never reach a package
index. Deploy reaches the one its settings name: `AUTAN_WHEELHOUSE` (a folder of wheels,
for air-gapped sites) or `AUTAN_PIP_INDEX_URL` (an internal index), else pip's default.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import io
import shutil
import site
import sys
import tempfile
import zipfile
from pathlib import Path

import anyio
import anyio.to_thread
import msgspec

from runtime.core import DeployError, Settings, python_version
from storage import ArtifactStore, Digest, ObjectNotFound, unpack_zip

__all__ = ["Layer", "ensure_layer"]

_BUILD_TIMEOUT_S = 600.0


class Layer(msgspec.Struct, frozen=True):
    """A stored layer: its digest, and where it was unpacked for the build check."""

    digest: Digest
    built: bool  # False: found stored from an earlier deploy
    path: Path


async def ensure_layer(
    requirements: tuple[str, ...], settings: Settings, artifacts: ArtifactStore, work: Path
) -> Layer:
    """The layer of `requirements`, built and stored unless it is already (then nothing is
    built or sent); unpacked under `work` either way. DeployError says what pip refused."""
    base = _base()  # one scan of site-packages serves the key, the constraints and the pruning
    key = _key(requirements, base)
    index = f"layers/{key}"
    site = work / key
    try:
        known = msgspec.json.decode(await artifacts.store.get(index), type=Digest)
        data = await artifacts.get_bytes(known)
    except ObjectNotFound:
        data = await _build(requirements, settings, site, base)
        stored = await artifacts.put_bytes(data)
        await artifacts.store.put(index, msgspec.json.encode(stored.digest))
        return Layer(stored.digest, built=True, path=site)
    await anyio.to_thread.run_sync(unpack_zip, data, site)
    return Layer(known, built=False, path=site)


def _key(requirements: tuple[str, ...], base: list[str]) -> str:
    hasher = hashlib.sha256()
    for part in (python_version(), sys.platform, *sorted(requirements), *base):
        hasher.update(part.encode())
        hasher.update(b"\0")
    return hasher.hexdigest()[:32]


def _base() -> list[str]:
    """`name==version` of every package installed here (in site-packages, not whatever
    this process added to its path): the constraints of a layer."""
    found = {
        dist.metadata["Name"].lower(): dist.version
        for dist in importlib.metadata.distributions(path=site.getsitepackages())
        if dist.metadata["Name"]
    }
    return sorted(f"{name}=={version}" for name, version in found.items())


async def _build(
    requirements: tuple[str, ...], settings: Settings, site: Path, base: list[str]
) -> bytes:
    with tempfile.TemporaryDirectory(prefix="autan-layer-") as tmp:
        built = Path(tmp) / "site"
        constraints = Path(tmp) / "base.txt"
        constraints.write_text("\n".join(base) + "\n")
        command = [
            sys.executable, "-m", "pip", "install", "--target", str(built), "--no-input",
            "--disable-pip-version-check", "--no-warn-script-location", "--no-compile",
            "--constraint", str(constraints), *_index_args(settings), *requirements,
        ]  # fmt: skip
        with anyio.fail_after(_BUILD_TIMEOUT_S):
            done = await anyio.run_process(command, check=False)
        if done.returncode != 0:
            raise DeployError(
                f"cannot install requirements {list(requirements)} beside this environment's "
                f"packages: {_pip_error((done.stdout + done.stderr).decode(errors='replace'))}"
            )
        await anyio.to_thread.run_sync(_drop_base, built, base)
        data = await anyio.to_thread.run_sync(_zip, built)
    await anyio.to_thread.run_sync(unpack_zip, data, site)
    return data


def _index_args(settings: Settings) -> list[str]:
    if settings.wheelhouse is not None:
        return ["--no-index", "--find-links", str(settings.wheelhouse)]
    if settings.pip_index_url:
        return ["--index-url", settings.pip_index_url]
    return []


def _pip_error(stderr: str) -> str:
    """pip's own words on what failed: its ERROR lines and the conflict it explains."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    wanted = [
        line
        for line in lines
        if (line.startswith("ERROR") and "ResolutionImpossible" not in line)
        or "conflict" in line.lower()
        or "depends on" in line
        or "requested" in line
    ]
    return " ".join((wanted or lines)[-8:])[:1500]


def _drop_base(site: Path, base: list[str]) -> None:
    """Remove what pip put there that the base has already (the same versions, by the
    constraints): workers import the base's own."""
    names = {line.split("==")[0].replace("_", "-") for line in base}
    for info in site.glob("*.dist-info"):
        name = info.name.removesuffix(".dist-info").rsplit("-", 1)[0]
        if name.lower().replace("_", "-") not in names:
            continue
        record = info / "RECORD"
        paths = (
            [line.split(",")[0] for line in record.read_text().splitlines()]
            if record.exists()
            else []
        )
        for relative in paths:
            (site / relative).unlink(missing_ok=True)
        shutil.rmtree(info, ignore_errors=True)
    for folder in sorted(site.rglob("*"), reverse=True):  # what emptied
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


def _zip(site: Path) -> bytes:
    """The folder as a zip with fixed times and order: the same files, the same bytes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(p for p in site.rglob("*") if p.is_file()):
            if "__pycache__" in path.parts:
                continue
            info = zipfile.ZipInfo(str(path.relative_to(site)), date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            archive.writestr(info, path.read_bytes(), zipfile.ZIP_DEFLATED)
    return buffer.getvalue()
