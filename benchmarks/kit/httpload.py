"""Open-loop load from its own process: request i goes out at start + i/RATE, whatever came back.

    python -m benchmarks.kit.httpload URL RATE SECONDS [--connections 8] [--expect 202]
    python -m benchmarks.kit.httpload NATS_URL RATE SECONDS --subject SUBJECT   # JetStream floor

HTTP: `POST URL` (path and query as given) with a 16-character JSON string, on
`--connections` keep-alive connections (`benchmarks.kit.http_client`), opened before the
clock starts. A request whose time has come goes out on whichever connection is free, so
one slow answer does not hold up the schedule; with all of them busy it waits, and the
wait counts (no coordinated omission). An answer must have the status `--expect`.
NATS: a JetStream publish-with-ack of the same bytes to SUBJECT, at most `--connections`
in flight on one NATS connection; the ack is the answer.

Latency runs from the scheduled send time to the whole answer. One JSON line on stdout:
count, errors, first_error, p50_ms, p99_ms, mean_ms, max_ms, rate_per_s (answers per
second, first scheduled send to last answer) and lag_p99_ms (scheduled -> sent: this
process's own lateness, which the latency includes).
"""

from __future__ import annotations

import os

os.environ["ORT_DISABLE_TELEMETRY"] = "1"

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import nats
import nats.errors

from benchmarks.kit.http_client import HttpConnection, encode_request
from benchmarks.kit.report import summarize

__all__ = ["CONNECTIONS", "PAYLOAD", "main", "run_load", "spawn_load"]

PAYLOAD = b'"0123456789abcdef"'
START_DELAY_NS = 20_000_000  # the first send, after the lanes are waiting
GRACE_S = 30.0  # past the schedule, for the last answers
CONNECTIONS = 8  # keep-alive connections, each with one request in flight at most

# One request: None when it was answered as expected, else what went wrong.
Send = Callable[[], Awaitable[str | None]]


@dataclass
class Tally:
    """What the lanes saw, in nanoseconds of `time.perf_counter_ns`."""

    start_ns: int
    latencies_ns: list[int] = field(default_factory=list)
    lags_ns: list[int] = field(default_factory=list)
    errors: int = 0
    first_error: str | None = None
    last_ns: int = 0

    def record(self, due_ns: int, sent_ns: int, done_ns: int, error: str | None) -> None:
        self.lags_ns.append(sent_ns - due_ns)
        self.last_ns = max(self.last_ns, done_ns)
        if error is None:
            self.latencies_ns.append(done_ns - due_ns)
        else:
            self.errors += 1
            self.first_error = self.first_error or error

    def figures(self) -> dict[str, Any]:
        latency = summarize(self.latencies_ns or [0])
        elapsed_s = (self.last_ns - self.start_ns) / 1e9
        return {
            "count": len(self.latencies_ns),
            "errors": self.errors,
            "first_error": self.first_error,
            "p50_ms": latency.p50_ms,
            "p99_ms": latency.p99_ms,
            "mean_ms": latency.mean_ms,
            "max_ms": max(self.latencies_ns, default=0) / 1e6,
            "rate_per_s": len(self.latencies_ns) / elapsed_s if elapsed_s > 0 else 0.0,
            "lag_p99_ms": summarize(self.lags_ns or [0]).p99_ms,
        }


async def _lane(send: Send, due: asyncio.Queue[int | None], tally: Tally) -> None:
    while (due_ns := await due.get()) is not None:
        sent_ns = time.perf_counter_ns()
        error = await send()
        tally.record(due_ns, sent_ns, time.perf_counter_ns(), error)


async def _schedule(due: asyncio.Queue[int | None], tally: Tally, rate: float, n: int) -> None:
    for index in range(n):
        due_ns = tally.start_ns + round(index * 1e9 / rate)
        wait_s = (due_ns - time.perf_counter_ns()) / 1e9
        if wait_s > 0:
            await asyncio.sleep(wait_s)
        due.put_nowait(due_ns)


async def run_load(sends: list[Send], rate: float, seconds: float) -> Tally:
    """`rate * seconds` requests on schedule, each taken by the first free lane of `sends`."""
    due: asyncio.Queue[int | None] = asyncio.Queue()
    tally = Tally(start_ns=time.perf_counter_ns() + START_DELAY_NS)
    async with asyncio.timeout(seconds + GRACE_S), asyncio.TaskGroup() as group:
        for send in sends:
            group.create_task(_lane(send, due, tally))
        await _schedule(due, tally, rate, round(rate * seconds))
        for _ in sends:
            due.put_nowait(None)
    return tally


class HttpLane:
    """One keep-alive connection sending the same request; reconnects after an error."""

    def __init__(self, host: str, port: int, request: bytes, expect: int) -> None:
        self.host, self.port = host, port
        self.request = request
        self.expect = expect
        self.connection: HttpConnection | None = None

    async def connect(self) -> None:
        self.connection = await HttpConnection.open(self.host, self.port)

    async def send(self) -> str | None:
        try:
            if self.connection is None:
                await self.connect()
            assert self.connection is not None
            answer = await self.connection.exchange(self.request)
        except OSError as exc:  # ConnectionError included
            await self.close()
            return f"{type(exc).__name__}: {exc}"
        if answer.status != self.expect:
            return f"status {answer.status}: {answer.body[:200]!r}"
        return None

    async def close(self) -> None:
        connection, self.connection = self.connection, None
        if connection is not None:
            await connection.close()


async def load_http(url: str, args: argparse.Namespace) -> Tally:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    request = encode_request("POST", target, PAYLOAD, host=f"{host}:{port}")
    lanes = [HttpLane(host, port, request, args.expect) for _ in range(args.connections)]
    try:
        for lane in lanes:
            await lane.connect()
        return await run_load([lane.send for lane in lanes], args.rate, args.seconds)
    finally:
        for lane in lanes:
            await lane.close()


async def load_jetstream(url: str, args: argparse.Namespace) -> Tally:
    nc = await nats.connect(url, name="bench-load")
    js = nc.jetstream()

    async def send() -> str | None:
        try:
            await js.publish(args.subject, PAYLOAD, timeout=10.0)
        except nats.errors.Error as exc:
            return f"{type(exc).__name__}: {exc}"
        return None

    try:
        return await run_load([send] * args.connections, args.rate, args.seconds)
    finally:
        await nc.close()


async def spawn_load(url: str, rate: float, seconds: float, *options: str) -> Any:
    """Run `python -m benchmarks.kit.httpload URL RATE SECONDS OPTIONS...` in its own process;
    the figures it printed."""
    # Here, not at the top: the load process itself imports nothing of the runtime.
    from benchmarks.kit.harness import ROOT, child_env

    command = ["-m", "benchmarks.kit.httpload", url, str(rate), str(seconds), *options]
    process = await asyncio.create_subprocess_exec(
        sys.executable, *command, cwd=ROOT, env=child_env(),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await process.communicate()
    if process.returncode != 0 or not out.strip():
        raise RuntimeError(f"httpload {url} failed (code {process.returncode}): {out[-500:]!r}")
    return json.loads(out.splitlines()[-1])


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url", help="http://HOST:PORT/PATH?QUERY, or nats://HOST:PORT")
    parser.add_argument("rate", type=float, help="requests per second")
    parser.add_argument("seconds", type=float, help="how long the schedule runs")
    parser.add_argument(
        "--connections", type=int, default=CONNECTIONS, help="requests in flight at most"
    )
    parser.add_argument("--expect", type=int, default=202, help="the HTTP status that answers")
    parser.add_argument("--subject", help="with a nats:// URL: publish-with-ack here")
    args = parser.parse_args()
    if args.url.startswith("nats://") and not args.subject:
        parser.error("a nats:// URL needs --subject (a subject a stream captures)")
    return args


def main() -> None:
    args = parse_args()
    load = load_jetstream if args.url.startswith("nats://") else load_http
    tally = asyncio.run(load(args.url, args))
    print(json.dumps(tally.figures()), flush=True)


if __name__ == "__main__":
    main()
