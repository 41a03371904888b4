"""Echo floors: bare nats-py responders, each in its own process, answering with the bytes sent.

    python -m benchmarks.kit.responder NATS_URL SUBJECT                 # core request/reply
    python -m benchmarks.kit.responder NATS_URL SUBJECT --stream NAME   # through JetStream

The core responder answers `nc.request(SUBJECT, data)`. The JetStream one is the least a
runtime on a work-queue stream can do: a durable pull consumer on SUBJECT with a standing pull
request (topped up, never one fetch per message), publishing each message's bytes to the
subject in its `Bench-Reply` header, then acking it. Either prints 'ready' once it can
answer, and runs until SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import json

import nats
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import api

__all__ = ["REPLY_HEADER", "main", "serve_core", "serve_jetstream"]

REPLY_HEADER = "Bench-Reply"
DURABLE = "bench_js"
WINDOW = 64


async def serve_core(nc: NatsClient, subject: str) -> None:
    async def reply(msg: Msg) -> None:
        await msg.respond(msg.data)

    await nc.subscribe(subject, cb=reply)


class _StandingPull:
    """Messages of one durable pull consumer, pull requests topped up to WINDOW outstanding."""

    def __init__(self, nc: NatsClient, stream: str) -> None:
        self.nc = nc
        self.next_subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{DURABLE}"
        self.inbox = nc.new_inbox()
        self.outstanding = 0

    async def top_up(self) -> None:
        if self.outstanding > WINDOW // 2:
            return
        want = WINDOW - self.outstanding
        self.outstanding += want
        request = json.dumps({"batch": want, "expires": 60 * 10**9}).encode()
        await self.nc.publish(self.next_subject, request, reply=self.inbox)

    async def on_msg(self, msg: Msg) -> None:
        if msg.headers and msg.headers.get("Status"):  # an expired request: ask again
            self.outstanding = 0
        else:
            self.outstanding -= 1
            await self.nc.publish((msg.headers or {})[REPLY_HEADER], msg.data)
            await msg.ack()
        await self.top_up()


async def serve_jetstream(nc: NatsClient, subject: str, stream: str) -> None:
    config = api.ConsumerConfig(
        durable_name=DURABLE, filter_subject=subject, ack_policy=api.AckPolicy.EXPLICIT
    )
    await nc.jetstream().add_consumer(stream, config)
    pull = _StandingPull(nc, stream)
    await nc.subscribe(pull.inbox, cb=pull.on_msg)
    await pull.top_up()


async def serve(url: str, subject: str, stream: str | None) -> None:
    nc = await nats.connect(url, name="bench-responder")
    if stream is None:
        await serve_core(nc, subject)
    else:
        await serve_jetstream(nc, subject, stream)
    await nc.flush()
    print("ready", flush=True)
    await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url")
    parser.add_argument("subject")
    parser.add_argument("--stream", help="answer through this work-queue stream (JetStream)")
    args = parser.parse_args()
    asyncio.run(serve(args.url, args.subject, args.stream))


if __name__ == "__main__":
    main()
