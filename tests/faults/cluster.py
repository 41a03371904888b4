"""A whole stack per fault case: its own nats-server, storage, scaler and forked workers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from runtime.client import Session
from runtime.control import LocalProvider, NatsServer, ProvidedWorker, free_port
from runtime.control.scaler import Scaler
from runtime.core import Settings
from runtime.ops import deploy_target
from tests.faults.app import app
from tests.keys import DEPLOY_KEY, TRUSTED_KEYS
from tests.natscluster import NatsCluster
from tests.stack import serving


class Cluster:
    """The running parts of one case, and the faults a test can inflict on them."""

    def __init__(
        self,
        server: NatsServer,
        settings: Settings,
        session: Session,
        nats_cluster: NatsCluster | None = None,
    ) -> None:
        self.server = server
        self.nats_cluster = nats_cluster
        self.settings = settings
        self.session = session
        self.provider = LocalProvider(settings, stop_grace_s=20)
        self.scaler = Scaler(session.broker, provider=self.provider)

    def workers(self, fn: str) -> list[ProvidedWorker]:
        return self.provider.workers(f"faults.{fn}")

    async def ready_workers(
        self, fn: str, count: int, timeout_s: float = 60
    ) -> list[ProvidedWorker]:
        def enough(workers: list[ProvidedWorker]) -> bool:
            return (
                sum(w.function == f"faults.{fn}" and w.state == "ready" for w in workers) >= count
            )

        await self.provider.wait_until(enough, timeout_s)
        return [w for w in self.workers(fn) if w.state == "ready"]

    def kill_nats(self) -> None:
        self.server.kill()

    def restart_nats(self) -> None:
        self.server.start()

    @classmethod
    @asynccontextmanager
    async def running(
        cls,
        root: Path,
        *,
        max_queued_calls: int = 1_000_000,
        storage_url: str | None = None,
        s3_keys: tuple[str, str] | None = None,
        ack_wait_s: float = 2.0,
        nats_nodes: int = 1,
    ) -> AsyncIterator[Cluster]:
        """`nats_nodes=3`: a three-node nats-server cluster (streams and buckets R3)."""
        nats_cluster = NatsCluster(root, nats_nodes) if nats_nodes > 1 else None
        if nats_cluster is not None:
            nats_cluster.start()
            await nats_cluster.wait_ready()
            server = nats_cluster.servers[0]
        else:
            server = NatsServer(root / "nats", port=free_port())
            server.start()
        access_key, secret_key = s3_keys or (None, None)
        settings = Settings(
            nats_url=nats_cluster.url if nats_cluster else server.url,
            storage_url=storage_url or f"file://{root / 'objects'}",
            s3_access_key=access_key,
            s3_secret_key=secret_key,
            data_dir=root,
            deploy_key=DEPLOY_KEY,
            trusted_keys=TRUSTED_KEYS,
            ack_wait_s=ack_wait_s,
            max_queued_calls=max_queued_calls,
            connect_timeout_s=2.0,
        )
        session = await Session.open(settings)
        try:
            await deploy_target(session.link, "tests.faults.app")
            app.sessions.configure(settings)
            cluster = cls(server, settings, session, nats_cluster)
            async with serving(cluster.provider, cluster.scaler, stop_timeout_s=60):
                yield cluster
        finally:
            await app.sessions.aclose()
            await session.close()
            if nats_cluster is not None:
                nats_cluster.stop()
            server.stop()
