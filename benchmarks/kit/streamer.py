"""The streaming floor: a bare nats-py process that, asked for N messages, publishes them.

    python -m benchmarks.kit.streamer NATS_URL SUBJECT

A request's data is `N`; the answer is N core NATS messages to the request's reply subject,
each the PAYLOAD bytes, as fast as nats-py publishes (no flow control, no encoding). Prints
'ready' once it listens, and runs until SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio

import nats
from nats.aio.msg import Msg

__all__ = ["PAYLOAD", "main"]

PAYLOAD = b"0123456789abcdef"


async def serve(url: str, subject: str) -> None:
    nc = await nats.connect(url, name="bench-streamer")

    async def burst(msg: Msg) -> None:
        for _ in range(int(msg.data)):
            await nc.publish(msg.reply, PAYLOAD)
        await nc.flush()

    await nc.subscribe(subject, cb=burst)
    await nc.flush()
    print("ready", flush=True)
    await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url")
    parser.add_argument("subject")
    args = parser.parse_args()
    asyncio.run(serve(args.url, args.subject))


if __name__ == "__main__":
    main()
