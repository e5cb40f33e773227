"""Bounded caches: the size stays at the bound and an evicted entry comes back identical."""

from __future__ import annotations

import pytest

from coercion.cache import LRUCache
from coercion.profile.keys import KeyScope
from coercion.profile.uids import UIDRemapper
from tests.helpers import SECRET


def test_lru_cache_drops_the_least_recently_used_entry() -> None:
    """Past the bound the oldest unused entry goes; a read makes an entry recent."""
    cache: LRUCache[str, int] = LRUCache(3)
    for number, key in enumerate("abc"):
        cache.put(key, number)
    assert cache.get("a") == 0  # now the most recently used
    cache.put("d", 3)
    assert len(cache) == 3
    assert [cache.get(key) for key in "abcd"] == [0, None, 2, 3]
    cache.clear()
    assert len(cache) == 0 and cache.get("a") is None


def test_lru_cache_refuses_a_size_below_one() -> None:
    """A cache that could hold nothing is a configuration mistake, named as such."""
    with pytest.raises(ValueError, match="at least one entry"):
        LRUCache(0)


def test_uid_remapper_stays_bounded_and_remaps_identically_after_eviction() -> None:
    """Ten times the bound of UIDs: the cache holds the bound; every UID maps as before."""
    keys = KeyScope(SECRET, "deidentify/default")
    remapper = UIDRemapper(keys.uid, maxsize=16)
    originals = [f"1.2.826.0.1.3680043.99.5.{n}" for n in range(160)]
    first = [remapper.remap(uid) for uid in originals]
    assert len(remapper._cache) == 16
    again = [remapper.remap(uid) for uid in originals]  # all but the last 16 were evicted
    assert again == first == [keys.uid(uid) for uid in originals]
    assert len(set(first)) == len(originals)
    assert len(remapper._cache) == 16
