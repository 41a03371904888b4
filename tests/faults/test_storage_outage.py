"""Object storage unreachable while workers start: calls wait and run later; none dies."""

from __future__ import annotations

from pathlib import Path
from uuid import uuid4

import pytest

from tests.conftest_s3 import S3Server
from tests.faults import app as fx
from tests.faults.cluster import Cluster
from tests.faults.conftest import record
from tests.faults.ledger import Ledger
from tests.faults.proxy import Proxy

pytestmark = pytest.mark.timeout(120)


async def test_storage_unreachable_during_a_cold_start(
    tmp_path: Path, ledger: Ledger, s3_server: S3Server
) -> None:
    host, port = s3_server.endpoint.rsplit(":", 1)
    proxy = Proxy(host, int(port))
    await proxy.start()
    url = f"s3://faults-{uuid4().hex[:8]}?endpoint=127.0.0.1:{proxy.port}"
    keys = (s3_server.access_key, s3_server.secret_key)
    try:
        async with Cluster.running(tmp_path, storage_url=url, s3_keys=keys) as cluster:
            await proxy.cut()  # deployed; now storage goes away before any worker started
            for _ in range(5):
                await ledger.spawn(fx.work, 0.05)
            # Workers cannot fetch the function: they exit and are restarted with backoff.
            await cluster.provider.wait_until(
                lambda _: cluster.provider.start_delay_s("faults.work") > 0, 30
            )
            await proxy.mend()
            report = await ledger.settle(cluster.session)
    finally:
        await proxy.cut()
    record("storage away at cold start", report)
    assert (report.accepted, report.completed, report.dead_lettered, report.lost) == (5, 5, 0, 0)
