"""Where the configuration comes from: the embedded directory or a live LDAP server.

Every source gives the entries a node reads (``selection``: its device's subtree,
the path up to the base, the devices it references), sorted as a tree, and a
fingerprint of them. Both sources run the same searches, filtered in Python, so
the embedded directory and OpenLDAP give the same answers.

A fingerprint is the digest of those entries: a change elsewhere in the directory
(another product's entries) does not change it. It is worked out again only when a
cheap marker of the whole source changed:

* :class:`EmbeddedDirectory`: the LDIF files of a folder (``ldif/`` by default),
  held in memory. The marker: the files' names, sizes and modification times.
* :class:`LdapDirectory`: a live server (``ldap://`` or ``ldaps://``, StartTLS
  optional). The marker: ``contextCSN`` on the base (syncprov overlay); without
  it, the node's entries are read at every check.
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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import ldap3
from ldap3.core import exceptions as ldap3_errors
from ldap3.core.exceptions import LDAPException
from ldap3.utils.conv import escape_filter_chars

from coercion.directory import DEFAULT_DEVICE
from coercion.directory.ldifio import Entry, read_ldif_folder
from coercion.directory.selection import (
    DEVICE_CLASSES,
    Match,
    MemoryTree,
    Scope,
    matches,
    read_node_entries,
)
from coercion.errors import ConfigError, DirectoryUnavailableError, map_errors

__all__ = [
    "DirectorySource",
    "EmbeddedDirectory",
    "LdapDirectory",
    "LdapSettings",
    "SnapshotDirectory",
    "entries_digest",
    "ldap_server",
]

log = logging.getLogger(__name__)
_T = TypeVar("_T")


def entries_digest(entries: Sequence[Entry]) -> str:
    """A digest of *entries* (DNs, attribute names folded to lower case, values in order)."""
    canonical = [
        [dn, sorted((name.lower(), values) for name, values in attrs.items())]
        for dn, attrs in entries
    ]
    return hashlib.sha256(json.dumps(canonical).encode()).hexdigest()


@dataclass(frozen=True)
class _Read:
    marker: str | None
    digest: str
    entries: list[Entry]


class DirectorySource(ABC):
    """A source of directory entries."""

    #: Where the entries come from, for messages (a folder or an LDAP URL).
    origin: str

    def __init__(self) -> None:
        self._reads: dict[str, _Read] = {}

    def entries(self, device: str = DEFAULT_DEVICE) -> list[Entry]:
        """The entries node *device* reads, as (DN, attributes), parents first."""
        return list(self._current(device).entries)

    def fingerprint(self, device: str = DEFAULT_DEVICE) -> str:
        """A marker that changes when (and only when) the entries node *device* reads change."""
        return self._current(device).digest

    def devices(self) -> list[Entry]:
        """Every device's skeleton (device, network AEs, connections); none for a snapshot."""
        return []

    @abstractmethod
    def _marker(self) -> str | None:
        """A cheap marker of the whole source: the same means nothing changed (None: unknown)."""

    @abstractmethod
    def _read(self, device: str) -> list[Entry]:
        """Read the entries node *device* reads."""

    def _current(self, device: str) -> _Read:
        marker = self._marker()
        known = self._reads.get(device)
        if known is not None and marker is not None and known.marker == marker:
            return known
        entries = self._read(device)
        read = _Read(marker, entries_digest(entries), entries)
        self._reads[device] = read
        return read

    def close(self) -> None:  # noqa: B027 - optional for sources without a connection
        """Release connections."""


class EmbeddedDirectory(DirectorySource):
    """The LDIF files of *folder*, held in memory."""

    def __init__(self, folder: Path) -> None:
        super().__init__()
        self.folder = folder
        self.origin = str(folder)
        self._loaded: str | None = None
        self._tree: MemoryTree | None = None
        self.schema: list[Entry] = []

    def _marker(self) -> str:
        digest = hashlib.sha256()
        with map_errors({OSError: ConfigError}, f"{self.folder}: cannot read"):
            for path in sorted(self.folder.glob("*.ldif")):
                stat = path.stat()
                digest.update(f"{path.name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        return digest.hexdigest()

    def _load(self) -> MemoryTree:
        state = self._marker()
        if self._tree is not None and state == self._loaded:
            return self._tree
        schema, data = read_ldif_folder(self.folder)
        self._tree = MemoryTree(data, str(self.folder))
        self.schema, self._loaded = schema, state
        return self._tree

    def _read(self, device: str) -> list[Entry]:
        tree = self._load()
        return read_node_entries(tree, tree.suffixes, device)

    def devices(self) -> list[Entry]:
        tree = self._load()
        return [
            e for base in tree.suffixes for e in tree.search(base, Scope.SUBTREE, DEVICE_CLASSES)
        ]


class _LdapTree:
    """The searches of the selection on an ldap3 connection (see ``selection.Tree``)."""

    def __init__(self, connection: ldap3.Connection) -> None:
        self.connection = connection

    def search(
        self, base: str, scope: Scope, classes: Sequence[str] = (), match: Match | None = None
    ) -> list[Entry]:
        parts = [_any_of("objectClass", classes)] if classes else []
        if match is not None:
            parts.append(_any_of(match[0], sorted(match[1])))
        text = "(&" + "".join(parts) + ")" if parts else "(objectClass=*)"
        scopes = {Scope.BASE: ldap3.BASE, Scope.LEVEL: ldap3.LEVEL, Scope.SUBTREE: ldap3.SUBTREE}
        try:
            self.connection.search(
                base,
                text,
                search_scope=scopes[scope],
                attributes=[ldap3.ALL_ATTRIBUTES],
                dereference_aliases=ldap3.DEREF_NEVER,
            )
        except ldap3_errors.LDAPNoSuchObjectResult:
            return []
        entries: list[Entry] = []
        for response in self.connection.response or []:
            if response.get("type") != "searchResEntry":
                continue
            attrs = {
                name: [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values]
                for name, values in response["raw_attributes"].items()
            }
            if matches(attrs, classes, match):
                entries.append((response["dn"], attrs))
        return entries


def _any_of(attribute: str, values: Sequence[str]) -> str:
    """An LDAP filter: *attribute* equals one of *values* (escaped)."""
    terms = "".join(f"({attribute}={escape_filter_chars(value)})" for value in values)
    return terms if len(values) == 1 else f"(|{terms})"


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
            where = f"{self.password_file}: cannot read the LDAP password"
            with map_errors({OSError: ConfigError}, where):
                return self.password_file.read_text(encoding="utf-8").strip()
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
        super().__init__()
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

    def _read(self, device: str) -> list[Entry]:
        base = self.base
        try:
            return self._run(
                "reading the configuration",
                lambda connection: read_node_entries(_LdapTree(connection), [base], device),
            )
        except ValueError as exc:  # a DN ldap3 cannot parse
            raise ConfigError(f"{self.settings.url}: a DN of the directory: {exc}") from None

    def devices(self) -> list[Entry]:
        base = self.base
        return self._run(
            "reading the devices",
            lambda connection: _LdapTree(connection).search(base, Scope.SUBTREE, DEVICE_CLASSES),
        )

    def _marker(self) -> str | None:
        base = self.base

        def read(connection: ldap3.Connection) -> str | None:
            connection.search(
                base, "(objectClass=*)", search_scope=ldap3.BASE, attributes=["contextCSN"]
            )
            found = connection.response or []
            csn = found[0]["raw_attributes"].get("contextCSN") if found else None
            return "csn:" + ",".join(sorted(v.decode() for v in csn)) if csn else None

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
        super().__init__()
        self.path = path
        self.origin = f"snapshot {path}"

    def _read(self, device: str) -> list[Entry]:
        failures = (OSError, ValueError, KeyError, TypeError)
        with map_errors({failures: ConfigError}, f"{self.path}: not a usable snapshot", reason=str):
            data = json.loads(self.path.read_text(encoding="utf-8"))
            return [(str(item["dn"]), dict(item["attributes"])) for item in data["entries"]]

    def _marker(self) -> str:
        with map_errors({OSError: ConfigError}, f"{self.path}: not a usable snapshot"):
            return hashlib.sha256(self.path.read_bytes()).hexdigest()
