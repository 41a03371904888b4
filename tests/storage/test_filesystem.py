"""What only the filesystem backend has: a root directory, temp files, key conflicts."""

from __future__ import annotations

from pathlib import Path

import pytest

from storage import FileStore, InvalidKey, ObjectInfo, StorageError


@pytest.fixture
def store(tmp_path: Path) -> FileStore:
    return FileStore(tmp_path / "objects", fsync=True)


async def test_objects_are_plain_files(store: FileStore) -> None:
    await store.put("a/b.bin", b"data")
    assert (store.root / "a" / "b.bin").read_bytes() == b"data"
    assert sorted(p.name for p in (store.root / "a").iterdir()) == ["b.bin"]


async def test_temp_files_are_not_objects(store: FileStore) -> None:
    await store.put("a/real", b"1")
    (store.root / "a" / ".real.0123.autan-tmp").write_bytes(b"half-written")
    assert [_plain(i) for i in await store.list()] == [("a/real", 1)]
    with pytest.raises(InvalidKey, match="temp"):
        await store.put("a/.x.autan-tmp", b"x")


@pytest.mark.parametrize(("first", "second"), [("a", "a/b"), ("a/b", "a")])
async def test_object_and_prefix_conflict(store: FileStore, first: str, second: str) -> None:
    await store.put(first, b"1")
    with pytest.raises(StorageError, match="both an object and a prefix"):
        await store.put(second, b"2")
    assert await store.get(first) == b"1"
    assert await store.stat(second) is None


def test_relative_root_rejected() -> None:
    with pytest.raises(ValueError, match="absolute"):
        FileStore(Path("relative/dir"))


def _plain(info: ObjectInfo | None) -> tuple[str, int] | None:
    """Key and size (when it was written is checked apart)."""
    return None if info is None else (info.key, info.size_bytes)
