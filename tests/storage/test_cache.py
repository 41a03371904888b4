"""DiskCache: atomic insert and least-recently-used eviction."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from storage import Digest, DiskCache


def _insert(cache: DiskCache, content: bytes, mtime: float) -> str:
    digest = Digest.of(content)
    temp = cache.temp_path()
    temp.write_bytes(content)
    path = cache.insert(digest.hex, temp)
    os.utime(path, (mtime, mtime))
    return digest.hex


def test_insert_and_contains(tmp_path: Path) -> None:
    cache = DiskCache(tmp_path)
    digest = Digest.of(b"abc")
    assert not cache.contains(digest.hex)
    temp = cache.temp_path()
    temp.write_bytes(b"abc")
    path = cache.insert(digest.hex, temp)
    assert cache.contains(digest.hex)
    assert path.read_bytes() == b"abc"
    assert not temp.exists()
    assert cache.size_bytes() == 3


def test_evicts_least_recently_used(tmp_path: Path) -> None:
    cache = DiskCache(tmp_path, max_bytes=250)
    old = _insert(cache, b"a" * 100, mtime=1_000)
    used = _insert(cache, b"b" * 100, mtime=2_000)
    cache.touch(old)  # a hit makes it the most recently used
    newest = _insert(cache, b"c" * 100, mtime=3_000)
    assert not cache.contains(used)
    assert cache.contains(old)
    assert cache.contains(newest)
    assert cache.size_bytes() == 200


def test_keeps_the_new_entry_even_when_too_big(tmp_path: Path) -> None:
    cache = DiskCache(tmp_path, max_bytes=10)
    small = _insert(cache, b"small", mtime=1_000)
    big = _insert(cache, b"x" * 50, mtime=2_000)
    assert cache.contains(big)
    assert not cache.contains(small)


@pytest.mark.parametrize("bad", ["../etc/passwd", "ABCDEF0123456789", "", "g" * 64])
def test_rejects_non_hex_names(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ValueError, match="hex"):
        DiskCache(tmp_path).path_for(bad)
