"""Generator functions the streaming tests deploy; each writes what it did to `log`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

from runtime import App, Context, Retries

app = App("streams")


def _note(log: str, line: str) -> None:
    if log:
        with open(log, "a") as file:
            file.write(line + "\n")


@app.function(timeout_s=60, concurrency=4, retries=Retries(max_attempts=3, backoff_s=(0.0,)))
def count(ctx: Context, n: int, log: str = "", fail_at: int = -1) -> Iterator[int]:
    """0 to n-1; `fail_at`: raise ValueError in place of that item."""
    _note(log, f"start {ctx.attempt}")
    try:
        for i in range(n):
            if i == fail_at:
                raise ValueError(f"item {i} is bad")
            _note(log, f"yield {i}")
            yield i
    finally:
        _note(log, "closed")


@app.function(timeout_s=60, concurrency=4)
async def count_async(ctx: Context, n: int, log: str = "", fail_at: int = -1) -> AsyncIterator[int]:
    _note(log, f"start {ctx.attempt}")
    try:
        for i in range(n):
            if i == fail_at:
                raise ValueError(f"item {i} is bad")
            _note(log, f"yield {i}")
            yield i
    finally:
        _note(log, "closed")


@app.function(timeout_s=10)
def words(ctx: Context, text: str) -> Iterator[dict[str, Any]]:
    for index, word in enumerate(text.split()):
        yield {"index": index, "word": word}


@app.function(timeout_s=10)
def plain(ctx: Context, value: Any) -> Any:
    return value
