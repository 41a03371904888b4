"""Streamed outputs: time to the first item, and items per second, beside their floors.

Time to first item: `async for item in items.remote_gen.aio(100, b"16 bytes")` on a warm
worker (its own process), from the call to the first item; the whole stream is read. Its
floor: the latency of a plain call of the same shape, `await one.remote.aio(b"16 bytes")`.
Goal: p50 ratio at most 1.5.

Throughput: one stream of N 16-byte items read to the end, items per second. Its floor: a
bare nats-py process publishing N core NATS messages to the reader's inbox as fast as it can
(no flow control, no encoding, no JetStream for the call). Informative: a stream carries a
window of credits, msgpack items and the call's own publish.

Rounds alternate the sides.

    python -m benchmarks.streaming [--quick] [--calls N] [--items N] [--rounds R]
"""

from __future__ import annotations

import os

os.environ["ORT_DISABLE_TELEMETRY"] = "1"

import argparse
import asyncio
import statistics
import time
from typing import Any

import nats
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from benchmarks.kit.cli import Size, run_benchmark
from benchmarks.kit.harness import running_stack
from benchmarks.kit.report import Goal, Summary, median_summary, print_goal, print_table, write_json
from benchmarks.kit.rounds import alternate, timed_rounds
from benchmarks.kit.stream_app import app, items, one
from benchmarks.kit.streamer import PAYLOAD

__all__ = ["main"]

NAME = "streaming"
GOAL_RATIO = 1.5
FIRST_OF = 100  # items in each stream timed for its first item
SUBJECT = "bench.streamer"


async def time_first(calls: int) -> list[int]:
    """`calls` streams of FIRST_OF items, read to the end; ns to the first item of each."""
    samples = []
    for _ in range(calls):
        started = time.perf_counter_ns()
        first = 0
        count = 0
        async for item in items.remote_gen.aio(FIRST_OF, PAYLOAD):
            if count == 0:
                first = time.perf_counter_ns() - started
            count += 1
            if item != PAYLOAD:
                raise RuntimeError(f"the stream gave {item!r}")
        if count != FIRST_OF:
            raise RuntimeError(f"the stream gave {count} items, not {FIRST_OF}")
        samples.append(first)
    return samples


async def time_plain(calls: int) -> list[int]:
    samples = []
    for _ in range(calls):
        started = time.perf_counter_ns()
        if await one.remote.aio(PAYLOAD) != PAYLOAD:
            raise RuntimeError("one returned something else")
        samples.append(time.perf_counter_ns() - started)
    return samples


async def stream_rate(n: int) -> float:
    """Items per second of one stream of `n` items read to the end."""
    started = time.perf_counter()
    count = 0
    async for _ in items.remote_gen.aio(n, PAYLOAD):
        count += 1
    if count != n:
        raise RuntimeError(f"the stream gave {count} items, not {n}")
    return n / (time.perf_counter() - started)


async def floor_rate(nc: NatsClient, n: int) -> float:
    """Messages per second of `n` core NATS messages published by the streamer process."""
    inbox = nc.new_inbox()
    done = asyncio.Event()
    count = 0

    async def received(msg: Msg) -> None:
        nonlocal count
        count += 1
        if count == n:
            done.set()

    sub = await nc.subscribe(inbox, cb=received, pending_msgs_limit=n + 1)
    await nc.flush()
    started = time.perf_counter()
    await nc.publish(SUBJECT, str(n).encode(), reply=inbox)
    await asyncio.wait_for(done.wait(), 60)
    elapsed = time.perf_counter() - started
    await sub.unsubscribe()
    return n / elapsed


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    async with running_stack() as stack:
        await stack.deploy("benchmarks.kit.stream_app")
        app.sessions.configure(stack.settings)
        await stack.start_worker("streambench.items", threads=1)
        await stack.start_worker("streambench.one", threads=1)
        await stack.start_helper("benchmarks.kit.streamer", stack.nats_url, SUBJECT)
        nc = await nats.connect(stack.nats_url, name="bench-stream-floor")
        try:
            latency = await timed_rounds(
                {"first": time_first, "plain": time_plain},
                calls=args.calls,
                warmup=args.warmup,
                rounds=args.rounds,
            )
            await stream_rate(args.items // 10)  # warm both paths
            await floor_rate(nc, args.items // 10)
            rates = await alternate(
                {
                    "stream": lambda: stream_rate(args.items),
                    "floor": lambda: floor_rate(nc, args.items),
                },
                args.rounds,
            )
        finally:
            await nc.close()
            await app.sessions.aclose()
    return {"latency": latency, "rates": rates}


def report(args: argparse.Namespace, measured: dict[str, Any]) -> None:
    latency: dict[str, list[Summary]] = measured["latency"]
    medians = {k: median_summary(v) for k, v in latency.items()}
    ratio = medians["first"].p50_ms / medians["plain"].p50_ms
    labels = {
        "first": f"ours   first item of a {FIRST_OF}-item stream",
        "plain": "floor  await one.remote.aio() (a plain call)",
    }
    print_table(
        f"{NAME}: time to first item, 16-byte items, one stream at a time, "
        f"{args.rounds} rounds x {args.calls} calls (medians of rounds)",
        ["path", "p50 ms", "p99 ms", "mean ms"],
        [
            [labels[k], f"{s.p50_ms:.3f}", f"{s.p99_ms:.3f}", f"{s.mean_ms:.3f}"]
            for k, s in medians.items()
        ],
    )
    print(f"ratio p50 first item / plain call: {ratio:.2f}")
    rates: dict[str, list[float]] = measured["rates"]
    stream, floor = statistics.median(rates["stream"]), statistics.median(rates["floor"])
    print_table(
        f"{NAME}: one stream of {args.items} 16-byte items read to the end "
        f"(medians of {args.rounds} rounds)",
        ["path", "items/s"],
        [
            ["ours   async for item in items.remote_gen.aio(n)", f"{stream:,.0f}"],
            ["floor  nats-py core publish, no flow control", f"{floor:,.0f}"],
        ],
    )
    print(f"ratio items/s ours/floor: {stream / floor:.2f} (informative)")
    goal = Goal(f"p50 ratio first item / plain call <= {GOAL_RATIO}", ratio, ratio <= GOAL_RATIO)
    print_goal(goal)
    write_json(
        NAME,
        {
            "config": vars(args),
            "medians": medians,
            "ratio_first_to_plain_p50": ratio,
            "items_per_s": {"stream": stream, "floor": floor, "ratio": stream / floor},
            "goal": goal,
            **measured,
        },
    )


def main() -> None:
    sizes = [
        Size("calls", "streams (and plain calls) per side and round", 100, 500),
        Size("items", "items in the throughput stream", 5_000, 50_000),
        Size("rounds", "rounds (sides alternate within each)", 3, 5),
        Size("warmup", "calls per side before measuring", 20, 50),
    ]
    run_benchmark(__doc__, measure, report, sizes=sizes)


if __name__ == "__main__":
    main()
