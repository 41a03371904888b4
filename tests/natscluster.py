"""A three-node nats-server cluster on loopback, for tests of replicated streams."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio
import nats
import nats.errors
import nats.js.errors

from runtime.control import ClusterPeer, NatsServer, free_port


class NatsCluster:
    """Three nats-servers routed to each other, each with a JetStream store of its own."""

    def __init__(self, root: Path, size: int = 3) -> None:
        routes = [free_port() for _ in range(size)]
        self.servers = [
            NatsServer(
                root / f"nats-{index}",
                port=free_port(),
                cluster=ClusterPeer(
                    server_name=f"n{index}",
                    port=routes[index],
                    routes=tuple(f"nats://127.0.0.1:{p}" for p in routes if p != routes[index]),
                ),
            )
            for index in range(size)
        ]

    @property
    def url(self) -> str:
        return ",".join(server.url for server in self.servers)

    def server(self, name: str) -> NatsServer:
        """The member called `name` (its server_name)."""
        return next(s for s in self.servers if s.cluster and s.cluster.server_name == name)

    def start(self) -> None:
        for server in self.servers:
            server.start()

    def stop(self) -> None:
        for server in self.servers:
            server.stop()

    async def wait_ready(self, timeout_s: float = 30.0) -> None:
        """Until JetStream has elected its leader and can keep a replicated stream."""
        nc = await nats.connect(self.url.split(","))
        js = nc.jetstream(timeout=2.0)
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                try:
                    await js.add_stream(name="READY", subjects=["ready.probe"], num_replicas=3)
                    await js.delete_stream("READY")
                    return
                except (nats.errors.TimeoutError, nats.js.errors.APIError):
                    if time.monotonic() > deadline:
                        raise
                    await anyio.sleep(0.2)
        finally:
            await nc.close()

    async def leader_of(self, stream: str) -> str:
        """The server_name of the member leading `stream`."""
        nc = await nats.connect(self.url.split(","))
        try:
            info = await nc.jetstream().stream_info(stream)
            assert info.cluster is not None
            assert info.cluster.leader
            return info.cluster.leader
        finally:
            await nc.close()


@contextmanager
def nats_cluster(root: Path) -> Iterator[NatsCluster]:
    cluster = NatsCluster(root)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()
