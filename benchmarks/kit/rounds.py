"""Alternating rounds: every side runs once per round, in an order that rotates by round.

Machine noise (a 2-core box shared with others) then hits our path and its floor alike,
and neither always runs first, right after the other has warmed or cooled the caches.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Awaitable, Callable, Mapping
from typing import TypeVar

from benchmarks.kit.report import Summary, summarize

__all__ = ["alternate", "timed_rounds"]

T = TypeVar("T")


async def alternate(
    sides: Mapping[str, Callable[[], Awaitable[T]]], rounds: int
) -> dict[str, list[T]]:
    """Run each side `rounds` times, rotating the order; each side's results in round order."""
    names = list(sides)
    results: dict[str, list[T]] = {name: [] for name in names}
    for index in range(rounds):
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            results[name].append(await sides[name]())
        print(f"  round {index + 1}/{rounds} done", file=sys.stderr, flush=True)
    return results


async def timed_rounds(
    timers: Mapping[str, Callable[[int], Awaitable[list[int]]]],
    *,
    calls: int,
    warmup: int,
    rounds: int,
) -> dict[str, list[Summary]]:
    """Warm every side with `warmup` calls, then alternate rounds of `calls` sequential calls;
    each side's latency summary per round. A timer takes a call count and returns ns samples."""
    for timer in timers.values():
        await timer(warmup)
    sides = {name: functools.partial(timer, calls) for name, timer in timers.items()}
    samples = await alternate(sides, rounds)
    return {name: [summarize(s) for s in per_round] for name, per_round in samples.items()}
