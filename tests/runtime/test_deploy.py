"""Deploy is idempotent, and workers refuse artifacts that fail verification."""

from __future__ import annotations

import time

import msgspec
import pytest

from broker import BrokerUnavailable
from runtime import RemoteError
from runtime.client import Session
from runtime.core import Manifest, Settings
from runtime.ops import deploy_target
from storage import ArtifactStore, Digest
from tests.stack import Stack


async def test_redeploy_uploads_nothing_and_keeps_versions(stack: Stack) -> None:
    store = await stack.session.link.store()
    before = await store.list()
    again = await deploy_target(stack.session.link, "tests.apps.sample")
    assert {r.qualname: r.version for r in again} == {r.qualname: r.version for r in stack.results}
    assert all(not r.changed and r.uploaded_bytes == 0 for r in again)
    assert await store.list() == before


async def test_artifacts_are_content_addressed(stack: Stack) -> None:
    spec = await stack.session.registry.get("tests", "echo")
    artifacts = ArtifactStore(await stack.session.link.store())
    manifest = Manifest.verify(await artifacts.store.get(spec.manifest_key), b"test-signing-key")
    assert manifest is not None
    data = await artifacts.get_bytes(Digest(manifest.artifact, manifest.artifact_bytes))
    assert Digest.of(data).hex == manifest.artifact
    assert manifest.python == spec.python


async def _manifest(stack: Stack, fn: str) -> tuple[str, Manifest]:
    spec = await stack.session.registry.get("tamper", fn)
    raw = await (await stack.session.link.store()).get(spec.manifest_key)
    manifest = Manifest.verify(raw, b"test-signing-key")
    assert manifest is not None
    return spec.manifest_key, manifest


async def _call_fails(stack: Stack, fn: str, message: str) -> None:
    await stack.start_worker(fn)
    try:
        with pytest.raises(RemoteError, match=message) as raised:
            await stack.session.call("tamper", fn, ("x",), {})
        assert raised.value.type == "ArtifactRejected"
    finally:
        await stack.stop_worker(fn)


async def test_altered_artifact_is_refused_before_unpickling(settings: Settings) -> None:
    async with Stack.running(settings, "tests.apps.tamper", start_workers=False) as stack:
        _, manifest = await _manifest(stack, "altered_artifact")
        key = Digest(manifest.artifact, manifest.artifact_bytes).key
        store = await stack.session.link.store()
        original = await store.get(key)
        await store.put(key, original[:-1] + b"\x00")
        await _call_fails(stack, "altered_artifact", "does not match its digest")


async def test_artifact_from_another_python_is_refused(settings: Settings) -> None:
    async with Stack.running(settings, "tests.apps.tamper", start_workers=False) as stack:
        key, manifest = await _manifest(stack, "other_python")
        other = msgspec.structs.replace(manifest, python="3.10")
        await (await stack.session.link.store()).put(key, other.sign(b"test-signing-key"))
        await _call_fails(stack, "other_python", "packaged on Python 3.10")


async def test_forged_manifest_is_refused(settings: Settings) -> None:
    async with Stack.running(settings, "tests.apps.tamper", start_workers=False) as stack:
        key, manifest = await _manifest(stack, "forged_manifest")
        forged = msgspec.structs.replace(manifest, artifact="0" * 64)
        await (await stack.session.link.store()).put(key, forged.sign(b"another key"))
        await _call_fails(stack, "forged_manifest", "signature does not match")


async def test_unreachable_nats_fails_fast_with_the_url(settings: Settings) -> None:
    from runtime.control import free_port

    url = f"nats://127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable, match=f"cannot reach NATS at {url} - is 'autan up'"):
        await Session.open(msgspec.structs.replace(settings, nats_url=url, connect_timeout_s=1.0))
    assert time.monotonic() - started < 3.0
