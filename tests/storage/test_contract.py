"""One contract, every backend: the same tests run against FileStore and S3Store."""

from __future__ import annotations

import os
import time
from contextlib import aclosing
from pathlib import Path

import anyio
import pytest

from storage import InvalidKey, ObjectInfo, ObjectNotFound, ObjectStore

MIB = 1024 * 1024
BAD_KEYS = ["", "/abs", "a//b", "a/", "../up", "a/../b", "a/./b", ".", "a\x00b", "tab\tkey"]


async def test_put_get_roundtrip(store: ObjectStore) -> None:
    info = await store.put("a/b.bin", b"hello")
    assert _plain(info) == ("a/b.bin", 5)
    assert await store.get("a/b.bin") == b"hello"


async def test_put_replaces(store: ObjectStore) -> None:
    await store.put("k", b"first")
    await store.put("k", b"2nd")
    assert await store.get("k") == b"2nd"
    assert _plain(await store.stat("k")) == ("k", 3)


async def test_stat_and_list_say_when_an_object_was_written(store: ObjectStore) -> None:
    """What the payload sweeper ages objects by (seconds: S3 keeps no finer time)."""
    before = time.time()
    await store.put("aged/one", b"x")
    [listed] = await store.list("aged/")
    stat = await store.stat("aged/one")
    assert stat is not None
    for info in (listed, stat):
        assert before - 2 <= info.modified_unix_s <= time.time() + 2


async def test_empty_object(store: ObjectStore) -> None:
    await store.put("empty", b"")
    assert await store.get("empty") == b""
    assert _plain(await store.stat("empty")) == ("empty", 0)


async def test_get_missing_raises_object_not_found(store: ObjectStore) -> None:
    with pytest.raises(ObjectNotFound) as caught:
        await store.get("no/such/key")
    assert caught.value.key == "no/such/key"


async def test_get_file_missing_raises_and_writes_nothing(
    store: ObjectStore, tmp_path: Path
) -> None:
    target = tmp_path / "out" / "x.bin"
    with pytest.raises(ObjectNotFound):
        await store.get_file("missing", target)
    assert not target.exists()


async def test_stat(store: ObjectStore) -> None:
    assert await store.stat("nothing-here") is None
    await store.put("dir/obj", b"12345678")
    assert _plain(await store.stat("dir/obj")) == ("dir/obj", 8)
    assert await store.stat("dir") is None  # a prefix is not an object


async def test_list_by_prefix_sorted(store: ObjectStore) -> None:
    for key in ["b/2", "a/1", "b/1", "b/10/x", "bz", "c"]:
        await store.put(key, key.encode())
    assert [info.key for info in await store.list("b/")] == ["b/1", "b/10/x", "b/2"]
    assert [info.key for info in await store.list("b")] == ["b/1", "b/10/x", "b/2", "bz"]
    assert [info.key for info in await store.list("b/1")] == ["b/1", "b/10/x"]
    everything = await store.list()
    assert [info.key for info in everything] == ["a/1", "b/1", "b/10/x", "b/2", "bz", "c"]
    assert _plain(everything[2]) == ("b/10/x", 6)
    assert await store.list("zzz") == []


async def test_delete_is_idempotent(store: ObjectStore) -> None:
    await store.put("gone/soon", b"x")
    await store.delete("gone/soon")
    await store.delete("gone/soon")
    await store.delete("never/existed")
    assert await store.stat("gone/soon") is None
    assert await store.list("gone/") == []


async def test_concurrent_first_use(store: ObjectStore) -> None:
    # On S3 every call races to create the bucket on first use.
    async with anyio.create_task_group() as tg:
        for index in range(12):
            tg.start_soon(store.put, f"c/{index:02}", b"%d" % index)
    assert [info.key for info in await store.list("c/")] == [f"c/{i:02}" for i in range(12)]


async def test_put_file_missing_source_is_the_callers_error(
    store: ObjectStore, tmp_path: Path
) -> None:
    with pytest.raises(FileNotFoundError):
        await store.put_file("k", tmp_path / "no-such-file")


async def test_big_file_roundtrip(store: ObjectStore, tmp_path: Path) -> None:
    # Several times the S3 part size (5 MiB in the fixture), so the upload is multipart.
    source = tmp_path / "big.bin"
    content = os.urandom(20 * MIB + 123)
    source.write_bytes(content)
    assert _plain(await store.put_file("big/file", source)) == ("big/file", len(content))
    assert _plain(await store.stat("big/file")) == ("big/file", len(content))
    target = tmp_path / "down" / "big.bin"
    assert _plain(await store.get_file("big/file", target)) == ("big/file", len(content))
    assert target.read_bytes() == content
    assert sorted(path.name for path in target.parent.iterdir()) == ["big.bin"]  # no temp left


async def test_get_file_replaces_existing_file(store: ObjectStore, tmp_path: Path) -> None:
    target = tmp_path / "existing.bin"
    target.write_bytes(b"old content that is longer")
    await store.put("new", b"new")
    await store.get_file("new", target)
    assert target.read_bytes() == b"new"


async def test_stream_chunks_concatenate(store: ObjectStore) -> None:
    content = os.urandom(3 * MIB + 17)
    await store.put("streamed", content)
    chunks = [chunk async for chunk in store.stream("streamed", chunk_bytes=MIB)]
    assert b"".join(chunks) == content
    assert all(0 < len(chunk) <= MIB for chunk in chunks)
    assert len(chunks) >= 4


async def test_stream_closed_early(store: ObjectStore) -> None:
    await store.put("partial", b"x" * (2 * MIB))
    async with aclosing(store.stream("partial", chunk_bytes=1024)) as chunks:
        async for chunk in chunks:
            assert chunk == b"x" * 1024
            break
    assert await store.get("partial") == b"x" * (2 * MIB)  # the store still works


async def test_stream_missing_raises(store: ObjectStore) -> None:
    with pytest.raises(ObjectNotFound):
        await _read_all(store, "missing")


async def _read_all(store: ObjectStore, key: str) -> bytes:
    async with aclosing(store.stream(key)) as chunks:
        return b"".join([chunk async for chunk in chunks])


@pytest.mark.parametrize("key", BAD_KEYS)
async def test_bad_keys_rejected(store: ObjectStore, key: str, tmp_path: Path) -> None:
    with pytest.raises(InvalidKey):
        await store.put(key, b"x")
    with pytest.raises(InvalidKey):
        await store.get(key)
    with pytest.raises(InvalidKey):
        await store.stat(key)
    with pytest.raises(InvalidKey):
        await store.delete(key)
    with pytest.raises(ValueError, match="key"):  # InvalidKey is a ValueError
        await store.get_file(key, tmp_path / "x")


@pytest.mark.parametrize("prefix", ["/abs", "../x", "a//b"])
async def test_bad_prefix_rejected(store: ObjectStore, prefix: str) -> None:
    with pytest.raises(InvalidKey):
        await store.list(prefix)


async def test_unicode_keys(store: ObjectStore) -> None:
    await store.put("données/été ñ.txt", b"ok")
    assert await store.get("données/été ñ.txt") == b"ok"
    assert [info.key for info in await store.list("données/")] == ["données/été ñ.txt"]


def _plain(info: ObjectInfo | None) -> tuple[str, int] | None:
    """Key and size (when it was written is checked apart)."""
    return None if info is None else (info.key, info.size_bytes)


async def test_put_file_reports_the_bytes_sent(store: ObjectStore, tmp_path: Path) -> None:
    source = tmp_path / "big.bin"
    source.write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    seen: list[int] = []
    info = await store.put_file("sha256/progress", source, seen.append)
    assert info.size_bytes == source.stat().st_size
    assert seen
    assert seen == sorted(seen)
    assert seen[-1] == source.stat().st_size
