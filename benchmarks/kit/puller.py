"""The pull-consumer floor: nats-py `pull_subscribe(...).fetch(BATCH)`, acking every message.

    python -m benchmarks.kit.puller NATS_URL STREAM SUBJECT DONE_SUBJECT PER_ROUND [--batch 32]

Runs in its own process, as a worker would. Each time it has acked PER_ROUND messages it
publishes the count on DONE_SUBJECT, which stops the parent's clock. Prints 'ready' once its
durable consumer exists; runs until SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio

import nats
from nats.js.client import JetStreamContext

__all__ = ["main", "serve"]

DURABLE = "bench_raw"
IDLE_FETCH_S = 1.0


async def serve(url: str, stream: str, subject: str, done: str, per_round: int, batch: int) -> None:
    nc = await nats.connect(url, name="bench-puller")
    js = nc.jetstream()
    sub = await js.pull_subscribe(subject, durable=DURABLE, stream=stream)
    await nc.flush()
    print("ready", flush=True)
    while True:
        await _one_round(sub, per_round, batch)
        await nc.publish(done, str(per_round).encode())
        await nc.flush()


async def _one_round(sub: JetStreamContext.PullSubscription, per_round: int, batch: int) -> None:
    acked = 0
    while acked < per_round:
        try:
            msgs = await sub.fetch(min(batch, per_round - acked), timeout=IDLE_FETCH_S)
        except TimeoutError:  # nats-py raises its own or asyncio's, both TimeoutError
            continue
        for msg in msgs:
            await msg.ack()
        acked += len(msgs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url")
    parser.add_argument("stream")
    parser.add_argument("subject")
    parser.add_argument("done")
    parser.add_argument("per_round", type=int)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    asyncio.run(serve(args.url, args.stream, args.subject, args.done, args.per_round, args.batch))


if __name__ == "__main__":
    main()
