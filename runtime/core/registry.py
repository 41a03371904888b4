"""The function registry: signed specs in a JetStream KV bucket, keyed `<app>.<fn>`.

Callers read specs to route calls (`get`, cached per process); workers and the control
plane read the signed entry (`signed`) and verify it (`core.trust`) before acting on it.
"""

from __future__ import annotations

from functools import partial

import msgspec
import structlog

from broker import REGISTRY_BUCKET, Broker, Bucket, KeyNotFound, function_key
from runtime.core.coalesce import Coalesced
from runtime.core.errors import FunctionNotFound
from runtime.core.spec import FunctionSpec, SignedSpec, decode_spec

__all__ = ["Registry"]

log = structlog.get_logger("autan.registry")

_decoder = msgspec.msgpack.Decoder(SignedSpec)
_encoder = msgspec.msgpack.Encoder()


class Registry:
    """Read and write function specs; reads are cached per process until `forget`."""

    def __init__(self, broker: Broker) -> None:
        self._broker = broker
        self._lazy = True  # `open` looks it up (and makes it) now
        self._opened: Bucket | None = None  # opened at first use (a worker forked from a
        # template reads no entry: its connection does not wait for the bucket's lookup)
        self._cache: dict[str, FunctionSpec] = {}
        # Reads under way, by key: a burst of first calls reads the spec once.
        self._reading: Coalesced[str, FunctionSpec] = Coalesced()

    @classmethod
    async def open(cls, broker: Broker) -> Registry:
        """The registry, its bucket looked up now (BrokerUnavailable if JetStream does not
        answer); `Registry(broker)` looks it up at first use."""
        registry = cls(broker)
        registry._lazy = False
        await registry._bucket()
        return registry

    async def _bucket(self) -> Bucket:
        if self._opened is None:
            # Opened at first use only where deploy made it: known, not looked up.
            self._opened = await self._broker.bucket(REGISTRY_BUCKET, known=self._lazy)
        return self._opened

    async def get(self, app: str, fn: str, *, cached: bool = True) -> FunctionSpec:
        """The spec of `app.fn` (not verified); FunctionNotFound names what is deployed
        instead, or says that the entry cannot be read."""
        key = function_key(app, fn)
        if not cached:
            return await self._read(app, fn, key)
        spec = self._cache.get(key)
        if spec is None:
            spec = await self._reading.run(key, partial(self._read, app, fn, key))
        return spec

    async def signed(self, app: str, fn: str) -> SignedSpec:
        """The entry of `app.fn` as deploy signed it, to verify before acting on it."""
        key = function_key(app, fn)
        try:
            return _entry(key, await (await self._bucket()).get(key))
        except KeyNotFound:
            raise FunctionNotFound(await self._not_found_message(app, fn)) from None

    async def _read(self, app: str, fn: str, key: str) -> FunctionSpec:
        spec = _spec(key, (await self.signed(app, fn)).body)
        self._cache[key] = spec
        return spec

    async def find(self, app: str, fn: str) -> FunctionSpec | None:
        try:
            return await self.get(app, fn, cached=False)
        except FunctionNotFound:
            return None

    async def put(self, signed: SignedSpec) -> FunctionSpec:
        spec = decode_spec(signed.body)
        key = function_key(spec.app, spec.name)
        await (await self._bucket()).put(key, _encoder.encode(signed))
        self._cache[key] = spec
        return spec

    async def all_signed(self) -> dict[str, SignedSpec]:
        """Every entry that can be read, by key; one that cannot is logged and left out."""
        entries = {}
        for key, value in (await (await self._bucket()).values()).items():
            try:
                entries[key] = _entry(key, value)
            except FunctionNotFound as exc:
                log.error("unreadable registry entry", key=key, error=str(exc))
        return entries

    async def all(self) -> list[FunctionSpec]:
        specs = []
        for key, entry in (await self.all_signed()).items():
            try:
                specs.append(_spec(key, entry.body))
            except FunctionNotFound as exc:
                log.error("unreadable registry entry", key=key, error=str(exc))
        return specs

    def forget(self, app: str, fn: str) -> None:
        self._cache.pop(function_key(app, fn), None)

    async def _not_found_message(self, app: str, fn: str) -> str:
        names = [s.name for s in await self.all() if s.app == app]
        if names:
            return f"no function {fn!r} in app {app!r}; deployed: {', '.join(sorted(names))}"
        apps = sorted({s.app for s in await self.all()})
        if apps:
            return f"no app {app!r} is deployed; deployed apps: {', '.join(apps)}"
        return f"no function {app}.{fn} is deployed (nothing is): run 'autan deploy PATH'"


def _entry(key: str, value: bytes) -> SignedSpec:
    try:
        return _decoder.decode(value)
    except msgspec.DecodeError:
        raise FunctionNotFound(_unreadable(key)) from None


def _spec(key: str, body: bytes) -> FunctionSpec:
    """The spec in an entry, which must be the spec of the function it is stored under (or
    calls would go where the entry says, not where the caller asked)."""
    try:
        spec = decode_spec(body)
    except msgspec.DecodeError as exc:
        raise FunctionNotFound(f"{_unreadable(key)} ({exc})") from None
    if spec.qualname != key:
        raise FunctionNotFound(
            f"the registry entry of {key} is the spec of {spec.qualname} (altered): redeploy it"
        )
    return spec


def _unreadable(key: str) -> str:
    return f"the registry entry of {key} cannot be read (altered?): redeploy it"
