"""The secret key file behind every keyed UID, token and date offset.

The file holds 32 random bytes as hex text. It is created with mode 0600 when
absent. The secret is never logged: log lines name the key file by its path
and a short fingerprint (an HMAC of a fixed label, not the secret).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from coercion.errors import ConfigError

__all__ = ["DEFAULT_KEY_PATH", "fingerprint", "load_or_create_secret"]

_SECRET_BYTES = 32


def _default_key_path() -> Path:
    env = os.environ.get("COERCION_KEY")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "coercion" / "secret.key"


#: Where the key lives unless ``--key`` or ``$COERCION_KEY`` says otherwise.
DEFAULT_KEY_PATH = _default_key_path()


def load_or_create_secret(path: Path | None = None) -> bytes:
    """Read the secret from *path*, creating the file (mode 0600) if absent."""
    path = path or DEFAULT_KEY_PATH
    try:
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
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


def _create(path: Path) -> bytes:
    secret = secrets.token_bytes(_SECRET_BYTES)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return load_or_create_secret(path)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot create key file ({exc.strerror})") from exc
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(secret.hex() + "\n")
    return secret


def fingerprint(secret: bytes) -> str:
    """A short, non-reversible name for a secret, safe to log."""
    return hmac.new(secret, b"coercion/fingerprint", hashlib.sha256).hexdigest()[:12]
