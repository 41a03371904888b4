"""Settings: one frozen value, read from the environment at the edge, handed on as a value.

The CLI (and a worker's entry point, and the first remote call of a script that gave no
settings) read `Settings.from_env`; everything else receives a `Settings`. Processes
that Autan starts get theirs through `to_env`, so settings given in code reach them.

    AUTAN_<FIELD>           a field of `Settings` (AUTAN_NATS_URL, AUTAN_DATA_DIR, ...)
    AUTAN_HTTP_<FIELD>      a field of `HttpSettings` (AUTAN_HTTP_PORT, AUTAN_HTTP_TIMEOUT_S, ...)
    AUTAN_API_KEYS          the bridge's API keys (or AUTAN_API_KEYS_FILE, a JSON/TOML file)
    MINIO_ROOT_USER/_PASSWORD   S3 credentials when AUTAN_S3_ACCESS_KEY/_SECRET_KEY are unset
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import msgspec

from broker import NatsTls
from runtime.core.apikeys import ApiKeys, load_api_keys, parse_api_keys
from runtime.core.trust import DeployKey, Trust

__all__ = ["HttpSettings", "Settings"]

LogFormat = Literal["console", "json"]

_PREFIX = "AUTAN_"
_HTTP_PREFIX = "AUTAN_HTTP_"
_API_KEYS = "AUTAN_API_KEYS"
_API_KEYS_FILE = "AUTAN_API_KEYS_FILE"


class HttpSettings(msgspec.Struct, frozen=True, kw_only=True):
    """The HTTP bridge: where it listens, its limits, and its API keys (None: keys off,
    allowed only on a loopback address)."""

    host: str = "127.0.0.1"
    port: int = 8000  # 0: `autan up` and `autan serve` run no bridge
    max_body_bytes: int = 16 * 1024 * 1024  # larger bodies are refused (413)
    timeout_s: float = 60.0  # default wait of a sync call before 504
    max_timeout_s: float = 300.0  # cap of `?timeout_s=` (and of the default)
    tracebacks: bool = False  # include functions' tracebacks in error bodies
    shutdown_grace_s: float = 5.0  # how long open requests may finish on shutdown
    read_timeout_s: float = 30.0  # a request's headers, then its body, must arrive within it
    parser: Literal["auto", "httptools", "h11"] = "auto"  # auto: httptools when installed
    api_keys: ApiKeys | None = None

    def __post_init__(self) -> None:
        if self.max_body_bytes < 1:
            raise ValueError(f"max_body_bytes={self.max_body_bytes}: use a positive size")
        if not 0 < self.timeout_s <= self.max_timeout_s:
            raise ValueError(
                f"timeout_s={self.timeout_s}, max_timeout_s={self.max_timeout_s}: use "
                "0 < timeout_s <= max_timeout_s"
            )
        if not 0 <= self.port < 65536:
            raise ValueError(f"port={self.port}: use 0 (off) to 65535")


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Where NATS and object storage are, and how this process behaves.

    `storage_url=None` means: the stack's storage, as `autan up` or `autan deploy`
    recorded it in NATS (callers then need no storage setting of their own).
    """

    nats_url: str = "nats://127.0.0.1:4222"  # several, comma-separated: a cluster
    # Copies of each stream and bucket the stack makes (None: 3 on a cluster of three
    # servers or more, else 1).
    nats_replicas: int | None = None
    nats_creds: Path | None = None  # this process's nkey seed; else <data dir>/creds/<role>.nk
    nats_tls_ca: Path | None = None  # CA file that NATS servers' certificates are checked with
    nats_tls_cert: Path | None = None  # a client certificate, for servers that ask for one
    nats_tls_key: Path | None = None  # its private key
    storage_url: str | None = None
    data_dir: Path = Path(".autan")
    s3_access_key: str | None = None
    s3_secret_key: str | None = None
    log_format: LogFormat = "console"
    log_level: str = "info"
    connect_timeout_s: float = 5.0
    payload_threshold_bytes: int = 512 * 1024
    result_ttl_s: float = 3600.0
    deploy_key: str | None = None  # a deployer's Ed25519 private key (hex); else the file
    deploy_import_check: bool = True  # refuse functions a clean interpreter cannot load
    wheelhouse: Path | None = None  # deploy installs requirements from these wheels alone
    pip_index_url: str | None = None  # else from this index (else pip's default)
    deploy_key_file: Path | None = None  # default <data dir>/deploy.key
    trusted_keys: str | None = None  # public keys that may sign deploys; else the file
    ack_wait_s: float = 30.0
    max_queued_calls: int = 1_000_000  # messages (a pack is one); past it, QueueFull, no drop
    # Bytes the calls stream (and each trigger stream) may hold, reserved on NATS's disk
    # when the stream is made (None: 1 GiB; under `autan up`, less on a small disk).
    max_queued_bytes: int | None = None
    metrics_port: int = 9464  # the scaler's Prometheus /metrics (0: off)
    logs_keep_s: float = 7 * 24 * 3600.0  # functions' logs (`autan logs`) kept this long
    logs_max_bytes: int = 256 * 1024 * 1024  # and at most this much, oldest dropped first
    # Function templates (`runtime.worker.templates`): a process per function version with
    # the function loaded, that its workers fork from. Built at a function's first worker,
    # at deploy, or never; what they hold is kept within template_memory_mb per provider.
    templates: Literal["first-call", "deploy", "off"] = "first-call"
    template_memory_mb: float = 2048.0
    http: HttpSettings = HttpSettings()

    def __post_init__(self) -> None:
        if self.template_memory_mb < 0:
            raise ValueError(
                f"template_memory_mb={self.template_memory_mb}: use 0 or more (MB), or "
                "AUTAN_TEMPLATES=off"
            )
        if self.nats_replicas is not None and not 1 <= self.nats_replicas <= 5:
            raise ValueError(
                f"nats_replicas={self.nats_replicas}: JetStream keeps 1 to 5 copies; "
                "unset AUTAN_NATS_REPLICAS to let Autan choose"
            )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """The settings in `env` (default: this process's environment); `overrides` that are
        not None win (the CLI's flags). ValueError names what is wrong."""
        env = os.environ if env is None else env
        values = _read(env, _PREFIX, _top_fields())
        if "s3_access_key" not in values and env.get("MINIO_ROOT_USER"):
            values["s3_access_key"] = env["MINIO_ROOT_USER"]
        if "s3_secret_key" not in values and env.get("MINIO_ROOT_PASSWORD"):
            values["s3_secret_key"] = env["MINIO_ROOT_PASSWORD"]
        values.update({k: v for k, v in overrides.items() if v is not None})
        try:
            settings = msgspec.convert(values, cls, strict=False, dec_hook=_decode_path)
        except msgspec.ValidationError as exc:
            raise ValueError(f"invalid Autan setting: {exc}") from exc
        return msgspec.structs.replace(settings, http=_http_from_env(env))

    def to_env(self) -> dict[str, str]:
        """The environment that `from_env` reads back as these settings: every field that
        is set, defaults included, so that they win over what a child inherits."""
        env = _write(self, _PREFIX, skip={"http"})
        env.update(_write(self.http, _HTTP_PREFIX, skip={"api_keys"}))
        if self.http.api_keys is not None:
            env[_API_KEYS] = msgspec.json.encode(self.http.api_keys).decode()
        return env

    def nats_tls(self) -> NatsTls | None:
        """The TLS files for NATS, when any are set (a tls:// URL uses the system's CAs)."""
        if self.nats_tls_ca is None and self.nats_tls_cert is None:
            return None
        return NatsTls(ca=self.nats_tls_ca, cert=self.nats_tls_cert, key=self.nats_tls_key)

    @staticmethod
    def reads(variable: str) -> bool:
        """Whether `from_env` reads `variable` (so that a child's own settings replace it)."""
        if variable.startswith(_HTTP_PREFIX) or variable in (_API_KEYS, _API_KEYS_FILE):
            return True
        return variable.startswith(_PREFIX) and variable[len(_PREFIX) :].lower() in _top_fields()

    def with_http(self, **changes: Any) -> Settings:
        """These settings with some of the HTTP bridge's changed (None: left as it is)."""
        given = {name: value for name, value in changes.items() if value is not None}
        return msgspec.structs.replace(self, http=msgspec.structs.replace(self.http, **given))

    def default_storage_url(self) -> str:
        """The embedded default: a filesystem store under the data directory."""
        return f"file://{(self.data_dir / 'objects').resolve()}"

    @property
    def cache_dir(self) -> Path:
        return self.data_dir / "cache"

    @property
    def creds_dir(self) -> Path:
        """Where `autan up` keeps the seed of each role's NATS identity (0600)."""
        return self.data_dir / "creds"

    def creds_for(self, role: str) -> Path | None:
        """The NATS credentials of a process of `role`: AUTAN_NATS_CREDS, else the role's
        seed in the data dir if the stack made one, else none (a NATS without auth)."""
        if self.nats_creds is not None:
            return self.nats_creds
        path = self.creds_dir / f"{role}.nk"
        return path if path.exists() else None

    @property
    def deploy_key_path(self) -> Path:
        return self.deploy_key_file or self.data_dir / "deploy.key"

    @property
    def trusted_keys_path(self) -> Path:
        return self.data_dir / "trusted_keys.txt"

    @property
    def secrets_key_path(self) -> Path:
        """The control plane's private key that opens functions' secrets (0600)."""
        return self.data_dir / "secrets.key"

    def load_deploy_key(self) -> DeployKey:
        """The deployer's key: AUTAN_DEPLOY_KEY, else the key file; ValueError says where to
        find one (a deployer never makes a key of its own by accident)."""
        if self.deploy_key:
            return DeployKey.parse(self.deploy_key)
        return DeployKey.load(self.deploy_key_path)

    def stack_keys(self) -> DeployKey:
        """For `autan up` and `autan serve`: the deploy key, made on first use, its public key
        added to the trusted keys file when no trusted keys are set."""
        if self.deploy_key or self.deploy_key_path.exists():
            key = self.load_deploy_key()
        else:
            key = DeployKey.create(self.deploy_key_path)
        if not self.trusted_keys:
            trusted = self._trusted_file()
            if not trusted.trusts(key.public):
                with self.trusted_keys_path.open("a") as file:
                    file.write(f"{key.public}  # {self.deploy_key_path}\n")
        return key

    def trust(self) -> Trust:
        """The public keys whose deploys run: AUTAN_TRUSTED_KEYS, else the trusted keys file."""
        if self.trusted_keys:
            return Trust.parse(self.trusted_keys)
        trusted = self._trusted_file()
        if not trusted.keys:
            raise ValueError(
                f"no trusted deploy keys: set AUTAN_TRUSTED_KEYS, or AUTAN_DATA_DIR to where "
                f"'autan up' wrote {self.trusted_keys_path.name}"
            )
        return trusted

    def _trusted_file(self) -> Trust:
        try:
            return Trust.parse(self.trusted_keys_path.read_text())
        except FileNotFoundError:
            return Trust(())


def _top_fields() -> tuple[str, ...]:
    return tuple(name for name in Settings.__struct_fields__ if name != "http")


def _read(env: Mapping[str, str], prefix: str, fields: tuple[str, ...]) -> dict[str, object]:
    """`<prefix><FIELD>` for each field set to something other than the empty string."""
    values: dict[str, object] = {}
    for name in fields:
        raw = env.get(f"{prefix}{name.upper()}")
        if raw is not None and raw != "":
            values[name] = raw
    return values


def _http_from_env(env: Mapping[str, str]) -> HttpSettings:
    fields = tuple(name for name in HttpSettings.__struct_fields__ if name != "api_keys")
    values = _read(env, _HTTP_PREFIX, fields)
    try:
        http = msgspec.convert(values, HttpSettings, strict=False)
    except msgspec.ValidationError as exc:
        raise ValueError(f"invalid HTTP bridge setting (AUTAN_HTTP_*): {exc}") from None
    return msgspec.structs.replace(http, api_keys=_api_keys_from_env(env))


def _api_keys_from_env(env: Mapping[str, str]) -> ApiKeys | None:
    """AUTAN_API_KEYS or AUTAN_API_KEYS_FILE (not both); None when neither is set."""
    text, file = env.get(_API_KEYS, ""), env.get(_API_KEYS_FILE, "")
    if text and file:
        raise ValueError(f"set {_API_KEYS} or {_API_KEYS_FILE}, not both")
    if file:
        return load_api_keys(Path(file))
    return parse_api_keys(text) if text else None


def _write(value: msgspec.Struct, prefix: str, *, skip: set[str]) -> dict[str, str]:
    env: dict[str, str] = {}
    for name in value.__struct_fields__:
        given = getattr(value, name)
        if name in skip or given is None:
            continue
        env[f"{prefix}{name.upper()}"] = _text(given)
    return env


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _decode_path(kind: type, value: object) -> object:
    if kind is Path and isinstance(value, str | Path):
        return Path(value)
    raise NotImplementedError
