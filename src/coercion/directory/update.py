"""Write entries into a live directory: add what is new, make existing entries match."""

from __future__ import annotations

import ldap3
from ldap3.core.exceptions import LDAPException, LDAPNoSuchObjectResult

from coercion.directory.ldifio import Entry
from coercion.directory.sources import LdapDirectory
from coercion.errors import ConfigError, DirectoryUnavailableError

__all__ = ["delete_entry", "import_entries"]

#: Attributes the server manages: never written.
_OPERATIONAL = frozenset(
    {
        "entrycsn",
        "entryuuid",
        "modifytimestamp",
        "createtimestamp",
        "creatorsname",
        "modifiersname",
        "structuralobjectclass",
        "entrydn",
        "subschemasubentry",
        "hassubordinates",
        "contextcsn",
    }
)


def import_entries(directory: LdapDirectory, entries: list[Entry]) -> tuple[int, int, int]:
    """Add or update *entries* in order (parents first); return (added, modified, unchanged).

    An existing entry is made to hold exactly the attributes the file gives it
    (attributes it has and the file does not are removed). A refusal by the
    server raises ConfigError naming the DN and the server's reason.
    """
    connection = directory._connect()
    added = modified = unchanged = 0
    try:
        for dn, attrs in entries:
            values = {k: list(v) for k, v in attrs.items() if k.lower() not in _OPERATIONAL}
            try:
                connection.search(dn, "(objectClass=*)", search_scope=ldap3.BASE, attributes=["*"])
                found = connection.response or []
            except LDAPNoSuchObjectResult:
                found = []
            if not found:
                _check(connection, connection.add(dn, attributes=values), dn, "add")
                added += 1
                continue
            current = {
                k.lower(): sorted(v.decode() if isinstance(v, bytes) else str(v) for v in vs)
                for k, vs in found[0]["raw_attributes"].items()
            }
            changes: dict[str, list[tuple[str, list[str]]]] = {}
            for name, new in values.items():
                if sorted(new) != current.get(name.lower()):
                    changes[name] = [(ldap3.MODIFY_REPLACE, new)]
            given = {name.lower() for name in values}
            for name in current:
                if name not in given and name not in _OPERATIONAL:
                    changes[name] = [(ldap3.MODIFY_DELETE, [])]
            if not changes:
                unchanged += 1
                continue
            _check(connection, connection.modify(dn, changes), dn, "modify")
            modified += 1
    except LDAPNoSuchObjectResult:
        raise ConfigError(f"{directory.origin} {dn}: the parent entry does not exist") from None
    except LDAPException as exc:
        raise _refused(directory, dn, exc) from None
    return added, modified, unchanged


def _refused(directory: LdapDirectory, dn: str, exc: LDAPException) -> Exception:
    """The error for *exc* on *dn*: the server unreachable, or the write refused."""
    if exc.__class__.__name__.startswith("LDAPSocket"):
        return DirectoryUnavailableError(f"{directory.origin}: {exc}")
    return ConfigError(f"{directory.origin} {dn}: refused ({exc.__class__.__name__}: {exc})")


def _check(connection: ldap3.Connection, ok: bool, dn: str, what: str) -> None:
    if not ok:
        result = connection.result or {}
        raise ConfigError(
            f"{dn}: {what} refused by the server ({result.get('description')}: "
            f"{result.get('message')})"
        )


def delete_entry(directory: LdapDirectory, dn: str) -> None:
    """Delete the entry *dn* (a leaf) from the live directory."""
    connection = directory._connect()
    try:
        _check(connection, connection.delete(dn), dn, "delete")
    except LDAPNoSuchObjectResult:
        raise ConfigError(f"{directory.origin} {dn}: no such entry") from None
    except LDAPException as exc:
        raise _refused(directory, dn, exc) from None
