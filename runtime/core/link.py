"""The link every process shares: one NATS connection, the registry, the payload store.

Callers (`client.Session`), the HTTP bridge and workers all reach the stack through
a `Link`: it publishes calls, moves large payloads through object storage, and reads
function specs. It is opened per process (or per event loop) and closed with it:

    async with await Link.open(settings, name="autan-tool") as link:
        spec = await link.registry.get("demo", "echo")
"""

from __future__ import annotations

import time
from contextlib import suppress
from types import TracebackType

import anyio

from broker import (
    CONFIG_BUCKET,
    RESULTS_BUCKET,
    SPAWNED_BUCKET,
    STORAGE_URL_KEY,
    TRUSTED_KEYS_KEY,
    Broker,
    Bucket,
    CallMsg,
    Inline,
    KeyNotFound,
    Payload,
    StoredRef,
    StreamSubmission,
    Submission,
    call_subject,
    encode,
)
from runtime.core.registry import Registry
from runtime.core.settings import Settings
from runtime.core.spec import FunctionSpec
from runtime.core.trust import Trust
from storage import ObjectStore, open_store

__all__ = [
    "ADMIN",
    "CALLER",
    "GATEWAY",
    "Link",
    "record_storage_url",
    "record_trust",
    "recorded_trust",
    "storage_url",
]

# The roles a process connects as (workers: `broker.permissions.worker_role`).
ADMIN = "admin"
CALLER = "caller"
GATEWAY = "gateway"


class Link:
    """One broker connection with the registry and the stack's object store."""

    def __init__(self, broker: Broker, registry: Registry, settings: Settings) -> None:
        self.broker = broker
        self.registry = registry
        self.settings = settings
        self._store: ObjectStore | None = None

    @classmethod
    async def open(
        cls,
        settings: Settings,
        *,
        name: str = "autan-client",
        role: str = CALLER,
        registry_at_first_use: bool = False,
    ) -> Link:
        """Connect as `role` (its credentials: `Settings.creds_for`); BrokerUnavailable names
        the URL when NATS cannot be reached (or JetStream does not answer), PermissionDenied
        when it refuses them. `registry_at_first_use`: look the registry's bucket up when
        first read, not now (a worker's start: it reads one entry, right away)."""
        broker = await Broker.connect(
            settings.nats_url,
            name=name,
            connect_timeout_s=settings.connect_timeout_s,
            creds=settings.creds_for(role),
            role=role,
            tls=settings.nats_tls(),
            replicas=settings.nats_replicas,
        )
        try:
            registry = Registry(broker) if registry_at_first_use else await Registry.open(broker)
            return cls(broker, registry, settings)
        except BaseException:  # the connection would be left open otherwise
            with anyio.CancelScope(shield=True):
                await broker.close()
            raise

    async def close(self) -> None:
        if self._store is not None:
            await self._store.aclose()
        await self.broker.close()

    async def __aenter__(self) -> Link:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        with anyio.CancelScope(shield=True):
            await self.close()

    # -- calls out ---------------------------------------------------------------------

    async def submit(
        self,
        spec: FunctionSpec,
        call_id: str,
        encoded: bytes,
        *,
        live: bool,
        record: bool,
        items: int = 0,
    ) -> Submission:
        """Publish a call whose `[args, kwargs]` are encoded already (`encode_value`).

        `live`: the result comes back on this connection; `record`: the worker keeps it
        in the results bucket (for `result()`, later or elsewhere). `items`: the call is
        a pack of that many calls, `encoded` their list of `[args, kwargs]`.
        """
        message = await self._call(spec, call_id, encoded, live=live, record=record, items=items)
        return await self.broker.submit(
            call_subject(spec.app, spec.name), call_id, encode(message), expect_result=live
        )

    async def submit_stream(
        self, spec: FunctionSpec, call_id: str, encoded: bytes
    ) -> StreamSubmission:
        """Publish a call of a generator function: its items come back on this connection
        (`StreamSubmission.next`), then its result."""
        message = await self._call(spec, call_id, encoded, live=True, record=False, items=0)
        return await self.broker.submit_stream(
            call_subject(spec.app, spec.name), call_id, encode(message)
        )

    async def _call(
        self, spec: FunctionSpec, call_id: str, encoded: bytes, *, live: bool, record: bool,
        items: int,
    ) -> CallMsg:  # fmt: skip
        return CallMsg(
            call_id=call_id,
            app=spec.app,
            fn=spec.name,
            payload=await self.offload(f"payloads/{call_id}", encoded),
            reply=self.broker.result_subject(spec.app, spec.name, call_id) if live else None,
            record=record,
            created_unix_s=time.time(),
            timeout_s=spec.options.timeout_s,
            items=items,
            sequence=spec.sequence,
        )

    async def remember_spawned(self, call_id: str, spec: FunctionSpec) -> None:
        """Note that `call_id` will have a recorded result (kept as long as results are),
        so that waiting for an unknown or expired id says so rather than waiting."""
        await self.remember_spawned_as(call_id, spec.qualname)

    async def remember_spawned_as(self, call_id: str, qualname: str) -> None:
        """`remember_spawned` for a call of `qualname` (`<app>.<fn>`)."""
        bucket = await self.broker.bucket(SPAWNED_BUCKET, ttl_s=self.settings.result_ttl_s)
        await bucket.put(call_id, qualname.encode())

    async def spawned(self, call_id: str) -> bool:
        return await self.spawned_function(call_id) is not None

    async def spawned_function(self, call_id: str) -> str | None:
        """The `<app>.<fn>` of spawned call `call_id`; None for an unknown or expired id."""
        bucket = await self.broker.bucket(SPAWNED_BUCKET, ttl_s=self.settings.result_ttl_s)
        try:
            return (await bucket.get(call_id)).decode()
        except KeyNotFound:
            return None

    async def results(self) -> Bucket:
        """The bucket where spawned calls' results are recorded (first writer wins)."""
        return await self.broker.bucket(RESULTS_BUCKET, ttl_s=self.settings.result_ttl_s)

    # -- payloads ----------------------------------------------------------------------

    async def offload(self, key: str, data: bytes, limit: int | None = None) -> Payload:
        """`data` inline up to `limit` bytes (default: the payload threshold), else stored
        under `key` and sent by reference."""
        if len(data) <= (self.settings.payload_threshold_bytes if limit is None else limit):
            return Inline(data)
        store = await self.store()
        await store.put(key, data)
        return StoredRef(key=key, size_bytes=len(data))

    async def load(self, payload: Payload) -> bytes:
        match payload:
            case Inline(data=data):
                return data
            case StoredRef(key=key):
                return await (await self.store()).get(key)

    async def store(self) -> ObjectStore:
        """The stack's object store (payloads too large to travel inline, artifacts)."""
        if self._store is None:
            url = await storage_url(self.broker, self.settings)
            if self._store is None:  # else a call made meanwhile opened it: one client
                self._store = open_store(
                    url,
                    access_key=self.settings.s3_access_key,
                    secret_key=self.settings.s3_secret_key,
                )
        return self._store


async def storage_url(broker: Broker, settings: Settings) -> str:
    """The configured storage URL, else the one the stack recorded, else the local default."""
    if settings.storage_url:
        return settings.storage_url
    bucket = await broker.bucket(CONFIG_BUCKET)
    with suppress(KeyNotFound):
        return (await bucket.get(STORAGE_URL_KEY)).decode()
    return settings.default_storage_url()


async def record_storage_url(broker: Broker, settings: Settings) -> None:
    """Record where the stack's objects are, so that callers need no storage setting."""
    bucket = await broker.bucket(CONFIG_BUCKET)
    await bucket.put(STORAGE_URL_KEY, (await storage_url(broker, settings)).encode())


async def record_trust(broker: Broker, trust: Trust) -> None:
    """Record the deploy keys the stack trusts, so that a deployer with another key is
    refused before it uploads anything. (Workers trust their settings, never this.)"""
    bucket = await broker.bucket(CONFIG_BUCKET)
    await bucket.put(TRUSTED_KEYS_KEY, trust.text().encode())


async def recorded_trust(broker: Broker) -> Trust | None:
    """The deploy keys the stack recorded; None when it recorded none."""
    bucket = await broker.bucket(CONFIG_BUCKET)
    try:
        return Trust.parse((await bucket.get(TRUSTED_KEYS_KEY)).decode())
    except (KeyNotFound, ValueError):
        return None
