"""Failures a user meets first: no server at the endpoint, a URL no backend accepts."""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from storage import (
    FileStore,
    InvalidStorageURL,
    S3Config,
    S3Store,
    StorageUnavailable,
    open_store,
)
from storage.url import parse_file_url, parse_s3_url
from tests.conftest_s3 import free_port


async def test_closed_port_fails_fast_naming_the_endpoint() -> None:
    endpoint = f"127.0.0.1:{free_port()}"
    store = open_store(f"s3://autan?endpoint={endpoint}", access_key="k", secret_key="s")
    started = time.monotonic()
    try:
        with pytest.raises(StorageUnavailable, match=f"http://{endpoint}") as caught:
            await store.get("some/key")
    finally:
        await store.aclose()
    assert time.monotonic() - started < 5.0
    assert "is MinIO running?" in str(caught.value)


async def test_http_server_that_is_not_s3(tmp_path: Path) -> None:
    with _http_server(tmp_path) as endpoint:
        store = open_store(f"s3://autan?endpoint={endpoint}", access_key="k", secret_key="s")
        try:
            with pytest.raises(StorageUnavailable, match="does not answer like an S3 API"):
                await store.put("k", b"x")
        finally:
            await store.aclose()


@contextmanager
def _http_server(directory: Path) -> Iterator[str]:
    """A plain static-file HTTP server on loopback: reachable, but not S3."""
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(directory))
    with ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
        thread.start()
        try:
            yield f"127.0.0.1:{server.server_address[1]}"
        finally:
            server.shutdown()
            thread.join()


async def test_every_operation_reports_unavailable() -> None:
    store = S3Store(S3Config(bucket="autan", endpoint=f"127.0.0.1:{free_port()}"))
    try:
        with pytest.raises(StorageUnavailable):
            await store.put("k", b"x")
        with pytest.raises(StorageUnavailable):
            await store.stat("k")
        with pytest.raises(StorageUnavailable):
            await store.list()
    finally:
        await store.aclose()


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:9000/bucket", "gs://bucket", "/var/lib/autan", "minio://b"]
)
def test_unknown_scheme_names_accepted_forms(url: str) -> None:
    with pytest.raises(InvalidStorageURL, match=r"file:///path or s3://bucket\?endpoint="):
        open_store(url)


@pytest.mark.parametrize(
    "url",
    [
        "file://relative/path",
        "file:relative",
        "file:///tmp/x?fsync=maybe",
        "file:///tmp/x?colour=blue",
        "s3://Bad_Bucket",
        "s3://ab",
        "s3://bucket/prefix",
        "s3://key:secret@bucket",
        "s3://bucket?endpoint=http://127.0.0.1:9000",
        "s3://bucket?part_size_mib=1",
        "s3://bucket?part_size_mib=big",
        "s3://bucket?endpiont=127.0.0.1:9000",
    ],
)
def test_malformed_urls_rejected(url: str) -> None:
    with pytest.raises(InvalidStorageURL):
        open_store(url)


@pytest.mark.parametrize("url", ["s3://key:hunter2@bucket", "gs://key:hunter2@bucket"])
def test_messages_never_show_credentials(url: str) -> None:
    with pytest.raises(InvalidStorageURL) as caught:
        open_store(url)
    assert "hunter2" not in str(caught.value)


def test_file_url() -> None:
    assert parse_file_url("file:///var/lib/autan%20data") == (Path("/var/lib/autan data"), False)
    assert parse_file_url("file://localhost/srv?fsync=true") == (Path("/srv"), True)
    store = open_store("file:///srv/objects")
    assert isinstance(store, FileStore)
    assert store.url == "file:///srv/objects"


def test_s3_url_defaults_and_round_trip() -> None:
    config = parse_s3_url("s3://autan")
    assert config.endpoint == "127.0.0.1:9000"
    assert config.tls is False  # loopback
    assert parse_s3_url("s3://autan?endpoint=minio.internal:9000").tls is True
    assert parse_s3_url("s3://autan?endpoint=minio:9000&secure=false").tls is False
    url = "s3://autan?endpoint=localhost:9000&secure=false&region=eu-west-1"
    assert parse_s3_url(url).url == url
    assert parse_s3_url(url).region == "eu-west-1"
