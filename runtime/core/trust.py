"""Who may say what runs: deployers sign specs with Ed25519; everyone else holds public keys.

    DeployKey   a deployer's private key (a file, 0600, or AUTAN_DEPLOY_KEY): signs specs
    Trust       the public keys a stack trusts (several, for rotation): verifies them

A worker and the control plane hold only a `Trust`: reading a public key gives nobody the
power to sign. `Trust.verify` refuses a registry entry whose signature does not check out
with a trusted key, that names another function than the key it is stored under, or
whose sequence is older than one already seen (a rollback).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import msgspec
import nacl.exceptions
import nacl.signing

from runtime.core.errors import ArtifactRejected
from runtime.core.spec import FunctionSpec, SignedSpec, decode_spec, encode_spec, python_version

__all__ = ["DeployKey", "Trust", "key_id"]

_PREFIX = "ed25519:"


def key_id(public: str) -> str:
    """How messages name a public key: `ed25519:<first 16 hex digits>`."""
    return f"{_PREFIX}{public[:16]}"


class DeployKey:
    """A deployer's Ed25519 private key."""

    def __init__(self, seed: bytes) -> None:
        self._key = nacl.signing.SigningKey(seed)
        self.public = self._key.verify_key.encode().hex()

    def __repr__(self) -> str:
        return f"DeployKey({key_id(self.public)})"  # never the secret

    @classmethod
    def parse(cls, text: str) -> DeployKey:
        """From its text form: the 32-byte seed in hex, `ed25519:` in front or not."""
        try:
            seed = bytes.fromhex(text.strip().removeprefix(_PREFIX))
        except ValueError:
            seed = b""
        if len(seed) != 32:
            raise ValueError(
                "a deploy key is 64 hex digits (an Ed25519 seed); 'autan up' makes one in "
                "<data dir>/deploy.key"
            )
        return cls(seed)

    @classmethod
    def load(cls, path: Path) -> DeployKey:
        try:
            return cls.parse(path.read_text())
        except FileNotFoundError:
            raise ValueError(
                f"no deploy key at {path}: deploy with the stack's key (AUTAN_DEPLOY_KEY_FILE, "
                "or AUTAN_DATA_DIR where 'autan up' made deploy.key)"
            ) from None

    @classmethod
    def create(cls, path: Path) -> DeployKey:
        """A new key, written to `path` readable by its owner only (never over an old one)."""
        key = cls(nacl.signing.SigningKey.generate().encode())
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise ValueError(f"{path} exists already: a key is never written over") from None
        with os.fdopen(descriptor, "w") as file:
            file.write(f"{_PREFIX}{key._key.encode().hex()}\n")
        return key

    def sign(self, spec: FunctionSpec) -> SignedSpec:
        body = encode_spec(spec)
        return SignedSpec(body=body, signature=self._key.sign(body).signature, key=self.public)


class Trust:
    """The public keys whose signatures a stack accepts."""

    def __init__(self, keys: Iterable[str]) -> None:
        self.keys = frozenset(_public(key) for key in keys)
        self._verifiers = {key: nacl.signing.VerifyKey(bytes.fromhex(key)) for key in self.keys}

    @classmethod
    def parse(cls, text: str) -> Trust:
        """Public keys in hex, separated by commas, spaces or lines (`#` starts a comment)."""
        lines = (line.split("#", 1)[0] for line in text.splitlines())
        return cls(key for line in lines for key in line.replace(",", " ").split())

    def text(self) -> str:
        return ",".join(sorted(self.keys))

    def trusts(self, public: str) -> bool:
        return public in self.keys

    def verify(
        self, signed: SignedSpec, app: str, fn: str, *, min_sequence: int = 0
    ) -> FunctionSpec:
        """The spec, if a trusted key signed it for `app.fn`, not older than `min_sequence`,
        for this Python; ArtifactRejected says which check failed."""
        qualname = f"{app}.{fn}"
        verifier = self._verifiers.get(signed.key)
        if verifier is None:
            raise ArtifactRejected(
                f"{qualname} was signed by {key_id(signed.key)}, which this stack does not "
                "trust; redeploy with a trusted deploy key (or add its public key to "
                "AUTAN_TRUSTED_KEYS)"
            )
        try:
            verifier.verify(signed.body, signed.signature)
            spec = decode_spec(signed.body)
        except (nacl.exceptions.BadSignatureError, msgspec.DecodeError, ValueError):
            raise ArtifactRejected(
                f"{qualname}: its registry entry does not match its signature (altered); "
                "redeploy with 'autan deploy'"
            ) from None
        return _checked(spec, qualname, min_sequence)


def _checked(spec: FunctionSpec, qualname: str, min_sequence: int) -> FunctionSpec:
    if spec.qualname != qualname:
        raise ArtifactRejected(
            f"{qualname}: its registry entry is the signed spec of {spec.qualname}, copied "
            "under another name; redeploy with 'autan deploy'"
        )
    if spec.sequence < min_sequence:
        raise ArtifactRejected(
            f"{qualname}: its registry entry is deploy #{spec.sequence}, older than #"
            f"{min_sequence} already deployed (a rollback); redeploy with 'autan deploy'"
        )
    if spec.python != python_version():
        raise ArtifactRejected(
            f"{qualname} was packaged on Python {spec.python} and this worker runs "
            f"{python_version()}; a pickle from another minor version cannot be loaded: run "
            "workers on the deploying Python version, or redeploy from this one"
        )
    return spec


def _public(key: str) -> str:
    hexed = key.strip().removeprefix(_PREFIX).lower()
    if len(hexed) != 64 or any(c not in "0123456789abcdef" for c in hexed):
        raise ValueError(f"{key!r} is not an Ed25519 public key (64 hex digits)")
    return hexed
