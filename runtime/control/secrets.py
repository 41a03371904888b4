"""The secrets a function's workers get: opened by the control plane as each one starts.

Only the process that holds the stack's secrets key (`autan up`, `autan serve`) opens
them (`core.secrets`), and only those a function declares; they go into that worker's
environment and nowhere else: not into a log line, not into another worker's.
"""

from __future__ import annotations

from runtime.control.environment import WorkerSecrets
from runtime.core import FunctionSpec, SecretsKey, SecretStore, StartRefused

__all__ = ["StackSecrets", "open_secrets"]


class StackSecrets:
    """Opens functions' secrets with the stack's key."""

    def __init__(self, store: SecretStore, key: SecretsKey) -> None:
        self.store = store
        self.key = key

    async def secrets_for(self, spec: FunctionSpec) -> dict[str, str]:
        """The secrets `spec` declares, by name; StartRefused when one is not set."""
        if not spec.options.secrets:
            return {}
        try:
            return await self.store.opened(self.key, spec.options.secrets)
        except LookupError as exc:
            raise StartRefused(f"{spec.qualname}: {exc}") from None


async def open_secrets(source: WorkerSecrets | None, spec: FunctionSpec) -> dict[str, str]:
    """The secrets `spec` declares, from `source`; StartRefused when they cannot be had."""
    if not spec.options.secrets:
        return {}
    if source is None:
        raise StartRefused(
            f"{spec.qualname} declares secrets, and this provider was given none to open: "
            "run it under 'autan up' or 'autan serve'"
        )
    return await source.secrets_for(spec)
