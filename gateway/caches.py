"""A cache bounded in bytes: the gateway's statement caches keep what is reused, not what a client sends.

A client that sends ever new URLs (keyset pages, generated filters) must not grow the process: entries are
dropped least recently used first once the bytes all told pass the budget, and an entry larger than
`max_entry` (a one-off URL-sized statement) is never kept at all.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class BoundedCache(Generic[K, V]):
    """Least recently used entries, at most `max_bytes` of them all told and `max_entry` bytes each (the
    size is the caller's account of what an entry holds)."""

    def __init__(self, max_bytes: int, max_entry: int) -> None:
        self.max_bytes = max_bytes
        self.max_entry = min(max_entry, max_bytes)
        self.size = 0
        self.evictions = 0  # entries dropped for room, all told
        self._items: OrderedDict[K, tuple[V, int]] = OrderedDict()

    def get(self, key: K) -> V | None:
        found = self._items.get(key)
        if found is None:
            return None
        self._items.move_to_end(key)
        return found[0]

    def put(self, key: K, value: V, size: int) -> bool:
        """Keeps `value` unless it is larger than one entry may be; whether it was kept."""
        if size > self.max_entry:
            return False
        old = self._items.pop(key, None)
        if old is not None:
            self.size -= old[1]
        self._items[key] = (value, size)
        self.size += size
        while self.size > self.max_bytes:
            _key, (_value, dropped) = self._items.popitem(last=False)
            self.size -= dropped
            self.evictions += 1
        return True

    def values(self) -> Iterator[V]:
        return (value for value, _size in self._items.values())

    def clear(self) -> None:
        self._items.clear()
        self.size = 0

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items
