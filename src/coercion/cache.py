"""A bounded least-recently-used map: the memory of a long-running node stays flat.

The caches of keyed derivations (new UIDs, pseudonyms, counter numbers) would
otherwise grow with every patient and object a node ever sees. Every value
kept in one can be had again (derived from the key, or read back from the
store), so evicting an entry only costs recomputing it; results never change.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Generic, TypeVar

__all__ = ["DEFAULT_ENTRIES", "LRUCache"]

#: Entries a cache keeps unless told otherwise (a full cache of new UIDs holds about 17 MB).
DEFAULT_ENTRIES = 65_536

_K = TypeVar("_K")
_V = TypeVar("_V")


class LRUCache(Generic[_K, _V]):
    """At most *maxsize* entries; adding one more drops the least recently used.

    Safe to share between threads (one lock per cache, held only for the dict operations).
    """

    def __init__(self, maxsize: int = DEFAULT_ENTRIES) -> None:
        if maxsize < 1:
            raise ValueError(f"an LRU cache needs room for at least one entry (got {maxsize})")
        self.maxsize = maxsize
        self._entries: OrderedDict[_K, _V] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: _K) -> _V | None:
        """The value of *key* (now the most recently used), or None when it is not kept."""
        with self._lock:
            value = self._entries.get(key)
            if value is not None:
                self._entries.move_to_end(key)
            return value

    def put(self, key: _K, value: _V) -> None:
        """Keep *value* for *key*, dropping the least recently used entry when full."""
        with self._lock:
            self._entries[key] = value
            self._entries.move_to_end(key)
            if len(self._entries) > self.maxsize:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        """Drop every entry."""
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
