"""Keys of a pseudonymisation scope, derived from the node's secret.

Everything a scope needs is derived with HMAC-SHA256 from the key file's
secret and the scope's name, so two nodes with the same key file derive the
same pseudonyms, UIDs and date offsets without asking each other:

* ``lookup``: keyed hashes under which original values are found;
* ``seal``: AES-256-GCM for original values kept for re-identification
  (authenticated: a changed or moved record does not decrypt);
* ``derive``: pseudonyms, new UIDs and date offsets;
* ``uid``: the scope's new UID for an original UID (no store needed).

A copy of the database alone holds hashes and ciphertext, never PHI.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from coercion.errors import StoreError

__all__ = ["ScopeKeys"]

_NONCE = 12

# A new UID is ``2.25.`` and a UUID (RFC 9562) of version 8 read as an integer.
_UUID_VERSION_8 = 0x8 << 76
_UUID_VARIANT_RFC = 0x2 << 62
_VERSION_MASK = ~(0xF << 76)
_VARIANT_MASK = ~(0x3 << 62)


def _subkey(key: bytes, label: str) -> bytes:
    return hmac.new(key, label.encode(), hashlib.sha256).digest()


class ScopeKeys:
    """The keys of one scope."""

    def __init__(self, secret: bytes, scope: str) -> None:
        root = _subkey(secret, f"coercion/scope/{scope}")
        self.scope = scope
        self._lookup = _subkey(root, "lookup")
        self._derive = _subkey(root, "derive")
        self._aead = AESGCM(_subkey(root, "seal"))

    def lookup(self, kind: str, *values: str) -> str:
        """The keyed hash (hex) under which a value of *kind* is found."""
        message = "\x00".join((kind, *values)).encode("utf-8", "surrogatepass")
        return hmac.new(self._lookup, message, hashlib.sha256).hexdigest()

    def derive(self, kind: str, *values: str) -> bytes:
        """32 pseudo-random bytes for *kind* and *values* (pseudonyms, UIDs, offsets)."""
        message = "\x00".join((kind, *values)).encode("utf-8", "surrogatepass")
        return hmac.new(self._derive, message, hashlib.sha256).digest()

    def uid(self, original: str) -> str:
        """The scope's new UID for *original*: ``2.25.`` and a UUIDv8 integer (<= 44 characters).

        Padding (leading or trailing NULs and spaces) is ignored; the same secret, scope and
        original always give the same UID.
        """
        value = int.from_bytes(self.derive("uid", original.strip("\x00 "))[:16], "big")
        value = (value & _VERSION_MASK & _VARIANT_MASK) | _UUID_VERSION_8 | _UUID_VARIANT_RFC
        return f"2.25.{value}"

    def seal(self, values: dict[str, str], context: str) -> bytes:
        """Encrypt *values* (JSON) bound to *context* (e.g. the row's key)."""
        nonce = os.urandom(_NONCE)
        plain = json.dumps(values, sort_keys=True).encode()
        return nonce + self._aead.encrypt(nonce, plain, context.encode())

    def open(self, sealed: bytes, context: str) -> dict[str, str]:
        """Decrypt what :meth:`seal` made; StoreError when it was changed or is not ours."""
        try:
            plain = self._aead.decrypt(sealed[:_NONCE], sealed[_NONCE:], context.encode())
        except (InvalidTag, ValueError):
            raise StoreError(
                f"scope {self.scope}: a stored record does not decrypt (other key, or altered)"
            ) from None
        data = json.loads(plain)
        return {str(k): str(v) for k, v in data.items()}
