"""Errors of the runtime, grouped by what the caller does about them.

    AutanError
    ├── InvalidOption         fix the decorator call (raised at decoration)
    ├── FunctionNotFound      deploy it, or fix the name (nothing was queued)
    ├── CallNotFound          no such spawned call, or its result expired: check the id
    ├── DeployError           the function or its models cannot be packaged
    ├── ArtifactRejected      the stored artifact failed verification: redeploy
    ├── StackError            a part of the stack cannot start: the message says what to do
    │   └── StartRefused      a function's worker cannot start (a secret it needs is not set)
    └── RemoteError           the call ran and failed: `type`, `message`, `traceback`
        └── FunctionTimeout   it ran past its `timeout_s`

Broker errors (`BrokerUnavailable`, `QueueFull`, ...) and storage errors pass
through unchanged: they already say what to do. `known_error` picks, for a command
line's one-line report, an error the user can act on.
"""

from __future__ import annotations

from broker import BrokerError, ErrorInfo
from storage import StorageError

__all__ = [
    "ArtifactRejected",
    "AutanError",
    "CallNotFound",
    "DeployError",
    "FunctionNotFound",
    "FunctionTimeout",
    "RemoteError",
    "StackError",
    "StartRefused",
    "known_error",
]


class AutanError(Exception):
    """Base of the runtime's errors."""


class FunctionNotFound(AutanError, LookupError):
    """No such function is deployed."""


class CallNotFound(AutanError, LookupError):
    """No spawned call has this id, or its result is older than the results' retention."""


class DeployError(AutanError):
    """A function could not be packaged or registered."""


class ArtifactRejected(AutanError):
    """A worker refused an artifact: digest, signature or Python version do not match."""


class StackError(AutanError):
    """A part of the stack (nats-server, the fork server, a port) cannot start."""


class StartRefused(StackError):
    """A function's worker cannot be started as it is (a secret it declares is not set)."""


class RemoteError(AutanError):
    """The function raised; the original type name, message and traceback text are kept."""

    def __init__(self, info: ErrorInfo, call_id: str = "") -> None:
        self.type = info.type
        self.remote_message = info.message
        self.remote_traceback = info.traceback
        self.call_id = call_id
        super().__init__(f"{info.type}: {info.message}")

    def __str__(self) -> str:
        text = f"{self.type}: {self.remote_message}"
        if self.remote_traceback:
            text += f"\n--- remote traceback (call {self.call_id}) ---\n{self.remote_traceback}"
        return text

    @classmethod
    def from_info(cls, info: ErrorInfo, call_id: str = "") -> RemoteError:
        kind = FunctionTimeout if info.type == "FunctionTimeout" else cls
        return kind(info, call_id)


class FunctionTimeout(RemoteError):
    """The call ran longer than the function's `timeout_s`."""


def known_error(exc: BaseException) -> BaseException | None:
    """`exc`, or the first error a task group raised, when it is one whose message says what
    to do (ours, the broker's, storage's, a bad value, something not found); None for
    anything else (a bug)."""
    if isinstance(exc, BaseExceptionGroup):
        expected, _ = exc.split(_KNOWN)
        return None if expected is None else _first(expected)
    return exc if isinstance(exc, _KNOWN) else None


_KNOWN = (AutanError, BrokerError, StorageError, ValueError, LookupError)


def _first(group: BaseExceptionGroup[BaseException]) -> BaseException:
    first = group.exceptions[0]
    return _first(first) if isinstance(first, BaseExceptionGroup) else first
