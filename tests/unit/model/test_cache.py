"""streams.model.cache.TextCache, and the glob regex cache built on it: bounded in entries and in bytes."""

from __future__ import annotations

import re
import sys

import pytest

from streams.model import glob
from streams.model.cache import ENTRY_BYTES, TextCache


def test_put_stores_and_accounts_each_entry() -> None:
    cache: TextCache[int] = TextCache(max_entries=10, max_key_chars=8, max_bytes=10_000)
    assert cache.put("a", 1, 100) == 1
    assert cache.get("a") == 1 and "a" in cache
    assert cache.bytes_held == sys.getsizeof("a") + 100 + ENTRY_BYTES
    cache.put("a", 1, 100)  # already there: nothing added
    assert len(cache) == 1 and cache.bytes_held == sys.getsizeof("a") + 100 + ENTRY_BYTES
    cache.clear()
    assert cache.bytes_held == 0 and not cache


def test_a_key_too_long_is_returned_but_never_stored() -> None:
    cache: TextCache[str] = TextCache(max_entries=10, max_key_chars=8, max_bytes=10_000)
    assert cache.put("x" * 9, "v") == "v"
    assert not cache and cache.bytes_held == 0
    tiny: TextCache[str] = TextCache(max_entries=10, max_key_chars=8, max_bytes=60)
    tiny.put("\U0001f600" * 8, "v")  # 8 characters, but more bytes than the whole budget
    assert not tiny


@pytest.mark.parametrize("width", ["a", "é", "\u20ac", "\U0001f600"])
def test_a_flood_of_distinct_keys_never_passes_the_budget(width: str) -> None:
    cache: TextCache[int] = TextCache(max_entries=1000, max_key_chars=100, max_bytes=64 * 1024)
    for i in range(20_000):
        cache.put(f"{i}{width * 90}", i, 16)
        assert cache.bytes_held <= cache.max_bytes and len(cache) <= cache.max_entries
        if i % 997 == 0:  # the accounting is the entries' real key sizes
            assert cache.bytes_held == sum(sys.getsizeof(k) + 16 + ENTRY_BYTES for k in cache)
    assert 0 < len(cache) and cache.bytes_held == sum(sys.getsizeof(k) + 16 + ENTRY_BYTES for k in cache)


def test_bounds_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        TextCache(max_entries=0, max_key_chars=1, max_bytes=1)


def test_glob_regexes_are_cached_within_their_byte_budget() -> None:
    cache = glob._REGEX_CACHE
    cache.clear()
    assert glob.glob_match("db:*x", "db:ax")
    assert "db:*x" in cache
    long_pattern = "a*" * 600  # 1200 characters: longer than any cached pattern
    assert glob.glob_match(long_pattern, "a" * 600)
    assert long_pattern not in cache
    emptied = 0
    for i in range(800):  # distinct patterns of the longest cached size: ~17 KB accounted each
        before = len(cache)
        glob.glob_match(f"{i:04}*" + "\U0001f600" * (glob.MAX_CACHED_PATTERN_CHARS - 5), "x")
        emptied += len(cache) <= before
        assert cache.bytes_held <= cache.max_bytes and len(cache) <= cache.max_entries
    assert emptied >= 2  # the budget, not the 4096 entries, emptied it
    re.purge()  # the re module kept its own copies of the last 512
    assert glob.glob_match("db:*x", "db:ax") and not glob.glob_match("db:*x", "db:a")
    cache.clear()
