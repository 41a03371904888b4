"""Deploy: package functions and models into object storage, register their specs.

Idempotent: the version is a digest of the code, the models and the options, so
an unchanged function keeps its version and uploads nothing.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import anyio
import cloudpickle
import msgspec
import structlog

from broker import Broker, ConsumerPolicy, Source, StreamLimits
from runtime.client import App, BatchedFunction, Function
from runtime.core import (
    DeployError,
    FunctionSpec,
    Link,
    Manifest,
    ModelEntry,
    Registry,
    python_version,
)
from storage import ArtifactStore, Digest

__all__ = ["DeployResult", "deploy_app", "deploy_target", "discover_apps", "manifest_key"]

log = structlog.get_logger("autan.deploy")

Handle = Function[Any, Any] | BatchedFunction[Any, Any]


class DeployResult(msgspec.Struct, frozen=True):
    qualname: str
    version: str
    changed: bool
    uploaded_bytes: int


def manifest_key(app: str, fn: str, version: str) -> str:
    return f"manifests/{app}/{fn}/{version}.json"


class _Target(msgspec.Struct, frozen=True):
    """Where a deploy goes: the broker, its registry, the artifact store, and how to sign."""

    broker: Broker
    registry: Registry
    artifacts: ArtifactStore
    signing_key: bytes
    consumer: ConsumerPolicy


async def deploy_target(link: Link, target: str) -> list[DeployResult]:
    """Deploy every app `target` defines (a package directory, a .py file or a module)."""
    settings = link.settings
    await link.broker.ensure_calls_stream(StreamLimits(max_msgs=settings.max_queued_calls))
    artifacts = ArtifactStore(await link.store())
    key = settings.signing_key_bytes(create=True)
    results = []
    for app in discover_apps(target):
        results += await deploy_app(
            app,
            broker=link.broker,
            artifacts=artifacts,
            signing_key=key,
            consumer=ConsumerPolicy(ack_wait_s=settings.ack_wait_s),
        )
    return results


async def deploy_app(
    app: App,
    *,
    broker: Broker,
    artifacts: ArtifactStore,
    signing_key: bytes,
    consumer: ConsumerPolicy | None = None,
) -> list[DeployResult]:
    """Deploy every function of `app`; unchanged ones upload nothing.

    `consumer` sets each function's durable consumer: its ack deadline is how long a
    call held by a worker that died waits before it is delivered again (workers that
    are alive extend it while they run the call).
    """
    target = _Target(
        broker, await Registry.open(broker), artifacts, signing_key, consumer or ConsumerPolicy()
    )
    return [await _deploy_one(handle, target) for handle in app.functions.values()]


async def _deploy_one(handle: Handle, target: _Target) -> DeployResult:
    broker, registry, artifacts, key = (
        target.broker,
        target.registry,
        target.artifacts,
        target.signing_key,
    )
    models = await _model_digests(handle)
    version = _version(handle, models)
    current = await registry.find(handle.app_name, handle.name)
    if await _unchanged(current, version, artifacts):
        assert current is not None
        await _ensure_consumer(broker, current, target.consumer)
        return DeployResult(handle.qualname, version, changed=False, uploaded_bytes=0)
    uploaded, manifest = await _upload(handle, version, models, artifacts)
    spec = FunctionSpec(
        app=handle.app_name,
        name=handle.name,
        version=version,
        manifest_key=manifest_key(handle.app_name, handle.name, version),
        python=manifest.python,
        options=manifest.options,
        models=manifest.models,
        deployed_unix_s=time.time(),
    )
    await artifacts.store.put(spec.manifest_key, manifest.sign(key))
    spec = msgspec.structs.replace(spec, trigger=await _trigger(handle, target))
    await _ensure_consumer(broker, spec, target.consumer)
    await registry.put(spec)
    log.info("deployed", function=handle.qualname, version=version, uploaded_bytes=uploaded)
    return DeployResult(handle.qualname, version, changed=True, uploaded_bytes=uploaded)


async def _unchanged(current: FunctionSpec | None, version: str, artifacts: ArtifactStore) -> bool:
    """Same version registered and its manifest still stored: nothing to upload."""
    if current is None or current.version != version:
        return False
    return await artifacts.store.stat(current.manifest_key) is not None


async def _ensure_consumer(broker: Broker, spec: FunctionSpec, policy: ConsumerPolicy) -> None:
    """The function's consumer, with a bound on deliveries that its retries decide."""
    bounded = msgspec.structs.replace(policy, max_deliver=spec.options.max_deliveries)
    await broker.ensure_consumer(spec.source, bounded)


async def _trigger(handle: Handle, target: _Target) -> Source | None:
    """For `on=` functions: the stream capturing the subject, found or created."""
    subject = handle.options.on
    if subject is None:
        return None
    return await target.broker.ensure_trigger_source(
        handle.app_name, handle.name, subject, StreamLimits()
    )


async def _model_digests(handle: Handle) -> dict[str, tuple[Path, Digest]]:
    digests = {}
    for name, model in handle.options.models.items():
        path = Path(model.path)
        digests[name] = (path, await anyio.to_thread.run_sync(Digest.of_file, path))
    return digests


async def _upload(
    handle: Handle,
    version: str,
    models: dict[str, tuple[Path, Digest]],
    artifacts: ArtifactStore,
) -> tuple[int, Manifest]:
    uploaded = 0
    entries = []
    for name, (path, digest) in models.items():
        upload = await artifacts.put_file(path)
        uploaded += digest.size_bytes if upload.uploaded else 0
        optimization = handle.options.models[name].optimization
        entries.append(ModelEntry(name, digest.hex, digest.size_bytes, path.name, optimization))
    artifact = package(handle)
    upload = await artifacts.put_bytes(artifact)
    uploaded += len(artifact) if upload.uploaded else 0
    manifest = Manifest(
        app=handle.app_name,
        name=handle.name,
        version=version,
        python=python_version(),
        artifact=upload.digest.hex,
        artifact_bytes=len(artifact),
        models=tuple(entries),
        options=msgspec.structs.replace(handle.options, models={}),
        created_unix_s=time.time(),
    )
    return uploaded, manifest


def package(handle: Handle) -> bytes:
    """cloudpickle the function and its setup hook by value (their modules travel too)."""
    with _by_value(_own_modules(handle)):
        try:
            return bytes(cloudpickle.dumps((handle.raw, handle.setup), protocol=5))
        except Exception as exc:
            raise DeployError(f"cannot package {handle.qualname}: {exc}") from exc


def _own_modules(handle: Handle) -> list[ModuleType]:
    """The modules of the function's top-level package: they may not exist on a worker."""
    names = {f.__module__ for f in (handle.raw, handle.setup) if f is not None}
    tops = {name.split(".")[0] for name in names if name != "__main__"}
    return [
        module
        for name, module in list(sys.modules.items())
        if name.split(".")[0] in tops and module is not None
    ]


@contextmanager
def _by_value(modules: list[ModuleType]) -> Iterator[None]:
    for module in modules:
        cloudpickle.register_pickle_by_value(module)
    try:
        yield
    finally:
        for module in modules:
            cloudpickle.unregister_pickle_by_value(module)


def _version(handle: Handle, models: dict[str, tuple[Path, Digest]]) -> str:
    """A digest of what the function does: its modules' source, models, options, Python."""
    hasher = hashlib.sha256()
    for part in _version_parts(handle, models):
        hasher.update(part)
        hasher.update(b"\0")
    return hasher.hexdigest()[:16]


def _version_parts(handle: Handle, models: dict[str, tuple[Path, Digest]]) -> Iterator[bytes]:
    yield f"{handle.qualname}|{python_version()}|{handle.raw.__qualname__}".encode()
    for module in sorted(_own_modules(handle), key=lambda m: m.__name__):
        yield module.__name__.encode()
        yield _source(module)
    yield msgspec.json.encode(msgspec.structs.replace(handle.options, models={}))
    for name, (_, digest) in sorted(models.items()):
        yield f"{name}={digest.hex}".encode()


def _source(module: ModuleType) -> bytes:
    try:
        return inspect.getsource(module).encode()
    except (OSError, TypeError):
        return b""


def discover_apps(target: str) -> list[App]:
    """The `App`s defined by a package directory, a .py file or a dotted module name."""
    module = _import_target(target)
    found = {id(v): v for v in vars(module).values() if isinstance(v, App)}
    for name, sub in list(sys.modules.items()):
        if name.startswith(module.__name__ + ".") and sub is not None:
            found.update({id(v): v for v in vars(sub).values() if isinstance(v, App)})
    if not found:
        raise DeployError(
            f"{target}: no App found; define app = App('name') and decorate functions"
        )
    return list(found.values())


def _import_target(target: str) -> ModuleType:
    path = Path(target)
    if not path.exists():
        return importlib.import_module(target)
    path = path.resolve()
    package_dir = path if path.is_dir() else path.parent
    if (package_dir / "__init__.py").exists():
        sys.path.insert(0, str(package_dir.parent))
        name = package_dir.name if path.is_dir() else f"{package_dir.name}.{path.stem}"
    else:
        sys.path.insert(0, str(package_dir))
        name = path.stem
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise DeployError(f"cannot import {target}: {exc}") from exc
