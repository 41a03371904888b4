"""Fixtures for the storage tests: one store per test on each backend, on real servers."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from storage import ObjectStore, open_store
from tests.conftest_s3 import S3Server

__all__ = ["BACKENDS", "s3_url", "store"]

BACKENDS = ["file", "s3"]


def s3_url(server: S3Server, bucket: str) -> str:
    """The storage URL of `bucket` on the test server, with S3's smallest part size."""
    return f"s3://{bucket}?endpoint={server.endpoint}&region=us-east-1&part_size_mib=5"


@pytest.fixture(params=BACKENDS)
async def store(
    request: pytest.FixtureRequest, tmp_path: Path, s3_server: S3Server
) -> AsyncIterator[ObjectStore]:
    """A fresh, empty store on each backend: its own directory, or its own bucket."""
    if request.param == "file":
        url = (tmp_path / "objects").as_uri()
    else:
        url = s3_url(s3_server, f"autan-test-{uuid.uuid4().hex[:16]}")
    opened = open_store(url, access_key=s3_server.access_key, secret_key=s3_server.secret_key)
    try:
        yield opened
    finally:
        await _empty(opened)
        await opened.aclose()


async def _empty(store: ObjectStore) -> None:
    """Leave nothing behind on a shared server (matters with a real MinIO)."""
    for info in await store.list():
        await store.delete(info.key)
