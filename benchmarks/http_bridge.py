"""Entry points: the HTTP bridge's sync call, its 202 under load, and a trigger's event -> emit.

One stack (nats-server, `demo` and `trigbench` deployed, one warm worker per function,
`autan gateway` in its own process, loopback only), three figures:

1. Sync call. Ours: `POST /v1/functions/demo/echo` with a 16-character JSON string, sent
   by a bare HTTP/1.1 keep-alive client on asyncio streams (`benchmarks.kit.http_client`, so
   that the figure is the bridge's, not a client library's), one request in flight.
   Floor: `await echo.remote.aio(...)` of the same string from this process.
   Goal: the bridge adds at most 0.5 ms at p50.
2. Accept under load. `benchmarks.kit.httpload`, its own process, sends
   `POST /v1/functions/demo/echo?async=true` open-loop at 500/s on 8 keep-alive
   connections and times each from its scheduled send to the 202. Informative floor: the
   same process and schedule publishing with ack to a work-queue stream (JetStream
   alone; the gateway also records each async call in a bucket first). The echo worker
   runs the accepted calls meanwhile; each side starts once it has caught up.
   Goal: p99 under 20 ms, every request accepted, the rate held.
3. Trigger. Ours: a message published (core NATS, a unique 16 bytes) on `bench.events`
   until `trigbench.relay`'s result arrives on `bench.emitted`. Floor: raw nats-py
   request/reply to a bare responder in its own process. No goal: p50, p99, the ratio.

Rounds alternate the sides; the tables quote medians of rounds.

    python -m benchmarks.http_bridge [--quick] [--calls N] [--rounds R] [--seconds S]
"""

from __future__ import annotations

import os

os.environ["ORT_DISABLE_TELEMETRY"] = "1"

import argparse
import asyncio
import functools
import json
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import nats
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import api

from benchmarks.echo_latency import time_ours, time_raw
from benchmarks.kit.cli import Size, run_benchmark
from benchmarks.kit.gateway_process import HOST, Gateway, start_gateway
from benchmarks.kit.harness import Stack, running_stack
from benchmarks.kit.http_client import HttpConnection, encode_request
from benchmarks.kit.httpload import CONNECTIONS, spawn_load
from benchmarks.kit.report import (
    Goal,
    Summary,
    median_summary,
    print_goal,
    print_table,
    write_json,
)
from benchmarks.kit.rounds import alternate, timed_rounds
from benchmarks.kit.trigger_app import EMITTED, EVENTS
from functions.app import app as demo_app
from runtime.client import Session

__all__ = ["main"]

NAME = "http_bridge"
GOAL_ADDED_MS = 0.5
GOAL_ACCEPT_P99_MS = 20.0
PAYLOAD = "0123456789abcdef"
BODY = json.dumps(PAYLOAD).encode()
ECHO_PATH = "/v1/functions/demo/echo"
RAW_SUBJECT = "bench.echo"
ACCEPT_STREAM, ACCEPT_SUBJECT = "BENCH_ACCEPT", "bench.accept"
EVENT_TIMEOUT_S = 10.0
DRAIN_TIMEOUT_S = 120.0
LABELS = {
    "http": f"ours   POST {ECHO_PATH} (gateway process)",
    "remote": "floor  await echo.remote.aio()",
    "accept": f"ours   POST {ECHO_PATH}?async=true -> 202",
    "publish": "floor  JetStream publish+ack (info)",
    "trigger": f"ours   publish {EVENTS} -> {EMITTED}",
    "raw": "floor  nats-py request/reply",
}

Timer = Callable[[int], Awaitable[list[int]]]


# -- 1. sync call ---------------------------------------------------------------------


async def time_http(connection: HttpConnection, request: bytes, calls: int) -> list[int]:
    samples, body = [], b""
    for _ in range(calls):
        started = time.perf_counter_ns()
        answer = await connection.exchange(request)
        samples.append(time.perf_counter_ns() - started)
        if answer.status != 200:
            raise RuntimeError(f"the gateway answered {answer.status}: {answer.body[:300]!r}")
        body = answer.body
    if json.loads(body) != PAYLOAD:
        raise RuntimeError(f"the gateway's echo returned {body!r}, expected {BODY!r}")
    return samples


async def measure_sync(gateway: Gateway, args: argparse.Namespace) -> dict[str, Any]:
    connection = await HttpConnection.open(HOST, gateway.port)
    request = encode_request("POST", ECHO_PATH, BODY, host=gateway.host)
    try:
        timers: dict[str, Timer] = {
            "http": functools.partial(time_http, connection, request),
            "remote": functools.partial(time_ours, payload=PAYLOAD),
        }
        return await timed_rounds(timers, calls=args.calls, warmup=args.warmup, rounds=args.rounds)
    finally:
        await connection.close()


# -- 2. accept under load -------------------------------------------------------------


async def caught_up(session: Session) -> None:
    """Wait until the echo worker has run every accepted call (its backlog is empty)."""
    source = (await session.registry.get("demo", "echo")).source
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    while (await session.broker.backlog(source)).total > 0:
        if time.monotonic() > deadline:
            raise RuntimeError(f"demo.echo still has a backlog after {DRAIN_TIMEOUT_S:g} s")
        await asyncio.sleep(0.1)


async def measure_accept(
    stack: Stack, gateway: Gateway, nc: NatsClient, args: argparse.Namespace
) -> dict[str, Any]:
    await nc.jetstream().add_stream(
        api.StreamConfig(
            name=ACCEPT_STREAM,
            subjects=[ACCEPT_SUBJECT],
            retention=api.RetentionPolicy.WORK_QUEUE,
            storage=api.StorageType.FILE,
        )
    )
    session = await demo_app.session()
    targets = {
        "accept": (gateway.url(f"{ECHO_PATH}?async=true"),),
        "publish": (stack.nats_url, "--subject", ACCEPT_SUBJECT),
    }

    async def side(name: str, seconds: float) -> Any:
        await caught_up(session)
        url, *extra = targets[name]
        return await spawn_load(url, args.rate, seconds, *extra)

    for name in targets:  # warm-up: the gateway's first async calls open its buckets
        await side(name, 1.0)
    sides = {name: functools.partial(side, name, args.seconds) for name in targets}
    return await alternate(sides, args.load_rounds)


# -- 3. trigger -------------------------------------------------------------------------


class Relay:
    """Events published on EVENTS, each awaited on EMITTED by its unique bytes."""

    def __init__(self, nc: NatsClient) -> None:
        self.nc = nc
        self.waiting: dict[bytes, asyncio.Future[None]] = {}
        self.sent = 0

    @classmethod
    async def open(cls, nc: NatsClient) -> Relay:
        relay = cls(nc)
        await nc.subscribe(EMITTED, cb=relay._on_msg)
        await nc.flush()
        return relay

    async def _on_msg(self, msg: Msg) -> None:
        future = self.waiting.pop(msg.data, None)
        if future is not None and not future.done():
            future.set_result(None)

    async def event(self) -> None:
        self.sent += 1
        data = f"{self.sent:016d}".encode()
        emitted = self.waiting[data] = asyncio.get_running_loop().create_future()
        await self.nc.publish(EVENTS, data)
        try:
            async with asyncio.timeout(EVENT_TIMEOUT_S):
                await emitted
        except TimeoutError:
            raise RuntimeError(
                f"event {data!r} on {EVENTS}: nothing on {EMITTED} within {EVENT_TIMEOUT_S:g} s"
            ) from None

    async def time_events(self, calls: int) -> list[int]:
        samples = []
        for _ in range(calls):
            started = time.perf_counter_ns()
            await self.event()
            samples.append(time.perf_counter_ns() - started)
        return samples


async def measure_trigger(nc: NatsClient, args: argparse.Namespace) -> dict[str, Any]:
    relay = await Relay.open(nc)
    timers: dict[str, Timer] = {
        "trigger": relay.time_events,
        "raw": functools.partial(time_raw, nc, subject=RAW_SUBJECT, data=PAYLOAD.encode()),
    }
    return await timed_rounds(timers, calls=args.calls, warmup=args.warmup, rounds=args.rounds)


# -- the run -----------------------------------------------------------------------------


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    async with running_stack() as stack:
        await stack.deploy("benchmarks.kit.trigger_app")
        await stack.start_worker("demo.echo", threads=1)
        await stack.start_worker("trigbench.relay", threads=1)
        await stack.start_helper("benchmarks.kit.responder", stack.nats_url, RAW_SUBJECT)
        gateway = await start_gateway(stack, log_level=args.gateway_log_level)
        nc = await nats.connect(stack.nats_url, name="bench-http-bridge")
        try:
            return {
                "sync": await measure_sync(gateway, args),
                "accept": await measure_accept(stack, gateway, nc, args),
                "trigger": await measure_trigger(nc, args),
            }
        finally:
            await nc.close()


def _latency_rows(medians: dict[str, Summary]) -> list[list[str]]:
    return [
        [LABELS[k], f"{s.p50_ms:.3f}", f"{s.p99_ms:.3f}", f"{s.mean_ms:.3f}"]
        for k, s in medians.items()
    ]


def report_sync(args: argparse.Namespace, rounds: dict[str, list[Summary]]) -> dict[str, Any]:
    medians = {k: median_summary(v) for k, v in rounds.items()}
    added_ms = medians["http"].p50_ms - medians["remote"].p50_ms
    ratio = medians["http"].p50_ms / medians["remote"].p50_ms
    print_table(
        f"1. sync call: demo.echo, {len(PAYLOAD)}-character string, one call in flight, "
        f"{args.rounds} rounds x {args.calls} calls (medians of rounds)",
        ["path", "p50 ms", "p99 ms", "mean ms"],
        _latency_rows(medians),
    )
    print(f"added at p50: {added_ms:.3f} ms   ratio p50 http/remote: {ratio:.2f}")
    goal = Goal(
        f"HTTP adds at most {GOAL_ADDED_MS:g} ms at p50", added_ms, added_ms <= GOAL_ADDED_MS
    )
    print_goal(goal)
    return {"medians": medians, "added_p50_ms": added_ms, "ratio_p50": ratio, "goal": goal}


def _median_load(runs: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ("count", "p50_ms", "p99_ms", "mean_ms", "max_ms", "rate_per_s", "lag_p99_ms")
    medians: dict[str, Any] = {k: statistics.median(run[k] for run in runs) for k in keys}
    medians["errors"] = sum(run["errors"] for run in runs)
    medians["first_error"] = next((r["first_error"] for r in runs if r["first_error"]), None)
    return medians


def report_accept(args: argparse.Namespace, rounds: dict[str, Any]) -> dict[str, Any]:
    medians = {k: _median_load(v) for k, v in rounds.items()}
    rows = [
        [LABELS[k]]
        + [f"{m[f]:.3f}" for f in ("p50_ms", "p99_ms", "max_ms", "lag_p99_ms")]
        + [f"{m['rate_per_s']:.0f}", str(m["errors"])]
        for k, m in medians.items()
    ]
    print_table(
        f"2. accept under load: open loop at {args.rate:g}/s from its own process, "
        f"{args.connections} connections, {args.load_rounds} rounds x {args.seconds:g} s "
        "(medians of rounds; latency from the scheduled send)",
        ["path", "p50 ms", "p99 ms", "max ms", "send lag p99 ms", "answers/s", "errors"],
        rows,
    )
    ours = medians["accept"]
    if ours["first_error"]:
        print(f"first error: {ours['first_error']}")
    held = ours["rate_per_s"] >= 0.95 * args.rate and ours["errors"] == 0
    met = ours["p99_ms"] < GOAL_ACCEPT_P99_MS and held
    text = f"202 p99 under {GOAL_ACCEPT_P99_MS:g} ms at {args.rate:g}/s, no errors, rate held"
    goal = Goal(text, ours["p99_ms"], met, {"rate_per_s": ours["rate_per_s"]})
    print_goal(goal)
    return {"medians": medians, "goal": goal}


def report_trigger(args: argparse.Namespace, rounds: dict[str, list[Summary]]) -> dict[str, Any]:
    medians = {k: median_summary(v) for k, v in rounds.items()}
    ratio = medians["trigger"].p50_ms / medians["raw"].p50_ms
    print_table(
        f"3. trigger: event published -> result emitted, one event in flight, "
        f"{args.rounds} rounds x {args.calls} events (medians of rounds)",
        ["path", "p50 ms", "p99 ms", "mean ms"],
        _latency_rows(medians),
    )
    p99_ratio = medians["trigger"].p99_ms / medians["raw"].p99_ms
    print(f"ratio trigger/raw: p50 {ratio:.2f}, p99 {p99_ratio:.2f} (no goal set)")
    return {"medians": medians, "ratio_p50": ratio, "ratio_p99": p99_ratio}


def report(args: argparse.Namespace, measured: dict[str, Any]) -> None:
    figures = {
        "sync": report_sync(args, measured["sync"]),
        "accept": report_accept(args, measured["accept"]),
        "trigger": report_trigger(args, measured["trigger"]),
    }
    write_json(NAME, {"config": vars(args), "figures": figures, "rounds": measured})


def main() -> None:
    def extra(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--gateway-log-level", default="info", help="the gateway's log level")
        parser.set_defaults(connections=CONNECTIONS)  # httpload's default, which the load uses

    sizes = [
        Size("calls", "sequential calls (events) per side and round", 200, 1000),
        Size("rounds", "rounds of figures 1 and 3", 3, 5),
        Size("warmup", "calls per side before measuring", 30, 100),
        Size("rate", "figure 2's requests/s", 500.0, 500.0, float),
        Size("seconds", "figure 2's load per side and round", 3.0, 4.0, float),
        Size("load_rounds", "rounds of figure 2", 1, 5),
    ]
    run_benchmark(__doc__, measure, report, sizes=sizes, extra=extra)


if __name__ == "__main__":
    main()
