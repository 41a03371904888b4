"""Errors of the runtime, grouped by what the caller does about them.

    AutanError
    ├── InvalidOption         fix the decorator call (raised at decoration)
    ├── FunctionNotFound      deploy it, or fix the name (nothing was queued)
    ├── DeployError           the function or its models cannot be packaged
    ├── ArtifactRejected      the stored artifact failed verification: redeploy
    └── RemoteError           the call ran and failed: `type`, `message`, `traceback`
        └── FunctionTimeout   it ran past its `timeout_s`

Broker errors (`BrokerUnavailable`, `QueueFull`, ...) and storage errors pass
through unchanged: they already say what to do.
"""

from __future__ import annotations

from broker import ErrorInfo

__all__ = [
    "ArtifactRejected",
    "AutanError",
    "DeployError",
    "FunctionNotFound",
    "FunctionTimeout",
    "RemoteError",
]


class AutanError(Exception):
    """Base of the runtime's errors."""


class FunctionNotFound(AutanError, LookupError):
    """No such function is deployed."""


class DeployError(AutanError):
    """A function could not be packaged or registered."""


class ArtifactRejected(AutanError):
    """A worker refused an artifact: digest, signature or Python version do not match."""


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
