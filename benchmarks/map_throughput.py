"""Map throughput: `echo.map(...)` with one worker against raw JetStream publish + pull consumer.

Ours: `async for _ in echo.map.aio(N inputs)`: pipelined calls (a window of them in flight),
one worker process pulling, running and replying; the clock stops at the last result.
Floor, on the same server: `js.publish_async` of N messages (the same window of pending
acks) to a separate work-queue stream BENCH_RAW, drained by a nats-py pull consumer in its own
process fetching batches of 32 and acking each message; the clock stops when every publish is
acknowledged and the consumer reports that it has acked all N. Goal: ours at least 0.5 of the
raw rate.

    python -m benchmarks.map_throughput [--quick] [--calls N] [--rounds R] [--window W]
"""

from __future__ import annotations

import os

os.environ["ORT_DISABLE_TELEMETRY"] = "1"

import argparse
import asyncio
import time
from typing import Any

import nats
import nats.errors
from nats.aio.client import Client as NatsClient
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext, api

from benchmarks.kit.cli import Size, run_benchmark
from benchmarks.kit.harness import Process, Stack, running_stack
from benchmarks.kit.report import Goal, Rate, median_rate, print_goal, print_table, write_json
from benchmarks.kit.rounds import alternate
from functions.echo import echo

__all__ = ["main"]

NAME = "map_throughput"
GOAL_FRACTION = 0.5
PAYLOAD = b"0123456789abcdef"
STREAM = "BENCH_RAW"
SUBJECT = "bench.raw"
DONE_SUBJECT = "bench.done"
ROUND_TIMEOUT_S = 120.0


async def time_ours(calls: int, window: int) -> Rate:
    count, last = 0, None
    started = time.perf_counter_ns()
    async for result in echo.map.aio([PAYLOAD] * calls, window=window):
        count, last = count + 1, result
    seconds = (time.perf_counter_ns() - started) / 1e9
    if count != calls or last != PAYLOAD:
        raise RuntimeError(f"map gave {count} results (last {last!r}), expected {calls}")
    return Rate(calls, seconds)


class RawFloor:
    """Publishes a round to BENCH_RAW and waits for the puller process to report it drained."""

    def __init__(
        self, js: JetStreamContext, done: Subscription, puller: Process, calls: int
    ) -> None:
        self.js = js
        self.done = done
        self.puller = puller
        self.calls = calls

    @classmethod
    async def open(cls, stack: Stack, nc: NatsClient, args: argparse.Namespace) -> RawFloor:
        js = nc.jetstream(publish_async_max_pending=args.window)
        await js.add_stream(
            api.StreamConfig(
                name=STREAM,
                subjects=[SUBJECT],
                retention=api.RetentionPolicy.WORK_QUEUE,
                storage=api.StorageType.FILE,
            )
        )
        done = await nc.subscribe(DONE_SUBJECT)
        puller = await stack.start_helper(
            "benchmarks.kit.puller", stack.nats_url, STREAM, SUBJECT, DONE_SUBJECT,
            str(args.calls), "--batch", str(args.batch),
        )  # fmt: skip
        return cls(js, done, puller, args.calls)

    async def time_round(self) -> Rate:
        started = time.perf_counter_ns()
        acks = [await self.js.publish_async(SUBJECT, PAYLOAD) for _ in range(self.calls)]
        await asyncio.gather(*acks)
        await self._drained()
        return Rate(self.calls, (time.perf_counter_ns() - started) / 1e9)

    async def _drained(self) -> None:
        deadline = time.monotonic() + ROUND_TIMEOUT_S
        while True:
            try:
                await self.done.next_msg(timeout=1.0)
                return
            except nats.errors.TimeoutError:
                if self.puller.returncode is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"the floor's consumer did not drain {self.calls} messages "
                        f"(exit code {self.puller.returncode})"
                    ) from None


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    async with running_stack() as stack:
        worker = await stack.start_worker("demo.echo", threads=1)
        nc = await nats.connect(stack.nats_url, name="bench-raw")
        try:
            raw = await RawFloor.open(stack, nc, args)
            await time_ours(min(args.calls, 2000), args.window)
            await raw.time_round()
            sides = {"ours": lambda: time_ours(args.calls, args.window), "raw": raw.time_round}
            rounds = await alternate(sides, args.rounds)
        finally:
            await nc.close()
        return {
            "rounds": rounds,
            "worker_cold_start_ms": {"spawn_to_ready": worker.spawn_to_ready_ms}
            | worker.phases_ms(),
        }


def report(args: argparse.Namespace, measured: dict[str, Any]) -> None:
    rounds: dict[str, list[Rate]] = measured["rounds"]
    rates = {k: median_rate(v) for k, v in rounds.items()}
    fraction = rates["ours"] / rates["raw"]
    labels = {
        "ours": f"ours   echo.map.aio(), 1 worker, window {args.window}",
        "raw": f"floor  js.publish_async + pull fetch({args.batch}) + ack",
    }
    rows = [
        [labels[k], f"{args.calls}", f"{args.calls / r:.3f}", f"{r:.0f}"] for k, r in rates.items()
    ]
    print_table(
        f"{NAME}: demo.echo, {len(PAYLOAD)}-byte payloads, {args.rounds} rounds x "
        f"{args.calls} calls (medians of rounds)",
        ["path", "calls", "seconds", "calls/s"],
        rows,
    )
    print(f"ratio ours/raw: {fraction:.2f}")
    goal = Goal(f"ours >= {GOAL_FRACTION} x raw rate", fraction, fraction >= GOAL_FRACTION)
    print_goal(goal)
    per_round = [o.per_s / r.per_s for o, r in zip(rounds["ours"], rounds["raw"], strict=True)]
    write_json(
        NAME,
        {
            "config": vars(args),
            "rate_per_s": rates,
            "ratio": fraction,
            "per_round_ratio": per_round,
            "goal": goal,
            **measured,
        },
    )


def main() -> None:
    sizes = [
        Size("calls", "calls per side and round", 2000, 20_000),
        Size("rounds", "rounds (sides alternate within each)", 3, 5),
        Size("window", "calls / publishes in flight", 1024, 1024),
        Size("batch", "the floor consumer's fetch size", 32, 32),
    ]
    run_benchmark(__doc__, measure, report, sizes=sizes)


if __name__ == "__main__":
    main()
