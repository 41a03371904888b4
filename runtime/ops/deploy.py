"""Deploy: package functions and models into object storage, register their specs.

Idempotent: the version is a digest of the code, the models and the options, so
an unchanged function keeps its version and uploads nothing.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import tempfile
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
    ArtifactRejected,
    DeployError,
    DeployKey,
    FunctionNotFound,
    FunctionSpec,
    Link,
    ModelEntry,
    Registry,
    Settings,
    Trust,
    key_id,
    python_version,
    recorded_trust,
)
from runtime.ops.buildcheck import imported_modules, unloadable
from runtime.ops.layers import Layer, ensure_layer
from runtime.ops.progress import UploadProgress
from runtime.ops.signatures import describe
from runtime.ops.versions import function_version
from storage import ArtifactStore, Digest

__all__ = ["DeployResult", "deploy_app", "deploy_target", "discover_apps", "package"]

log = structlog.get_logger("autan.deploy")

Handle = Function[Any, Any] | BatchedFunction[Any, Any]


class DeployResult(msgspec.Struct, frozen=True):
    qualname: str
    version: str
    changed: bool
    uploaded_bytes: int


class _Target(msgspec.Struct, frozen=True):
    """Where a deploy goes: the broker, its registry, the artifact store, and who signs."""

    broker: Broker
    registry: Registry
    artifacts: ArtifactStore
    key: DeployKey
    trust: Trust | None  # the keys the stack trusts, as it recorded them (None: not known)
    consumer: ConsumerPolicy
    limits: StreamLimits
    settings: Settings


async def deploy_target(link: Link, target: str) -> list[DeployResult]:
    """Deploy every app `target` defines (a package directory, a .py file or a module).

    Refused before anything is uploaded when the deploy key is not one the stack trusts.
    """
    settings = link.settings
    key = settings.load_deploy_key()
    trust = await recorded_trust(link.broker)
    if trust is not None and not trust.trusts(key.public):
        raise DeployError(
            f"the deploy key {key_id(key.public)} ({_where(settings)}) is not trusted by the "
            f"stack at {settings.nats_url}: deploy with the stack's key, or add the public key "
            f"{key.public} to the stack's trusted keys (AUTAN_TRUSTED_KEYS)"
        )
    await link.broker.ensure_calls_stream(_limits(settings))
    await link.broker.items.ensure(settings.result_ttl_s, _limits(settings).max_bytes // 4)
    if problem := await link.broker.logs.ensure(settings.logs_keep_s, settings.logs_max_bytes):
        log.warning("functions' logs are not kept", reason=problem)
    artifacts = ArtifactStore(await link.store())
    results = []
    for app in discover_apps(target):
        results += await deploy_app(
            app,
            broker=link.broker,
            artifacts=artifacts,
            key=key,
            trust=trust,
            consumer=ConsumerPolicy(ack_wait_s=settings.ack_wait_s),
            limits=_limits(settings),
            check_imports=settings.deploy_import_check,
            settings=settings,
        )
    return results


def _where(settings: Settings) -> str:
    return "AUTAN_DEPLOY_KEY" if settings.deploy_key else str(settings.deploy_key_path)


async def deploy_app(
    app: App,
    *,
    broker: Broker,
    artifacts: ArtifactStore,
    key: DeployKey,
    trust: Trust | None = None,
    consumer: ConsumerPolicy | None = None,
    limits: StreamLimits | None = None,
    check_imports: bool = True,
    settings: Settings | None = None,
) -> list[DeployResult]:
    """Deploy every function of `app`; unchanged ones upload nothing.

    `consumer` sets each function's durable consumer: its ack deadline is how long a
    call held by a worker that died waits before it is delivered again (workers that
    are alive extend it while they run the call). `limits`: of the trigger streams it
    makes. `check_imports`: refuse, before anything is uploaded, functions a clean
    interpreter here cannot load or whose imports it lacks (`ops.buildcheck`). `settings`:
    where `requirements=` are installed from (`ops.layers`).
    """
    registry = await Registry.open(broker)
    target = _Target(broker, registry, artifacts, key, trust, consumer or ConsumerPolicy(),
                     limits or StreamLimits(), settings or Settings())  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="autan-deploy-") as work:
        plans = [await _plan(handle, target, Path(work)) for handle in app.functions.values()]
        if check_imports:
            await _check_loadable([plan for plan in plans if plan.artifact is not None])
    # Every function's package and consumer first, then every registry entry: a failure
    # on the way leaves the app at its old versions, none of it half deployed.
    prepared = [await _prepare_one(plan, target) for plan in plans]
    for spec, result in prepared:
        if spec is not None:
            await target.registry.put(target.key.sign(spec))
            log.info("deployed", function=result.qualname, version=result.version,
                     uploaded_bytes=result.uploaded_bytes, sequence=spec.sequence)  # fmt: skip
    return [result for _, result in prepared]


class _Plan(msgspec.Struct):
    """One function's deploy: what it is, what is registered, its package if it changed."""

    handle: Any
    models: dict[str, tuple[Path, Digest]]
    version: str
    current: FunctionSpec | None
    artifact: bytes | None  # None: unchanged, nothing to upload
    layer: Layer | None = None  # its requirements' packages, when it has any


async def _plan(handle: Handle, target: _Target, work: Path) -> _Plan:
    models = await _model_digests(handle)
    tops = {m.__name__.split(".")[0] for m in _own_modules(handle)}
    version = function_version(handle, models, tops)
    current = await target.registry.find(handle.app_name, handle.name)
    if current is not None and await _unchanged(handle, current, version, target):
        return _Plan(handle, models, version, current, None)
    layer = None
    if requirements := handle.options.requirements:
        layer = await ensure_layer(requirements, target.settings, target.artifacts, work)
        log.info("requirements", function=handle.qualname, layer=str(layer.digest),
                 built=layer.built)  # fmt: skip
    return _Plan(handle, models, version, current, package(handle), layer)


async def _check_loadable(plans: list[_Plan]) -> None:
    cases = {
        plan.handle.qualname: (
            plan.artifact or b"",
            imported_modules([plan.handle.raw, plan.handle.setup], _own_modules(plan.handle)),
            [str(plan.layer.path)] if plan.layer is not None else [],
        )
        for plan in plans
    }
    refused = await unloadable(cases)
    if refused:
        qualname, why = sorted(refused.items())[0]
        raise DeployError(
            f"{qualname} would fail on every worker: {why}. Install it where workers run "
            "(and where you deploy from); nothing was deployed. Where workers run elsewhere, "
            "with other packages, AUTAN_DEPLOY_IMPORT_CHECK=false skips this check"
        )


async def _prepare_one(plan: _Plan, target: _Target) -> tuple[FunctionSpec | None, DeployResult]:
    """Upload what changed and set the function's consumer; the spec to register, if new."""
    handle, models, version, current = plan.handle, plan.models, plan.version, plan.current
    if plan.artifact is None:
        assert current is not None
        await _ensure_consumer(target.broker, current, target.consumer)
        return None, DeployResult(handle.qualname, version, changed=False, uploaded_bytes=0)
    uploaded, artifact, entries = await _upload(handle, models, plan.artifact, target.artifacts)
    layer = plan.layer.digest if plan.layer is not None else None
    uploaded += layer.size_bytes if layer is not None and plan.layer and plan.layer.built else 0
    spec = FunctionSpec(
        app=handle.app_name,
        name=handle.name,
        version=version,
        python=python_version(),
        artifact=artifact.hex,
        artifact_bytes=artifact.size_bytes,
        options=msgspec.structs.replace(handle.options, models={}),
        models=entries,
        sequence=(current.sequence + 1) if current is not None else 1,
        deployed_unix_s=time.time(),
        trigger=await _trigger(handle, target),
        layer=layer.hex if layer is not None else "",
        layer_bytes=layer.size_bytes if layer is not None else 0,
        signature=describe(handle.raw, batched=handle.options.batching is not None),
    )
    await _ensure_consumer(target.broker, spec, target.consumer)
    return spec, DeployResult(handle.qualname, version, changed=True, uploaded_bytes=uploaded)


async def _unchanged(handle: Handle, current: FunctionSpec, version: str, target: _Target) -> bool:
    """The same version registered, signed by a key the stack trusts, its artifact stored:
    nothing to upload. Anything else (an entry signed by another key, altered, its artifact
    gone) is deployed again."""
    if current.version != version:
        return False
    try:
        signed = await target.registry.signed(handle.app_name, handle.name)
        if target.trust is not None:
            target.trust.verify(signed, handle.app_name, handle.name)
        elif signed.key != target.key.public:
            return False
    except (ArtifactRejected, FunctionNotFound):
        return False
    digest = Digest(current.artifact, current.artifact_bytes)
    return await target.artifacts.store.stat(digest.key) is not None


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
        handle.app_name, handle.name, subject, target.limits
    )


def _limits(settings: Settings) -> StreamLimits:
    """The calls stream's and trigger streams' limits, as the settings say."""
    limits = StreamLimits(max_msgs=settings.max_queued_calls)
    if settings.max_queued_bytes is not None:
        limits = msgspec.structs.replace(limits, max_bytes=settings.max_queued_bytes)
    return limits


async def _model_digests(handle: Handle) -> dict[str, tuple[Path, Digest]]:
    digests = {}
    for name, model in handle.options.models.items():
        path = Path(model.path)
        digests[name] = (path, await anyio.to_thread.run_sync(Digest.of_file, path))
    return digests


async def _upload(
    handle: Handle,
    models: dict[str, tuple[Path, Digest]],
    artifact: bytes,
    artifacts: ArtifactStore,
) -> tuple[int, Digest, tuple[ModelEntry, ...]]:
    """Store the models and the packaged function (what is there already is not sent):
    the bytes sent, the artifact's digest, the models' entries."""
    uploaded = 0
    entries = []
    for name, (path, digest) in models.items():
        shown = UploadProgress(f"{handle.qualname} model {name}", digest.size_bytes)
        try:
            upload = await artifacts.put_file(path, shown)
        finally:
            shown.done()
        uploaded += digest.size_bytes if upload.uploaded else 0
        optimization = handle.options.models[name].optimization
        entries.append(ModelEntry(name, digest.hex, digest.size_bytes, path.name, optimization))
    upload = await artifacts.put_bytes(artifact)
    uploaded += len(artifact) if upload.uploaded else 0
    return uploaded, upload.digest, tuple(entries)


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
        if target.endswith(".py") or "/" in target:
            raise DeployError(
                f"{target}: no such file or directory; give a package directory, a .py file "
                "or a module name"
            )
        try:
            return importlib.import_module(target)
        except ModuleNotFoundError as exc:
            raise DeployError(
                f"{target}: no such file, directory or module ({exc}); give a package "
                "directory, a .py file or an importable module name"
            ) from None
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
