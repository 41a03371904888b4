"""The function registry: specs in a JetStream KV bucket, keyed `<app>.<fn>`."""

from __future__ import annotations

from functools import partial

import msgspec

from broker import REGISTRY_BUCKET, Broker, Bucket, KeyNotFound, function_key
from runtime.core.coalesce import Coalesced
from runtime.core.errors import FunctionNotFound
from runtime.core.spec import FunctionSpec

__all__ = ["Registry"]

_decoder = msgspec.msgpack.Decoder(FunctionSpec)
_encoder = msgspec.msgpack.Encoder()


class Registry:
    """Read and write function specs; reads are cached per process until `forget`."""

    def __init__(self, bucket: Bucket) -> None:
        self._bucket = bucket
        self._cache: dict[str, FunctionSpec] = {}
        # Reads under way, by key: a burst of first calls reads the spec once.
        self._reading: Coalesced[str, FunctionSpec] = Coalesced()

    @classmethod
    async def open(cls, broker: Broker) -> Registry:
        return cls(await broker.bucket(REGISTRY_BUCKET))

    async def get(self, app: str, fn: str, *, cached: bool = True) -> FunctionSpec:
        """The spec of `app.fn`; FunctionNotFound names what is deployed instead."""
        key = function_key(app, fn)
        if not cached:
            return await self._read(app, fn, key)
        spec = self._cache.get(key)
        if spec is None:
            spec = await self._reading.run(key, partial(self._read, app, fn, key))
        return spec

    async def _read(self, app: str, fn: str, key: str) -> FunctionSpec:
        try:
            spec: FunctionSpec = _decoder.decode(await self._bucket.get(key))
        except KeyNotFound:
            raise FunctionNotFound(await self._not_found_message(app, fn)) from None
        self._cache[key] = spec
        return spec

    async def find(self, app: str, fn: str) -> FunctionSpec | None:
        try:
            return await self.get(app, fn, cached=False)
        except FunctionNotFound:
            return None

    async def put(self, spec: FunctionSpec) -> None:
        key = function_key(spec.app, spec.name)
        await self._bucket.put(key, _encoder.encode(spec))
        self._cache[key] = spec

    async def all(self) -> list[FunctionSpec]:
        return [_decoder.decode(value) for value in (await self._bucket.values()).values()]

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
