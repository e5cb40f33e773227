"""The secret key file behind every keyed UID, token and date offset, and its key scopes.

The file holds 32 random bytes as hex text. It is created with mode 0600 when
absent; like ssh with a private key, a key file that its group or others may
read (or write) is refused. The secret is never logged: log lines name the key file by its path
and a short fingerprint (an HMAC of a fixed label, not the secret).

No token, UID, date offset or pseudonym is derived from the secret directly:
each is derived in a :class:`KeyScope`, whose root key is
``HMAC-SHA256(secret, "coercion/scope/" + scope)``. Recipients with different
scopes get values that cannot be linked; the same secret and scope give the
same values on every node and run.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import stat
from pathlib import Path

from coercion.dicom.outputs import create_private, private_folders
from coercion.errors import ConfigError, map_errors
from coercion.profile.uids import uuid_uid

__all__ = [
    "DEFAULT_KEY_PATH",
    "DEFAULT_KEY_SCOPE",
    "KeyScope",
    "deidentify_scope",
    "fingerprint",
    "load_or_create_secret",
]

_SECRET_BYTES = 32


def _default_key_path() -> Path:
    env = os.environ.get("COERCION_KEY")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "coercion" / "secret.key"


#: Where the key lives unless ``--key`` or ``$COERCION_KEY`` says otherwise.
DEFAULT_KEY_PATH = _default_key_path()


def load_or_create_secret(path: Path | None = None, *, create: bool = True) -> bytes:
    """Read the secret from *path*, creating the file (mode 0600) if absent (and *create*)."""
    path = path or DEFAULT_KEY_PATH
    try:
        with open(path, encoding="ascii") as handle:
            _check_private(path, os.fstat(handle.fileno()).st_mode)
            text = handle.read().strip()
    except FileNotFoundError:
        if not create:
            raise ConfigError(
                f"{path}: no key file here; copy the key file to this path on every machine"
            ) from None
        return _create(path)
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read key file ({exc.__class__.__name__})") from exc
    try:
        secret = bytes.fromhex(text)
    except ValueError:
        secret = b""
    if len(secret) < 16:
        raise ConfigError(
            f"{path}: not a coercion key file; expected at least 32 hex digits. "
            "Move it away to have a new key created, or point --key at the right file"
        )
    return secret


def _check_private(path: Path, mode: int) -> None:
    """Refuse a key file its group or others can read or write, as ssh does."""
    if stat.S_ISREG(mode) and mode & 0o077:
        raise ConfigError(
            f"{path}: permissions {stat.S_IMODE(mode):04o} are too open for a key file; "
            f"chmod 600 {path}"
        )


def _create(path: Path) -> bytes:
    secret = secrets.token_bytes(_SECRET_BYTES)
    with map_errors({OSError: ConfigError}, f"{path}: cannot create key file", chain=True):
        private_folders(path.parent)
        fd = create_private(path)
    if fd is None:  # made by another process meanwhile
        return load_or_create_secret(path)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(secret.hex() + "\n")
        handle.flush()
        os.fsync(fd)  # a key lost in a power cut would change every pseudonym made with it
    return secret


def fingerprint(secret: bytes) -> str:
    """A short, non-reversible name for a secret, safe to log."""
    return hmac.new(secret, b"coercion/fingerprint", hashlib.sha256).hexdigest()[:12]


#: The key scope of ``coercion deidentify --option`` without ``--key-scope``.
DEFAULT_KEY_SCOPE = "default"


def deidentify_scope(name: str) -> str:
    """The scope of a ``deidentify:`` rule or key name: ``deidentify/NAME``."""
    return f"deidentify/{name}"


def _subkey(key: bytes, label: str) -> bytes:
    return hmac.new(key, label.encode("utf-8", "surrogatepass"), hashlib.sha256).digest()


class KeyScope:
    """The keys of one scope: a root key from the secret and the scope's name, then one per use.

    ``derive`` gives pseudo-random bytes per kind and values (tokens, UIDs,
    offsets, pseudonyms), ``lookup`` the keyed hashes a store finds originals
    by; :meth:`subkey` names further keys (the store's sealing key).
    """

    def __init__(self, secret: bytes, scope: str) -> None:
        self.scope = scope
        self._root = _subkey(secret, f"coercion/scope/{scope}")
        self._lookup = self.subkey("lookup")
        self._derive = self.subkey("derive")

    def subkey(self, label: str) -> bytes:
        """The scope's key for *label*: HMAC-SHA256(root, label)."""
        return _subkey(self._root, label)

    def lookup(self, kind: str, *values: str) -> str:
        """The keyed hash (hex) under which a value of *kind* is found."""
        message = "\x00".join((kind, *values)).encode("utf-8", "surrogatepass")
        return hmac.new(self._lookup, message, hashlib.sha256).hexdigest()

    def derive(self, kind: str, *values: str) -> bytes:
        """32 pseudo-random bytes: HMAC-SHA256(derive key, kind NUL value NUL ...)."""
        message = "\x00".join((kind, *values)).encode("utf-8", "surrogatepass")
        return hmac.new(self._derive, message, hashlib.sha256).digest()

    def uid(self, original: str) -> str:
        """The scope's new UID for *original*: ``2.25.`` and a UUIDv8 integer (<= 44 characters).

        Padding (leading or trailing NULs and spaces) is ignored; the same secret, scope and
        original always give the same UID.
        """
        return uuid_uid(self.derive("uid", original.strip("\x00 ")))
