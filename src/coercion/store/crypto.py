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

import json
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from coercion.errors import StoreError
from coercion.profile.keys import KeyScope

__all__ = ["ScopeKeys"]

_NONCE = 12


class ScopeKeys(KeyScope):
    """The keys of one scope (:class:`~coercion.profile.keys.KeyScope`) and its sealing key."""

    def __init__(self, secret: bytes, scope: str) -> None:
        super().__init__(secret, scope)
        self._aead = AESGCM(self.subkey("seal"))

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
