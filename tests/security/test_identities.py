"""NATS identities, enforced by nats-server: no anonymous connection, and each role can do
its own work and nothing more (a function's workers: their own calls only)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from broker import (
    REGISTRY_BUCKET,
    Broker,
    Identities,
    Inline,
    PermissionDenied,
    StreamLimits,
    Success,
    calls_source,
    encode,
    encode_value,
    function_key,
    new_call_id,
    worker_role,
)
from runtime.client import Session
from runtime.control import EmbeddedAccess, NatsServer, free_port
from runtime.core import ADMIN, CALLER, FunctionSpec, Link, Settings
from runtime.ops import deploy_target
from tests.keys import DEPLOY_KEY, TRUSTED_KEYS


class Secured:
    """A nats-server started as `autan up` starts its own: every role an nkey."""

    def __init__(self, server: NatsServer, access: EmbeddedAccess, settings: Settings) -> None:
        self.server = server
        self.access = access
        self.settings = settings

    async def connect(self, role: str, creds: Path | None) -> Broker:
        return await Broker.connect(self.server.url, connect_timeout_s=2.0, creds=creds, role=role)

    async def spec(self, fn: str) -> FunctionSpec:
        async with await Link.open(self.settings, role=ADMIN) as link:
            return await link.registry.get("tests", fn)

    async def worker(self, fn: str) -> Broker:
        """A connection with the identity of `tests.<fn>`'s workers."""
        spec = await self.spec(fn)
        creds = await self.access.worker_creds(spec)
        return await self.connect(worker_role("tests", fn), creds)


@pytest.fixture(scope="module")
async def secured(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Secured]:
    root = tmp_path_factory.mktemp("secured")
    access = EmbeddedAccess(Identities(root / "creds"))
    server = NatsServer(root / "nats", port=free_port(), authorization=access.authorization())
    server.start()
    access.attach(server)
    settings = Settings(
        nats_url=server.url,
        data_dir=root,
        storage_url=f"file://{root / 'objects'}",
        deploy_key=DEPLOY_KEY,
        trusted_keys=TRUSTED_KEYS,
        connect_timeout_s=2.0,
    )
    try:
        async with await Link.open(settings, role=ADMIN) as link:
            await deploy_target(link, "tests.apps.sample")
        yield Secured(server, access, settings)
    finally:
        server.stop()


async def test_an_anonymous_connection_is_refused(secured: Secured) -> None:
    with pytest.raises(PermissionDenied, match="refused this process with no credentials"):
        await secured.connect(CALLER, None)


async def test_a_caller_calls_but_cannot_rewrite_the_registry(secured: Secured) -> None:
    async with await Session.open(secured.settings, role=CALLER) as session:
        submission = await session.link.submit(
            await session.registry.get("tests", "echo"),
            new_call_id(),
            encode_value((("x",), {})),
            live=False,
            record=True,
        )
        assert await submission.acked() > 0  # a call: allowed
        registry = await session.broker.bucket(REGISTRY_BUCKET)
        with pytest.raises(PermissionDenied, match="refused it to this connection's identity"):
            await registry.put(function_key("tests", "echo"), b"rewritten")


async def test_a_worker_cannot_take_another_functions_calls(secured: Secured) -> None:
    broker = await secured.worker("echo")
    try:
        own = await broker.pull(calls_source("tests", "echo"), window=1)  # its own: allowed
        await own.stop()
        with pytest.raises(PermissionDenied):
            await broker.pull(calls_source("tests", "boom"), window=1)
        with pytest.raises(PermissionDenied):
            await broker.dead_letters.purge()
        registry = await broker.bucket(REGISTRY_BUCKET)
        with pytest.raises(PermissionDenied):
            await registry.put(function_key("tests", "boom"), b"PWNED")
    finally:
        await broker.close()


async def test_a_worker_cannot_answer_another_functions_call(secured: Secured) -> None:
    """A forged result for `tests.boom`'s call, published by `tests.echo`'s identity, never
    reaches its caller; `tests.boom`'s own identity can answer it."""
    async with await Session.open(secured.settings, role=CALLER) as caller:
        assert not await _answered_by(secured, caller, "echo")
        assert await _answered_by(secured, caller, "boom")


async def _answered_by(secured: Secured, caller: Session, fn: str) -> bool:
    """Whether a result for a live call of `tests.boom`, published with the identity of
    `tests.<fn>`'s workers, reaches the caller within a second."""
    spec = await caller.registry.get("tests", "boom")
    call_id = new_call_id()
    arguments = encode_value((("x",), {}))
    submission = await caller.link.submit(spec, call_id, arguments, live=True, record=False)
    await submission.acked()
    forged = encode(Success(call_id=call_id, payload=Inline(encode_value("FORGED"))))
    worker = await secured.worker(fn)
    try:
        await worker.publish(caller.broker.result_subject("tests", "boom", call_id), forged)
        await worker.flush()
    finally:
        await worker.close()
    with anyio.move_on_after(1.0):
        await submission.result()
        return True
    return False


async def test_workers_may_not_administer_jetstream(secured: Secured) -> None:
    broker = await secured.worker("echo")
    try:
        with pytest.raises(PermissionDenied):
            await broker.ensure_calls_stream(StreamLimits(max_msgs=1))
        with pytest.raises(PermissionDenied):
            await broker.backlog(calls_source("tests", "boom"))
    finally:
        await broker.close()
