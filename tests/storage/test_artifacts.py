"""Content addressing and verification, on every backend."""

from __future__ import annotations

import os
from pathlib import Path

import msgspec
import pytest

from storage import (
    ArtifactStore,
    Digest,
    DiskCache,
    IntegrityError,
    ObjectNotFound,
    ObjectStore,
    sha256_file,
)

HELLO_SHA256 = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"


@pytest.fixture
def artifacts(store: ObjectStore) -> ArtifactStore:
    return ArtifactStore(store)


@pytest.fixture
def cache(tmp_path: Path) -> DiskCache:
    return DiskCache(tmp_path / "cache")


def test_digest_forms() -> None:
    digest = Digest.of(b"hello")
    assert digest == Digest(HELLO_SHA256, 5)
    assert str(digest) == f"sha256:{HELLO_SHA256}"
    assert digest.key == f"sha256/{HELLO_SHA256}"
    assert Digest.parse(str(digest), 5) == digest
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(digest), type=Digest) == digest


@pytest.mark.parametrize("text", ["md5:abc", HELLO_SHA256, "sha256:XYZ", "sha256:" + "A" * 64])
def test_digest_parse_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="sha256"):
        Digest.parse(text, 1)


def test_sha256_file(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"hello")
    assert sha256_file(path) == HELLO_SHA256
    assert Digest.of_file(path) == Digest.of(b"hello")


async def test_same_bytes_same_digest_uploaded_once(artifacts: ArtifactStore) -> None:
    first = await artifacts.put_bytes(b"model weights")
    second = await artifacts.put_bytes(b"model weights")
    assert first.uploaded
    assert not second.uploaded
    assert first.digest == second.digest == Digest.of(b"model weights")
    assert await artifacts.store.list() == [await artifacts.store.stat(first.digest.key)]
    assert await artifacts.get_bytes(first.digest) == b"model weights"


async def test_put_file_matches_put_bytes(artifacts: ArtifactStore, tmp_path: Path) -> None:
    content = os.urandom(3 * 1024 * 1024 + 5)
    path = tmp_path / "model.onnx"
    path.write_bytes(content)
    from_file = await artifacts.put_file(path)
    assert from_file.uploaded
    assert from_file.digest == Digest.of(content)
    again = await artifacts.put_bytes(content)
    assert not again.uploaded
    assert await artifacts.get_bytes(from_file.digest) == content


async def test_wrong_size_object_is_uploaded_again(artifacts: ArtifactStore) -> None:
    digest = Digest.of(b"complete")
    await artifacts.store.put(digest.key, b"trunc")  # e.g. an interrupted copy
    assert (await artifacts.put_bytes(b"complete")).uploaded
    assert await artifacts.get_bytes(digest) == b"complete"


@pytest.mark.parametrize("tampered", [b"evil", b"HELLO"], ids=["other-size", "same-size"])
async def test_tampered_object_raises_integrity_error(
    artifacts: ArtifactStore, cache: DiskCache, tampered: bytes
) -> None:
    digest = (await artifacts.put_bytes(b"hello")).digest
    await artifacts.store.put(digest.key, tampered)
    with pytest.raises(IntegrityError, match=f"artifact sha256/{HELLO_SHA256} does not match"):
        await artifacts.get_bytes(digest)
    with pytest.raises(IntegrityError, match=f"got sha256/{Digest.of(tampered).hex}"):
        await artifacts.fetch(digest, cache)
    assert not cache.contains(digest.hex)
    assert list((cache.root / "tmp").iterdir()) == []  # the bad download was removed


async def test_fetch_then_cache_hit(artifacts: ArtifactStore, cache: DiskCache) -> None:
    digest = (await artifacts.put_bytes(b"weights")).digest
    path = await artifacts.fetch(digest, cache)
    assert path == cache.path_for(digest.hex)
    assert path.read_bytes() == b"weights"
    await artifacts.store.delete(digest.key)  # a hit must not touch the store
    assert await artifacts.fetch(digest, cache) == path
    assert await artifacts.fetch(digest, cache, verify=True) == path


async def test_damaged_cache_entry_is_fetched_again(
    artifacts: ArtifactStore, cache: DiskCache
) -> None:
    digest = (await artifacts.put_bytes(b"weights")).digest
    path = await artifacts.fetch(digest, cache)
    path.write_bytes(b"WEIGHTS")  # same size: only a full verification notices
    assert await artifacts.fetch(digest, cache) == path
    assert path.read_bytes() == b"WEIGHTS"
    assert await artifacts.fetch(digest, cache, verify=True) == path
    assert path.read_bytes() == b"weights"
    path.write_bytes(b"short")  # wrong size: noticed cheaply
    await artifacts.fetch(digest, cache)
    assert path.read_bytes() == b"weights"


async def test_missing_artifact(artifacts: ArtifactStore, cache: DiskCache) -> None:
    digest = Digest.of(b"never stored")
    with pytest.raises(ObjectNotFound):
        await artifacts.get_bytes(digest)
    with pytest.raises(ObjectNotFound):
        await artifacts.fetch(digest, cache)
    assert not cache.contains(digest.hex)
