"""Secrets of functions: named values sealed at rest, opened only for the workers that
declare them.

    @app.function(secrets=["HF_TOKEN"])     the function's workers get $HF_TOKEN
    autan secret set HF_TOKEN < token.txt   sealed with the stack's public secrets key

A secret is sealed (a Curve25519 sealed box: whoever holds the public key can seal, only
the private key opens) and stored in the KV bucket `autan_secrets`, which only the admin
identity may read. The control plane alone holds the private key (`<data dir>/secrets.key`,
0600; its public key is recorded in the stack's config, so that a deployer elsewhere can
seal). It opens the secrets a function declares when it starts one of that function's
workers and puts them in that worker's environment, under their names; no other worker,
and no log line, ever sees them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import nacl.exceptions
import nacl.public

from broker import CONFIG_BUCKET, SECRETS_BUCKET, SECRETS_KEY_KEY, Broker, KeyNotFound
from runtime.core.options import check_secret_name

__all__ = ["MAX_SECRET_BYTES", "SecretStore", "SecretsKey", "seal"]

_PREFIX = "x25519:"
MAX_SECRET_BYTES = 64 * 1024


def seal(public: str, value: str) -> bytes:
    """`value` sealed for the holder of the secrets key whose public key is `public`."""
    data = value.encode()
    if len(data) > MAX_SECRET_BYTES:
        raise ValueError(f"a secret holds at most {MAX_SECRET_BYTES} bytes, not {len(data)}")
    key = nacl.public.PublicKey(bytes.fromhex(public.removeprefix(_PREFIX)))
    return bytes(nacl.public.SealedBox(key).encrypt(data))


class SecretsKey:
    """The control plane's private key: opens what `seal` sealed with its public key."""

    def __init__(self, private: bytes) -> None:
        self._key = nacl.public.PrivateKey(private)
        self.public = f"{_PREFIX}{bytes(self._key.public_key).hex()}"

    @classmethod
    def load_or_create(cls, path: Path) -> SecretsKey:
        """The key at `path`, made there (0600) on first use."""
        try:
            text = path.read_text().strip()
        except FileNotFoundError:
            key = cls(bytes(nacl.public.PrivateKey.generate()))
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:  # made meanwhile by another process: use that one
                return cls.load_or_create(path)
            with os.fdopen(descriptor, "w") as file:
                file.write(f"{_PREFIX}{bytes(key._key).hex()}\n")
            return key
        try:
            return cls(bytes.fromhex(text.removeprefix(_PREFIX)))
        except (ValueError, nacl.exceptions.CryptoError) as exc:
            raise ValueError(f"{path} holds no secrets key ({exc}); restore it") from None

    def open(self, sealed: bytes) -> str:
        """The value `sealed` holds; ValueError when it was sealed for another key."""
        try:
            return nacl.public.SealedBox(self._key).decrypt(sealed).decode()
        except (nacl.exceptions.CryptoError, UnicodeDecodeError):
            raise ValueError("sealed for another secrets key") from None


class SecretStore:
    """The sealed secrets in NATS, and the public key they are sealed with (admin only)."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker

    async def record_key(self, key: SecretsKey) -> None:
        """The stack's: say which public key secrets are to be sealed with."""
        config = await self.broker.bucket(CONFIG_BUCKET)
        await config.put(SECRETS_KEY_KEY, key.public.encode())

    async def public_key(self) -> str:
        config = await self.broker.bucket(CONFIG_BUCKET)
        try:
            return (await config.get(SECRETS_KEY_KEY)).decode()
        except KeyNotFound:
            raise LookupError(
                "no stack has said how to seal secrets here: start 'autan up' or "
                "'autan serve' once first"
            ) from None

    async def set(self, name: str, value: str) -> None:
        check_secret_name(name)
        sealed = seal(await self.public_key(), value)
        await (await self.broker.bucket(SECRETS_BUCKET)).put(name, sealed)

    async def names(self) -> list[str]:
        return sorted(await (await self.broker.bucket(SECRETS_BUCKET)).values())

    async def remove(self, name: str) -> bool:
        """Delete the secret; False when there was none of that name."""
        bucket = await self.broker.bucket(SECRETS_BUCKET)
        try:
            await bucket.get(name)
        except KeyNotFound:
            return False
        await bucket.delete(name)
        return True

    async def opened(self, key: SecretsKey, names: Iterable[str]) -> dict[str, str]:
        """The values of `names`, opened; `LookupError` naming the first one not set."""
        bucket = await self.broker.bucket(SECRETS_BUCKET)
        values = {}
        for name in names:
            try:
                sealed = await bucket.get(name)
            except KeyNotFound:
                raise LookupError(f"secret {name} is not set: autan secret set {name}") from None
            try:
                values[name] = key.open(sealed)
            except ValueError:
                raise LookupError(
                    f"secret {name} was sealed for another stack's key: set it again "
                    f"(autan secret set {name})"
                ) from None
        return values
