"""How a worker process reaches NATS and storage from inside a sandbox."""

from __future__ import annotations

from pathlib import Path

from broker import dial, route_nats_through
from runtime.core import Settings

__all__ = ["through_gate"]


def through_gate(gate: Path, settings: Settings) -> None:
    """An isolated worker has no network: NATS and storage are dialed by its gate."""
    route_nats_through(gate)
    if (settings.storage_url or "").startswith("s3://"):
        from storage import route_s3_through

        route_s3_through(lambda host, port, timeout_s: dial(gate, host, port, timeout_s))
