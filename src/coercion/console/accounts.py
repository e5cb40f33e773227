"""Who may use the console: a password file or the live directory, and two roles.

The password file has one line per person, ``NAME:ROLE:scrypt$N$r$p$SALT$HASH``
(salt and hash base64), written by ``coercion console passwd``; it is read
again at each sign-in, so an added person can sign in without a restart.
With ``--ldap`` a person signs in with their DN and password (a simple bind);
their role comes from the groupOfNames that lists them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from coercion.dicom.outputs import atomic_output, write_all
from coercion.errors import ConfigError

if TYPE_CHECKING:
    from coercion.directory.sources import LdapSettings

__all__ = [
    "Authenticator",
    "DirectoryAccounts",
    "PasswordFile",
    "Role",
    "hash_password",
    "set_password",
    "verify_password",
]

#: scrypt's cost (2**15), block size and parallelism: about 32 MiB and 50 ms per check.
_N, _R, _P = 1 << 15, 8, 1
_MAXMEM = 64 * 1024 * 1024


class Role(StrEnum):
    """A viewer reads every page; an admin also changes rules and queues."""

    VIEWER = "viewer"
    ADMIN = "admin"


class Authenticator(Protocol):
    """Checks a name and password; returns the person's role or None."""

    def authenticate(self, name: str, password: str) -> Role | None:
        """The role of *name* when *password* is right, else None."""


def hash_password(password: str) -> str:
    """``scrypt$N$r$p$SALT$HASH`` for *password*, with a fresh salt."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, maxmem=_MAXMEM)
    b64 = base64.b64encode
    return f"scrypt${_N}${_R}${_P}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str, stored: str) -> bool:
    """True when *password* hashes to *stored* (compared in constant time)."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        found = hashlib.scrypt(
            password.encode(),
            salt=base64.b64decode(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            maxmem=_MAXMEM,
            dklen=len(expected),
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(found, expected)


@dataclass(frozen=True)
class _Line:
    name: str
    role: Role
    stored: str


def _read(path: Path) -> list[_Line]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise ConfigError(
            f"{path}: cannot read the console's password file ({exc.strerror})"
        ) from None
    lines = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        name, _, rest = line.partition(":")
        role, _, stored = rest.partition(":")
        if role not in {r.value for r in Role} or not stored:
            raise ConfigError(
                f"{path}: line {number}: not NAME:ROLE:HASH (ROLE viewer or admin); "
                "write it with coercion console passwd"
            )
        lines.append(_Line(name, Role(role), stored))
    return lines


def set_password(path: Path, name: str, role: Role, password: str) -> None:
    """Add *name* to the password file (or replace their line); the file is kept 0600."""
    if not name or ":" in name or name != name.strip():
        raise ConfigError(f"{name!r}: a name must not be empty, hold ':' or spaces at its ends")
    if len(password) < 8:
        raise ConfigError("the password must have at least 8 characters")
    kept = [line for line in _read(path) if line.name != name]
    kept.append(_Line(name, role, hash_password(password)))
    text = "".join(f"{line.name}:{line.role.value}:{line.stored}\n" for line in kept)
    with atomic_output(path) as fd:  # 0600
        write_all(fd, text.encode())


class PasswordFile:
    """Accounts of a password file (for the embedded directory)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def authenticate(self, name: str, password: str) -> Role | None:
        """The role of *name* when *password* matches its line."""
        for line in _read(self.path):
            if hmac.compare_digest(line.name.encode(), name.encode()):
                return line.role if verify_password(password, line.stored) else None
        # The same work for an unknown name: its absence does not show in the time taken.
        verify_password(password, hash_password("x" * 8))
        return None


class DirectoryAccounts:
    """Accounts of the live directory: a bind with the person's DN; roles from two groups."""

    def __init__(self, settings: LdapSettings, admin_group: str, viewer_group: str) -> None:
        self.settings = settings
        self.admin_group = admin_group
        self.viewer_group = viewer_group

    def authenticate(self, name: str, password: str) -> Role | None:
        """Bind as DN *name*; admin when the admin group lists it, else viewer or None."""
        from coercion.directory.signin import bind_and_groups

        groups = [g for g in (self.admin_group, self.viewer_group) if g]
        member_of = bind_and_groups(self.settings, name, password, groups)
        if member_of is None:
            return None
        if self.admin_group and self.admin_group in member_of:
            return Role.ADMIN
        if self.viewer_group and self.viewer_group in member_of:
            return Role.VIEWER
        return None
