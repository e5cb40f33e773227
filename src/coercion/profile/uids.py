"""UIDs: the PS3.5 9.1 syntax check, and keyed, repeatable remapping.

A new UID is ``2.25.`` followed by the integer of a version-8 UUID whose 122
free bits come from an HMAC-SHA256 of the original UID under a scope's key
(:meth:`coercion.profile.keys.KeyScope.uid`). The same original always gives the same
new UID under the same secret and scope, and nobody without the secret can
recompute or reverse the mapping.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from coercion.cache import DEFAULT_ENTRIES, LRUCache

__all__ = ["UIDRemapper", "is_valid_uid", "uuid_uid"]

#: PS3.5 9.1: components of digits separated by dots; no component empty or with a leading zero.
_UID = re.compile(r"(?:0|[1-9][0-9]*)(?:\.(?:0|[1-9][0-9]*))*")

_UUID_VERSION_8 = 0x8 << 76
_UUID_VARIANT_RFC = 0x2 << 62
_VERSION_MASK = ~(0xF << 76)
_VARIANT_MASK = ~(0x3 << 62)


def uuid_uid(digest: bytes) -> str:
    """``2.25.`` and the integer of the UUIDv8 (RFC 9562) made of *digest*'s first 16 bytes."""
    value = int.from_bytes(digest[:16], "big")
    value = (value & _VERSION_MASK & _VARIANT_MASK) | _UUID_VERSION_8 | _UUID_VARIANT_RFC
    return f"2.25.{value}"


def is_valid_uid(value: str) -> bool:
    """Whether *value* is a UID as PS3.5 9.1 defines it (digits and dots, at most 64 characters).

    Received UIDs become file names: a value that passes cannot hold ``/``, ``..`` or
    anything else a path could use. (pydicom's ``UID.is_valid`` matches with ``$``, which lets a
    trailing newline through, so it is not used here.)
    """
    return len(value) <= 64 and _UID.fullmatch(value) is not None


class UIDRemapper:
    """Map original UIDs to new ``2.25.`` UIDs with *derive* (a scope's ``uid``), cached.

    A UID repeated across a study costs one HMAC. The cache keeps the
    *maxsize* most recently used UIDs: an evicted one is derived again, to the same value.
    """

    def __init__(self, derive: Callable[[str], str], maxsize: int = DEFAULT_ENTRIES) -> None:
        self._derive = derive
        self._cache: LRUCache[str, str] = LRUCache(maxsize)

    def remap(self, uid: str) -> str:
        """Return the new UID for *uid* (trailing NUL and spaces ignored)."""
        original = uid.strip("\x00 ")
        cached = self._cache.get(original)
        if cached is not None:
            return cached
        new = self._derive(original)
        self._cache.put(original, new)
        return new
