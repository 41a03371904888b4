"""Deploys are signed: workers and the control plane refuse what a trusted key did not sign
for that function, at that sequence; a deployer with an untrusted key is refused up front."""

from __future__ import annotations

import msgspec
import pytest

from broker import REGISTRY_BUCKET, function_key
from runtime import DeployError, FunctionNotFound, RemoteError
from runtime.client import Session
from runtime.control.verified import VerifiedSpecs
from runtime.core import (
    DeployKey,
    Settings,
    SignedSpec,
    Trust,
    WorkerDirectory,
    decode_spec,
    encode_spec,
    record_trust,
)
from runtime.ops import deploy_target
from storage import Digest
from tests.keys import DEPLOY_KEY, OTHER_KEY, TRUSTED_KEYS
from tests.stack import Stack

KEY = DeployKey.parse(DEPLOY_KEY)


async def _call_fails(stack: Stack, fn: str, message: str) -> None:
    await stack.start_worker(fn)
    try:
        with pytest.raises(RemoteError, match=message) as raised:
            await stack.session.call("tamper", fn, ("x",), {})
        assert raised.value.type == "ArtifactRejected"
    finally:
        await stack.stop_worker(fn)


async def test_altered_artifact_is_refused_before_unpickling(tamper_stack: Stack) -> None:
    spec = await tamper_stack.session.registry.get("tamper", "altered_artifact")
    key = Digest(spec.artifact, spec.artifact_bytes).key
    store = await tamper_stack.session.link.store()
    original = await store.get(key)
    await store.put(key, original[:-1] + b"\x00")
    await _call_fails(tamper_stack, "altered_artifact", "does not match its digest")


async def test_artifact_from_another_python_is_refused(tamper_stack: Stack) -> None:
    spec = await tamper_stack.session.registry.get("tamper", "other_python")
    await tamper_stack.session.registry.put(KEY.sign(msgspec.structs.replace(spec, python="3.10")))
    await _call_fails(tamper_stack, "other_python", "packaged on Python 3.10")


async def test_an_entry_signed_by_an_untrusted_key_is_refused(tamper_stack: Stack) -> None:
    spec = await tamper_stack.session.registry.get("tamper", "forged")
    await tamper_stack.session.registry.put(DeployKey.parse(OTHER_KEY).sign(spec))
    await _call_fails(tamper_stack, "forged", "which this stack does not trust")


async def test_edited_options_are_refused(tamper_stack: Stack) -> None:
    registry = tamper_stack.session.registry
    signed = await registry.signed("tamper", "edited_options")
    spec = decode_spec(signed.body)
    longer = msgspec.structs.replace(spec.options, timeout_s=100_000.0)
    edited = encode_spec(msgspec.structs.replace(spec, options=longer))
    await registry.put(SignedSpec(body=edited, signature=signed.signature, key=signed.key))
    await _call_fails(tamper_stack, "edited_options", "does not match its signature")


async def test_an_entry_copied_under_another_name_is_refused(tamper_stack: Stack) -> None:
    """Callers do not follow it elsewhere, and a worker refuses to serve it."""
    registry = tamper_stack.session.registry
    other = await registry.signed("tamper", "altered_artifact")
    bucket = await tamper_stack.session.broker.bucket(REGISTRY_BUCKET)
    await bucket.put(function_key("tamper", "copied"), msgspec.msgpack.encode(other))
    registry.forget("tamper", "copied")
    with pytest.raises(FunctionNotFound, match=r"is the spec of tamper\.altered_artifact"):
        await tamper_stack.session.call("tamper", "copied", ("x",), {})
    worker = await tamper_stack.start_worker("copied")
    try:
        directory = await WorkerDirectory.open(tamper_stack.session.broker)
        [info] = [
            w
            for w in await directory.wait_until(
                lambda ws: any(w.function == "tamper.copied" for w in ws), 10
            )
            if w.function == "tamper.copied"
        ]
        assert info.worker_id == worker.worker_id
        assert info.state == "broken"
    finally:
        await tamper_stack.stop_worker("copied")


async def test_an_older_deploy_written_back_is_refused(tamper_stack: Stack) -> None:
    """A rollback: the control plane refuses it, and so does a worker it starts."""
    session = tamper_stack.session
    specs = await VerifiedSpecs.open(session.broker, Trust.parse(TRUSTED_KEYS))
    old = await session.registry.signed("tamper", "rolled_back")
    newer = msgspec.structs.replace(
        decode_spec(old.body), sequence=decode_spec(old.body).sequence + 1
    )
    await session.registry.put(KEY.sign(newer))
    verified, refused = await specs.read({})
    assert [s.sequence for s in verified if s.name == "rolled_back"] == [newer.sequence]
    await session.registry.put(old)  # written back
    _, refused = await specs.read({})
    [reason] = [r.reason for r in refused if r.qualname == "tamper.rolled_back"]
    assert "(a rollback)" in reason
    again = await VerifiedSpecs.open(session.broker, Trust.parse(TRUSTED_KEYS))
    _, refused = await again.read({})  # a control plane started afresh remembers
    assert "tamper.rolled_back" in {r.qualname for r in refused}
    worker = await tamper_stack.start_worker("rolled_back", min_sequence=newer.sequence)
    try:
        with pytest.raises(RemoteError, match="a rollback"):
            await session.call("tamper", "rolled_back", ("x",), {})
    finally:
        await tamper_stack.stop_worker("rolled_back")
    assert worker.min_sequence == newer.sequence


async def test_a_deploy_with_an_untrusted_key_is_refused_before_uploading(
    settings: Settings, tamper_stack: Stack
) -> None:
    await record_trust(tamper_stack.session.broker, Trust.parse(TRUSTED_KEYS))
    other = msgspec.structs.replace(settings, deploy_key=OTHER_KEY)
    store = await tamper_stack.session.link.store()
    before = await store.list()
    async with await Session.open(other) as session:
        with pytest.raises(DeployError, match="is not trusted by the stack"):
            await deploy_target(session.link, "tests.apps.tamper")
    assert await store.list() == before


async def test_an_entry_by_another_key_is_deployed_again_not_kept(tamper_stack: Stack) -> None:
    registry = tamper_stack.session.registry
    spec = await registry.get("tamper", "forged")
    await registry.put(DeployKey.parse(OTHER_KEY).sign(spec))
    results = await deploy_target(tamper_stack.session.link, "tests.apps.tamper")
    [forged] = [r for r in results if r.qualname == "tamper.forged"]
    assert forged.changed  # the unchanged check verifies the signature
    assert (await registry.signed("tamper", "forged")).key == KEY.public
