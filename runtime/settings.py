"""Settings: one frozen value, read from the environment at the edge (CLI, first remote call)."""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import msgspec

__all__ = ["Settings"]

LogFormat = Literal["console", "json"]


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Where NATS and object storage are, and how this process behaves.

    `storage_url=None` means: the stack's storage, as `autan up` or `autan deploy`
    recorded it in NATS (callers then need no storage setting of their own).
    """

    nats_url: str = "nats://127.0.0.1:4222"
    storage_url: str | None = None
    data_dir: Path = Path(".autan")
    s3_access_key: str | None = None
    s3_secret_key: str | None = None
    log_format: LogFormat = "console"
    log_level: str = "info"
    connect_timeout_s: float = 5.0
    payload_threshold_bytes: int = 512 * 1024
    result_ttl_s: float = 3600.0
    signing_key: str | None = None
    ack_wait_s: float = 30.0
    max_queued_calls: int = 1_000_000  # messages (a pack is one); past it, QueueFull, no drop

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """AUTAN_NATS_URL, AUTAN_STORAGE_URL, AUTAN_DATA_DIR, AUTAN_LOG_FORMAT, ..."""
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        for name in cls.__struct_fields__:
            raw = env.get(f"AUTAN_{name.upper()}")
            if raw is not None and raw != "":
                values[name] = raw
        if "s3_access_key" not in values and env.get("MINIO_ROOT_USER"):
            values["s3_access_key"] = env["MINIO_ROOT_USER"]
        if "s3_secret_key" not in values and env.get("MINIO_ROOT_PASSWORD"):
            values["s3_secret_key"] = env["MINIO_ROOT_PASSWORD"]
        values.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return msgspec.convert(values, cls, strict=False, dec_hook=_decode_path)
        except msgspec.ValidationError as exc:
            raise ValueError(f"invalid Autan setting: {exc}") from exc

    def default_storage_url(self) -> str:
        """The embedded default: a filesystem store under the data directory."""
        return f"file://{(self.data_dir / 'objects').resolve()}"

    @property
    def cache_dir(self) -> Path:
        return self.data_dir / "cache"

    def signing_key_bytes(self, *, create: bool = False) -> bytes:
        """The key manifests are signed with: AUTAN_SIGNING_KEY, else `<data_dir>/signing.key`.

        `create=True` (deploy, `autan up`) makes the key file when neither exists.
        """
        if self.signing_key:
            return self.signing_key.encode()
        path = self.data_dir / "signing.key"
        if not path.exists() and create:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(secrets.token_hex(32))
            path.chmod(0o600)
        try:
            return path.read_text().strip().encode()
        except FileNotFoundError:
            raise ValueError(
                f"no signing key: set AUTAN_SIGNING_KEY or AUTAN_DATA_DIR to where {path.name} "
                "is (autan up and autan deploy create it)"
            ) from None


def _decode_path(kind: type, value: object) -> object:
    if kind is Path and isinstance(value, str | Path):
        return Path(value)
    raise NotImplementedError
