"""Where the configuration comes from: the embedded directory or a live LDAP server.

Both sources are read through ldap3 with the same searches (every entry
under a base DN); everything else (selection, matching) happens in Python,
so the embedded directory and OpenLDAP give the same answers.

* :class:`EmbeddedDirectory`: the LDIF files of a folder (``ldif/`` by
  default) loaded into ldap3's in-memory ``MOCK_SYNC`` server. A change is a
  change of the files (name, size, modification time).
* :class:`LdapDirectory`: a live server (``ldap://`` or ``ldaps://``, StartTLS
  optional). A change is a new ``contextCSN`` on the suffix (syncprov
  overlay), or where that is absent a new newest ``modifyTimestamp`` or entry
  count.
* :class:`SnapshotDirectory`: entries kept on disk from the last good load,
  used when the server cannot be reached at start.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import ssl
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import ldap3
from ldap3.core import exceptions as ldap3_errors
from ldap3.core.exceptions import LDAPException

from coercion.directory.ldifio import Entry, read_ldif_folder
from coercion.errors import ConfigError, DirectoryUnavailableError

__all__ = [
    "DirectorySource",
    "EmbeddedDirectory",
    "LdapDirectory",
    "LdapSettings",
    "SnapshotDirectory",
    "ldap_server",
]

log = logging.getLogger(__name__)
_T = TypeVar("_T")


class DirectorySource(ABC):
    """A source of directory entries."""

    #: Where the entries come from, for messages (a folder or an LDAP URL).
    origin: str

    @abstractmethod
    def entries(self) -> list[Entry]:
        """Every entry under the source's base, as (DN, attributes)."""

    @abstractmethod
    def fingerprint(self) -> str:
        """A cheap marker that changes whenever the entries change."""

    def close(self) -> None:  # noqa: B027 - optional for sources without a connection
        """Release connections."""


def _entries_from(connection: ldap3.Connection, base: str) -> list[Entry]:
    connection.search(
        base,
        "(objectClass=*)",
        search_scope=ldap3.SUBTREE,
        attributes=[ldap3.ALL_ATTRIBUTES],
        dereference_aliases=ldap3.DEREF_NEVER,
    )
    entries: list[Entry] = []
    for response in connection.response or []:
        if response.get("type") != "searchResEntry":
            continue
        attrs = {
            name: [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values]
            for name, values in response["raw_attributes"].items()
        }
        entries.append((response["dn"], attrs))
    return entries


class EmbeddedDirectory(DirectorySource):
    """The LDIF files of *folder* in ldap3's in-memory directory."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.origin = str(folder)
        self._loaded: str | None = None
        self._connection: ldap3.Connection | None = None
        self._suffixes: list[str] = []
        self.schema: list[Entry] = []

    def _file_state(self) -> str:
        digest = hashlib.sha256()
        try:
            for path in sorted(self.folder.glob("*.ldif")):
                stat = path.stat()
                digest.update(f"{path.name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        except OSError as exc:
            raise ConfigError(f"{self.folder}: cannot read ({exc.strerror})") from None
        return digest.hexdigest()

    def fingerprint(self) -> str:
        return self._file_state()

    def _load(self) -> ldap3.Connection:
        state = self._file_state()
        if self._connection is not None and state == self._loaded:
            return self._connection
        schema, data = read_ldif_folder(self.folder)
        server = ldap3.Server("embedded", get_info=ldap3.NONE)
        connection = ldap3.Connection(server, client_strategy=ldap3.MOCK_SYNC)
        known: set[str] = set()
        for dn, attrs in data:
            if dn.lower() in known:
                raise ConfigError(f"{self.folder}: entry {dn} appears twice")
            known.add(dn.lower())
            connection.strategy.add_entry(dn, attrs)
        names = {dn.lower() for dn, _ in data}
        # The suffixes: entries whose parent is not in the folder.
        self._suffixes = [dn for dn, _ in data if dn.partition(",")[2].lower() not in names]
        connection.bind()
        self.schema = schema
        self._connection, self._loaded = connection, state
        return connection

    def entries(self) -> list[Entry]:
        connection = self._load()
        found: list[Entry] = []
        for suffix in self._suffixes:
            found.extend(_entries_from(connection, suffix))
        return found


@dataclass(frozen=True)
class LdapSettings:
    """How to reach a live directory.

    The password comes from ``password_file`` or, when that is not given,
    from the environment variable ``COERCION_LDAP_PASSWORD``; it is never
    logged. ``base_dn`` defaults to the server's first naming context.
    """

    url: str
    bind_dn: str | None = None
    password_file: Path | None = None
    start_tls: bool = False
    base_dn: str | None = None
    ca_file: Path | None = None
    timeout: int = 5

    def password(self) -> str | None:
        """The bind password, or None for an anonymous bind."""
        if self.password_file is not None:
            try:
                return self.password_file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ConfigError(
                    f"{self.password_file}: cannot read the LDAP password ({exc.strerror})"
                ) from None
        return os.environ.get("COERCION_LDAP_PASSWORD")


class _Tls(ldap3.Tls):  # type: ignore[misc]  # ldap3 has no type hints
    """ldap3's Tls, but the ssl module checks the server's name (a DNS name or an IP address).

    ldap3 2.9.1 checks it itself after the handshake with ``ssl.match_hostname``:
    deprecated in Python 3.11 (a DeprecationWarning), removed in 3.12, where ldap3's
    fallback matches no IP address (a valid certificate for ``ldaps://127.0.0.1``
    is refused); and on a mismatch it leaves the TLS socket open.
    """

    def wrap_socket(self, connection: ldap3.Connection, do_handshake: bool = False) -> None:
        context = ssl.create_default_context(cafile=self.ca_certs_file)  # CERT_REQUIRED, names
        connection.socket = context.wrap_socket(
            connection.socket,
            server_hostname=connection.server.host,
            do_handshake_on_connect=do_handshake,
        )


#: Binds the server answered and refused: a setting to fix, not a server to wait for.
_REFUSED_BINDS = (
    ldap3_errors.LDAPInvalidCredentialsResult,
    ldap3_errors.LDAPInappropriateAuthenticationResult,
    ldap3_errors.LDAPStrongerAuthRequiredResult,
    ldap3_errors.LDAPConfidentialityRequiredResult,
    ldap3_errors.LDAPAuthMethodNotSupportedResult,
)


def _bind_refused(settings: LdapSettings, exc: LDAPException) -> str:
    """The message of a bind the server refused (never the password)."""
    who = f"bind DN {settings.bind_dn}" if settings.bind_dn else "an anonymous bind"
    if isinstance(exc, ldap3_errors.LDAPInvalidCredentialsResult):
        where = settings.password_file or "the environment variable COERCION_LDAP_PASSWORD"
        return (
            f"{settings.url}: invalid credentials for {who}; check --bind-dn and the "
            f"password in {where}"
        )
    return (
        f"{settings.url}: the server refused {who} ({exc.__class__.__name__}); "
        "give --bind-dn and a password, or use StartTLS/ldaps:// if the server requires it"
    )


def ldap_server(settings: LdapSettings, info: str = ldap3.NONE) -> ldap3.Server:
    """The ldap3 server of *settings*: TLS (the name checked) for ldaps:// and StartTLS."""
    if settings.ca_file is not None and not settings.ca_file.is_file():
        raise ConfigError(f"{settings.ca_file}: CA certificate file not found")
    tls = None
    if settings.url.startswith("ldaps://") or settings.start_tls:
        tls = _Tls(
            validate=ssl.CERT_REQUIRED,
            ca_certs_file=str(settings.ca_file) if settings.ca_file else None,
        )
    return ldap3.Server(settings.url, get_info=info, connect_timeout=settings.timeout, tls=tls)


class LdapDirectory(DirectorySource):
    """A live LDAP server, read through ldap3."""

    def __init__(self, settings: LdapSettings) -> None:
        self.settings = settings
        self.origin = settings.url
        self._connection: ldap3.Connection | None = None
        self._base: str | None = settings.base_dn

    def _connect(self) -> ldap3.Connection:
        if self._connection is not None and self._connection.bound:
            return self._connection
        settings = self.settings
        server = ldap_server(settings, ldap3.DSA)
        connection = ldap3.Connection(
            server,
            user=settings.bind_dn,
            password=settings.password(),
            receive_timeout=settings.timeout,
            raise_exceptions=True,
        )
        try:
            connection.open()
            if settings.start_tls:
                connection.start_tls()
            connection.bind()
        except LDAPException as exc:
            # ldap3 leaves the socket of a failed connection open: close it here.
            with contextlib.suppress(LDAPException, OSError):
                connection.unbind()
            if connection.socket is not None:
                connection.socket.close()
            if isinstance(exc, _REFUSED_BINDS):
                raise ConfigError(_bind_refused(settings, exc)) from None
            raise DirectoryUnavailableError(
                f"{settings.url}: cannot connect and bind ({exc.__class__.__name__}: {exc})"
            ) from None
        if self._base is None:
            contexts = list(server.info.naming_contexts or []) if server.info else []
            if not contexts:
                raise ConfigError(
                    f"{settings.url}: the server names no naming context; give the base DN"
                )
            self._base = str(contexts[0])
        self._connection = connection
        return connection

    @property
    def base(self) -> str:
        """The base DN searched (known after the first connection)."""
        self._connect()
        assert self._base is not None
        return self._base

    def _run(self, what: str, operation: Callable[[ldap3.Connection], _T]) -> _T:
        connection = self._connect()
        try:
            return operation(connection)
        except LDAPException as exc:
            self.close()
            raise DirectoryUnavailableError(
                f"{self.settings.url}: {what} failed ({exc.__class__.__name__}: {exc})"
            ) from None

    def entries(self) -> list[Entry]:
        base = self.base
        return self._run("reading the configuration", lambda c: _entries_from(c, base))

    def fingerprint(self) -> str:
        base = self.base

        def read(connection: ldap3.Connection) -> str:
            connection.search(
                base, "(objectClass=*)", search_scope=ldap3.BASE, attributes=["contextCSN"]
            )
            found = connection.response or []
            csn = found[0]["raw_attributes"].get("contextCSN") if found else None
            if csn:
                return "csn:" + ",".join(sorted(v.decode() for v in csn))
            # No syncprov: the newest modifyTimestamp and the number of entries.
            connection.search(
                base,
                "(objectClass=*)",
                search_scope=ldap3.SUBTREE,
                attributes=["modifyTimestamp"],
                dereference_aliases=ldap3.DEREF_NEVER,
            )
            stamps = [
                max(r["raw_attributes"].get("modifyTimestamp") or [b""]).decode()
                for r in connection.response or []
                if r.get("type") == "searchResEntry"
            ]
            return f"ts:{max(stamps, default='')}:{len(stamps)}"

        return self._run("checking for changes", read)

    def close(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(LDAPException, OSError):
                self._connection.unbind()
            # After a broken connection unbind may fail: close the socket anyway.
            with contextlib.suppress(LDAPException, OSError):
                self._connection.strategy.close()
            self._connection = None


class SnapshotDirectory(DirectorySource):
    """Entries kept on disk from the last good load (JSON)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.origin = f"snapshot {path}"

    def entries(self) -> list[Entry]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            return [(str(item["dn"]), dict(item["attributes"])) for item in data["entries"]]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"{self.path}: not a usable snapshot ({exc})") from None

    def fingerprint(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()
