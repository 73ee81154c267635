"""A flood of huge, distinct keys from the wire never grows a cache past its byte budget.

The caches are keyed by request fields (the engine's candidate cache by action and resource type, the CIDR
checks' address cache by source_ip), so whoever writes to pdx.requests chooses their keys. What is measured is
each cache's own accounting, checked against the real sizes of the keys it holds.
"""

from __future__ import annotations

import sys

import pytest

from streams import config
from streams.model.cache import ENTRY_BYTES
from streams.policy import CompiledBundle, compile_bundle, load_policy_dir, runtime
from streams.policy.compiler import EMPTY_TIERS, _candidates_bytes


@pytest.fixture(scope="module")
def content() -> str:
    return load_policy_dir(config.POLICIES_DIR).to_bundle_content()


def _accounted(b: CompiledBundle) -> int:
    """The candidate cache's bytes recomputed from what it holds now."""
    total = 0
    for action, by_type in b._cache.items():
        total += sys.getsizeof(action) + ENTRY_BYTES + sys.getsizeof({"": None})
        for rtype, cands in by_type.items():
            total += sys.getsizeof(rtype) + ENTRY_BYTES + _candidates_bytes(cands)
    return total


@pytest.mark.parametrize("width", ["a", "\U0001f600"])
def test_the_candidate_cache_stays_within_its_byte_budget(content: str, width: str) -> None:
    b = compile_bundle(content)
    b.CACHE_MAX_BYTES = 256 * 1024  # the default is 16 MiB: the same code, reached with fewer keys
    longest = b.CACHE_KEY_CHARS
    emptied = 0
    for i in range(3000):
        before = b._cached
        # half of them hit glob rules (db:* on database), so they hold real Candidates, not EMPTY_TIERS
        action = f"db:{i}" + width * (longest - 8) if i % 2 else f"{i}" + width * (longest - 8)
        b.candidates(action, "database" if i % 4 < 2 else f"t{i}" + width * (longest - 8))
        emptied += b._cached <= before
        assert b._cache_bytes <= b.CACHE_MAX_BYTES and b._cached <= b.CACHE_MAX
        if i % 499 == 0:
            assert b._cache_bytes == _accounted(b)
    assert emptied >= 2 and b._cache_bytes == _accounted(b)
    assert any(c is not EMPTY_TIERS for by_type in b._cache.values() for c in by_type.values())


def test_keys_longer_than_the_cache_takes_are_decided_but_never_cached(content: str) -> None:
    b = compile_bundle(content)
    huge = "db:" + "x" * 1_000_000
    first = b.candidates(huge, "database")
    assert first.rules() and b.candidates(huge, "database").rules() == first.rules()  # db:* rules apply
    assert {r.mode for r in b.candidates("nothing:matches", "t" * 1_000_000).rules()} == {"monitor"}
    assert huge not in b._cache and not b._cache and b._cache_bytes == 0 and b._cached == 0


def test_the_default_budget_bounds_a_flood_of_the_widest_keys(content: str) -> None:
    """With the real bounds: 16 MiB accounted, however many distinct 256-character keys arrive."""
    b = compile_bundle(content)
    key = "\U0001f600" * (b.CACHE_KEY_CHARS - 6)
    for i in range(8000):
        b.candidates(f"{i:06}{key}", f"{i:06}{key}")
        assert b._cache_bytes <= b.CACHE_MAX_BYTES
    assert b._cached < 8000  # emptied by bytes long before its 65536 entries
    assert b._cache_bytes == _accounted(b)


def test_the_address_cache_stays_within_its_byte_budget() -> None:
    cache = runtime._IP_CACHE
    cache.clear()
    inside, _outside = runtime.cidr_checkers("10.0.0.0/8")
    key = "\U0001f600" * (runtime.MAX_IP_CHARS - 6)  # the longest, widest text that is cached (malformed)
    emptied = 0
    for i in range(80_000):
        before = len(cache)
        assert not inside(f"{i:06}{key}")
        emptied += len(cache) <= before
        assert cache.bytes_held <= cache.max_bytes and len(cache) <= cache.max_entries
    assert emptied >= 2  # ~35k of these fill 16 MiB, well before 65536 entries
    assert cache.bytes_held == sum(sys.getsizeof(k) + runtime._IP_VALUE_BYTES + ENTRY_BYTES for k in cache)
    assert inside("10.1.2.3") and "10.1.2.3" in cache
    assert not inside("1" * 65) and "1" * 65 not in cache
    cache.clear()
