"""A three-node nats-server cluster on loopback, for tests of replicated streams."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import nats

from runtime.control import LocalNatsCluster


class NatsCluster(LocalNatsCluster):
    """The product's local cluster, and which member leads a stream."""

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
