"""`autan logs APP.FN [-f] [--since 10m] [--call ID]`: what a function's workers logged and
its code printed, from every host, read from the logs stream."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from runtime.core import ADMIN, Link, Settings, split_qualname

__all__ = ["logs"]


async def logs(
    settings: Settings,
    qualname: str,
    *,
    since_s: float,
    follow: bool,
    call_id: str | None,
    show: Callable[[str], None] | None = None,
) -> int:
    """Print the function's records since `since_s` ago, oldest first; with `follow`, then
    each new one until Ctrl-C. `call_id`: only that call's (a pack item's id matches its
    pack's records too)."""
    app, fn = split_qualname(qualname)
    show = show or _print
    async with await Link.open(settings, name="autan-logs", role=ADMIN) as link:
        await link.registry.get(app, fn)  # FunctionNotFound names the deployed ones
        batches = link.broker.logs.read(app, fn, since_unix_s=time.time() - since_s, follow=follow)
        async for batch in batches:
            for line in batch.splitlines():
                record = _record(line)
                if record is not None and _matches(record, call_id):
                    show(format_record(record))
    return 0


def _print(line: str) -> None:
    print(line, flush=True)  # a reader of `-f` through a pipe sees each line as it comes


def _record(line: bytes) -> dict[str, Any] | None:
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def _matches(record: dict[str, Any], call_id: str | None) -> bool:
    if call_id is None:
        return True
    shown = str(record.get("call_id") or "")
    return shown == call_id or (call_id.startswith(f"{shown}-") and bool(shown))


def format_record(record: dict[str, Any]) -> str:
    """`time worker call [level|stream] text key=value ...`, one line."""
    when = datetime.fromtimestamp(float(record.get("ts", 0.0)), tz=UTC)
    kind = record.get("level") if record.get("kind") == "log" else record.get("kind")
    fields = record.get("fields") or {}
    extra = " ".join(f"{key}={value}" for key, value in fields.items())
    parts = [
        when.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
        str(record.get("worker", "")),
        str(record.get("call_id") or "-"),
        f"[{kind}]",
        str(record.get("text", "")),
        extra,
    ]
    return " ".join(part for part in parts if part)
