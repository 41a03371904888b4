"""Deploy is idempotent and content-addressed (tests/security/test_signatures.py has what
workers refuse)."""

from __future__ import annotations

import time

import msgspec
import pytest

from broker import BrokerUnavailable
from runtime.client import Session
from runtime.core import (
    DeployKey,
    Settings,
    Trust,
)
from runtime.ops import deploy_target
from storage import ArtifactStore, Digest
from tests.keys import DEPLOY_KEY, TRUSTED_KEYS
from tests.stack import Stack

KEY = DeployKey.parse(DEPLOY_KEY)


async def test_redeploy_uploads_nothing_and_keeps_versions(stack: Stack) -> None:
    store = await stack.session.link.store()
    before = await store.list()
    again = await deploy_target(stack.session.link, "tests.apps.sample")
    assert {r.qualname: r.version for r in again} == {r.qualname: r.version for r in stack.results}
    assert all(not r.changed and r.uploaded_bytes == 0 for r in again)
    assert await store.list() == before


async def test_specs_are_signed_and_artifacts_content_addressed(stack: Stack) -> None:
    signed = await stack.session.registry.signed("tests", "echo")
    spec = Trust.parse(TRUSTED_KEYS).verify(signed, "tests", "echo")
    artifacts = ArtifactStore(await stack.session.link.store())
    data = await artifacts.get_bytes(Digest(spec.artifact, spec.artifact_bytes))
    assert Digest.of(data).hex == spec.artifact
    assert spec.sequence >= 1


async def test_unreachable_nats_fails_fast_with_the_url(settings: Settings) -> None:
    from runtime.control import free_port

    url = f"nats://127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable, match=f"cannot reach NATS at {url} - is 'autan up'"):
        await Session.open(msgspec.structs.replace(settings, nats_url=url, connect_timeout_s=1.0))
    assert time.monotonic() - started < 3.0
