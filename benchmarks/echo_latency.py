"""Echo latency: a warm `demo.echo` call against raw nats-py request/reply on the same server.

Ours: `await echo.remote.aio(b"16 bytes")` (and the sync `echo.remote(...)`, which goes through
the session provider's loop thread): a JetStream publish with its ack, the worker (its own
process) pulling it, running the function in a thread and publishing the result to the caller's
inbox. Floor: `nc.request(...)` to a bare nats-py responder in its own process. A second,
informative floor shows what JetStream itself costs: the same publish-with-ack to a work-queue
stream, a bare nats-py pull consumer (own process) replying and acking. One call in flight;
rounds alternate the sides. Goal: p50 ratio ours/raw at most 1.5.

    python -m benchmarks.echo_latency [--quick] [--calls N] [--rounds R]
"""

from __future__ import annotations

import os

os.environ["ORT_DISABLE_TELEMETRY"] = "1"

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import nats
import nats.nuid
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import api

from benchmarks.kit.cli import Size, run_benchmark
from benchmarks.kit.harness import Stack, running_stack
from benchmarks.kit.report import (
    Goal,
    Summary,
    median_summary,
    print_goal,
    print_table,
    write_json,
)
from benchmarks.kit.responder import REPLY_HEADER
from benchmarks.kit.rounds import timed_rounds
from functions.echo import echo

__all__ = ["main"]

NAME = "echo_latency"
GOAL_RATIO = 1.5
PAYLOAD = b"0123456789abcdef"
SUBJECT = "bench.echo"
JS_STREAM = "BENCH_JS"
JS_SUBJECT = "bench.js"
LABELS = {
    "ours": "ours   await echo.remote.aio()",
    "sync": "ours   echo.remote() (sync)",
    "raw": "floor  nats-py request/reply",
    "js": "floor  JetStream publish+ack, pull, reply (info)",
}


def _check(result: Any, expected: Any = PAYLOAD) -> None:
    if result != expected:
        raise RuntimeError(f"echo returned {result!r}, expected {expected!r}")


async def time_ours(calls: int, payload: Any = PAYLOAD) -> list[int]:
    """`calls` sequential `echo.remote.aio(payload)`, ns each."""
    samples, result = [], None
    for _ in range(calls):
        started = time.perf_counter_ns()
        result = await echo.remote.aio(payload)
        samples.append(time.perf_counter_ns() - started)
    _check(result, payload)
    return samples


def time_sync(calls: int) -> list[int]:
    samples, result = [], None
    for _ in range(calls):
        started = time.perf_counter_ns()
        result = echo.remote(PAYLOAD)
        samples.append(time.perf_counter_ns() - started)
    _check(result)
    return samples


async def time_raw(
    nc: NatsClient, calls: int, *, subject: str = SUBJECT, data: bytes = PAYLOAD
) -> list[int]:
    """`calls` sequential nats-py requests to the echo responder on `subject`, ns each."""
    samples = []
    for _ in range(calls):
        started = time.perf_counter_ns()
        reply = await nc.request(subject, data, timeout=5.0)
        samples.append(time.perf_counter_ns() - started)
        _check(reply.data, data)
    return samples


class JetStreamEcho:
    """The JetStream floor's caller: publish with an ack inbox and a reply header, await both."""

    def __init__(self, nc: NatsClient) -> None:
        self.nc = nc
        self.prefix = nc.new_inbox()
        self.nuid = nats.nuid.NUID()
        self.futures: dict[str, asyncio.Future[Msg]] = {}

    @classmethod
    async def open(cls, stack: Stack, nc: NatsClient) -> JetStreamEcho:
        config = api.StreamConfig(
            name=JS_STREAM,
            subjects=[JS_SUBJECT],
            retention=api.RetentionPolicy.WORK_QUEUE,
            storage=api.StorageType.FILE,
        )
        await nc.jetstream().add_stream(config)
        floor = cls(nc)
        await nc.subscribe(f"{floor.prefix}.*", cb=floor._on_msg)
        await stack.start_helper(
            "benchmarks.kit.responder", stack.nats_url, JS_SUBJECT, "--stream", JS_STREAM
        )
        return floor

    async def _on_msg(self, msg: Msg) -> None:
        future = self.futures.pop(msg.subject, None)
        if future is not None and not future.done():
            future.set_result(msg)

    def _expect(self, subject: str) -> asyncio.Future[Msg]:
        future = self.futures[subject] = asyncio.get_running_loop().create_future()
        return future

    async def call(self) -> tuple[bytes, bytes]:
        token = self.nuid.next().decode()
        ack_to, reply_to = f"{self.prefix}.a{token}", f"{self.prefix}.r{token}"
        ack, reply = self._expect(ack_to), self._expect(reply_to)
        headers = {"Nats-Msg-Id": token, REPLY_HEADER: reply_to}
        await self.nc.publish(JS_SUBJECT, PAYLOAD, reply=ack_to, headers=headers)
        return (await ack).data, (await reply).data

    async def time_calls(self, calls: int) -> list[int]:
        samples, ack, reply = [], b"", b""
        for _ in range(calls):
            started = time.perf_counter_ns()
            ack, reply = await self.call()
            samples.append(time.perf_counter_ns() - started)
        _check(reply)
        if b'"seq"' not in ack:
            raise RuntimeError(f"JetStream refused the floor's message: {ack!r}")
        return samples


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    async with running_stack() as stack:
        worker = await stack.start_worker("demo.echo", threads=1)
        await stack.start_helper("benchmarks.kit.responder", stack.nats_url, SUBJECT)
        nc = await nats.connect(stack.nats_url, name="bench-raw")
        try:
            js = await JetStreamEcho.open(stack, nc)
            timers: dict[str, Callable[[int], Awaitable[list[int]]]] = {
                "ours": time_ours,
                "sync": lambda calls: asyncio.to_thread(time_sync, calls),
                "raw": lambda calls: time_raw(nc, calls),
                "js": js.time_calls,
            }
            rounds = await timed_rounds(
                timers, calls=args.calls, warmup=args.warmup, rounds=args.rounds
            )
        finally:
            await nc.close()
        return {
            "rounds": rounds,
            "worker_cold_start_ms": {"spawn_to_ready": worker.spawn_to_ready_ms}
            | worker.phases_ms(),
        }


def report(args: argparse.Namespace, measured: dict[str, Any]) -> None:
    rounds: dict[str, list[Summary]] = measured["rounds"]
    medians = {k: median_summary(v) for k, v in rounds.items()}
    ratio = medians["ours"].p50_ms / medians["raw"].p50_ms
    sync_ratio = medians["sync"].p50_ms / medians["raw"].p50_ms
    rows = [
        [
            LABELS[k],
            f"{s.p50_ms:.3f}",
            f"{s.p99_ms:.3f}",
            f"{s.mean_ms:.3f}",
            f"{1e3 / s.mean_ms:.0f}",
        ]
        for k, s in medians.items()
    ]
    print_table(
        f"{NAME}: demo.echo, {len(PAYLOAD)}-byte payload, one call in flight, "
        f"{args.rounds} rounds x {args.calls} calls (medians of rounds)",
        ["path", "p50 ms", "p99 ms", "mean ms", "calls/s"],
        rows,
    )
    js_ratio = medians["ours"].p50_ms / medians["js"].p50_ms
    print(
        f"ratio p50 ours/raw: {ratio:.2f}   (sync/raw: {sync_ratio:.2f}, "
        f"ours/JetStream floor: {js_ratio:.2f})"
    )
    goal = Goal(f"p50 ratio ours/raw <= {GOAL_RATIO}", ratio, ratio <= GOAL_RATIO)
    print_goal(goal)
    write_json(
        NAME,
        {
            "config": vars(args),
            "payload_bytes": len(PAYLOAD),
            "medians": medians,
            "ratio_p50": ratio,
            "ratio_p50_sync": sync_ratio,
            "ratio_p50_jetstream_floor": js_ratio,
            "per_round_ratio_p50": [
                o.p50_ms / r.p50_ms for o, r in zip(rounds["ours"], rounds["raw"], strict=True)
            ],
            "goal": goal,
            **measured,
        },
    )


def main() -> None:
    sizes = [
        Size("calls", "sequential calls per side and round", 300, 2000),
        Size("rounds", "rounds (sides alternate within each)", 3, 5),
        Size("warmup", "calls per side before measuring", 50, 200),
    ]
    run_benchmark(__doc__, measure, report, sizes=sizes)


if __name__ == "__main__":
    main()
