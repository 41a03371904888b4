"""A nats-server cluster on this machine's loopback: to try a fleet, and to test one.

Each member is a `NatsServer` with a `ClusterPeer`: its own port, store and route port,
routes to the others. With three members, streams and buckets keep three copies
(`broker.Broker.replicas`): one member may die without losing a call.
"""

from __future__ import annotations

from pathlib import Path

from broker import Broker
from runtime.control.embedded import ClusterPeer, NatsServer, free_port

__all__ = ["LocalNatsCluster"]


class LocalNatsCluster:
    """`size` nats-servers routed to each other, each storing under `root/nats-<i>`."""

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
        """Every member's URL, comma-separated (what AUTAN_NATS_URL takes)."""
        return ",".join(server.url for server in self.servers)

    def server(self, name: str) -> NatsServer:
        """The member called `name` (its server_name: n0, n1, ...)."""
        return next(s for s in self.servers if s.cluster and s.cluster.server_name == name)

    def start(self) -> None:
        for server in self.servers:
            server.start()

    def stop(self) -> None:
        for server in self.servers:
            server.stop()

    async def wait_ready(self, timeout_s: float = 30.0) -> None:
        """Until JetStream answers: the cluster has formed and elected its leader."""
        broker = await Broker.connect(self.url, name="autan-cluster-probe")
        try:
            await broker.wait_for_jetstream(timeout_s)
        finally:
            await broker.close()
