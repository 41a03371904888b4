"""What `autan status` shows: each function's load, workers and last scaling decision.

The scaler writes one `FunctionStatus` per function to the KV bucket `autan_status`
(at most once a second, and when it changes); anyone may read them.
"""

from __future__ import annotations

import msgspec

from broker import STATUS_BUCKET, Broker

__all__ = ["FunctionStatus", "read_statuses"]


class FunctionStatus(msgspec.Struct, frozen=True, kw_only=True):
    """What `autan status` shows for one function: its load now, the last change and why."""

    function: str
    version: str
    backlog: int
    oldest_age_s: float
    starting: int
    idle: int
    busy: int
    desired: int
    reason: str
    decided_unix_s: float
    updated_unix_s: float
    unisolated: int = 0  # live workers that run outside a sandbox


async def read_statuses(broker: Broker) -> list[FunctionStatus]:
    """The status of every function the scaler has reported on, by function name."""
    bucket = await broker.bucket(STATUS_BUCKET)
    statuses = [
        msgspec.json.decode(value, type=FunctionStatus)
        for key, value in (await bucket.values()).items()
        if value and not key.startswith("_")  # the parts' reports, probes: not functions
    ]
    return sorted(statuses, key=lambda status: status.function)
