"""Caches keyed by text that someone else chose (the wire, a state topic), bounded in entries *and* bytes.

A cache bounded only in entries is bounded in memory only if its keys are small, and keys such as an action,
a resource type, an address or an approval's glob pattern arrive from outside: 65536 entries of 1 MB keys are
64 GB. So every such cache refuses keys longer than ``max_key_chars`` (the caller computes the value and does
not cache it) and counts what each entry costs — its key's bytes, an estimate of its value's, and the dict
slot — against a byte budget ``max_bytes``.

Why a dict subclass: a hit must stay a plain ``dict.get`` (C speed, no accounting) on the decision hot path;
only a miss's :meth:`TextCache.put` does the accounting. Why it empties itself when full instead of evicting
one entry: the caches it bounds did so already, a miss costs the same either way, and a flood of distinct
keys misses anyway — what matters is that the memory held stays bounded.
"""

from __future__ import annotations

import sys
from typing import TypeVar

V = TypeVar("V")

#: A dict slot (hash, key and value pointers, index entry) at a typical load factor, measured on CPython 3.11.
ENTRY_BYTES = 48


def key_bytes(key: str) -> int:
    """What a str key costs: its object's size (``sys.getsizeof``, header included; CPython stores 1, 2 or 4
    bytes per character, so a key of ``n`` characters takes at most ~76 + 4n bytes)."""
    return sys.getsizeof(key)


class TextCache(dict[str, V]):
    """A dict of str keys that :meth:`put` keeps within ``max_entries`` entries and ``max_bytes`` bytes, never
    storing a key longer than ``max_key_chars``.

    Read it as a dict (``get``, ``in``, ``[]``); write it only with :meth:`put` (a plain ``[]=`` would skip the
    accounting). ``bytes_held`` is the accounted size of what it holds: keys (``sys.getsizeof``), the values'
    estimates given to :meth:`put`, and :data:`ENTRY_BYTES` per entry.
    """

    __slots__ = ("bytes_held", "max_bytes", "max_entries", "max_key_chars")

    def __init__(self, *, max_entries: int, max_key_chars: int, max_bytes: int) -> None:
        super().__init__()
        if min(max_entries, max_key_chars, max_bytes) < 1:
            raise ValueError("TextCache bounds must be positive")
        self.max_entries = max_entries
        self.max_key_chars = max_key_chars
        self.max_bytes = max_bytes
        self.bytes_held = 0

    def put(self, key: str, value: V, value_bytes: int = 0) -> V:
        """Store ``value`` under ``key`` unless the key is too long to cache; return ``value``.

        ``value_bytes`` estimates what the value holds (0 for a shared or tiny value). When the entry would
        take the cache past ``max_entries`` or ``max_bytes``, the cache is emptied first, so both bounds
        always hold. A key already present is left as it is (a value is a pure function of its key)."""
        if len(key) > self.max_key_chars or key in self:
            return value
        cost = key_bytes(key) + value_bytes + ENTRY_BYTES
        if cost > self.max_bytes:
            return value
        if len(self) >= self.max_entries or self.bytes_held + cost > self.max_bytes:
            self.clear()
        dict.__setitem__(self, key, value)
        self.bytes_held += cost
        return value

    def clear(self) -> None:
        super().clear()
        self.bytes_held = 0
