"""Closing a NATS connection: what is in flight delivered if it can be, and nothing raised."""

from __future__ import annotations

import asyncio
import contextlib

import nats.errors
from nats.aio.client import Client as NatsClient

__all__ = ["close_connection"]

# How long closing waits for what is in flight to be delivered.
_DRAIN_S = 5.0


async def close_connection(nc: NatsClient) -> None:
    """Drain `nc` (within `_DRAIN_S`) when connected; else close it as it is.

    Never raises but this task's own cancellation: a connection that is down (the server
    stopped first, say) is closed as it is, and one that dies during the drain has nats-py
    cancel its own close waiter, which is not this task's cancellation.
    """
    if nc.is_closed:
        return
    if nc.is_connected:
        with contextlib.suppress(nats.errors.Error, TimeoutError):
            try:
                await asyncio.wait_for(nc.drain(), _DRAIN_S)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is None or task.cancelling():
                    raise
    if not nc.is_closed:
        with contextlib.suppress(nats.errors.Error):
            await nc.close()
