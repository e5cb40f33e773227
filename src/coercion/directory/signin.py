"""Sign a person in against the live directory: a simple bind with their DN, then their groups.

The bind is made on a connection of its own (never the node's) and closed at
once; the password is neither kept nor logged.
"""

from __future__ import annotations

import contextlib

import ldap3
from ldap3.core.exceptions import LDAPException
from ldap3.utils.conv import escape_filter_chars

from coercion.directory.sources import LdapSettings, ldap_server
from coercion.errors import DirectoryUnavailableError

__all__ = ["bind_and_groups"]


def bind_and_groups(
    settings: LdapSettings, dn: str, password: str, groups: list[str]
) -> list[str] | None:
    """Bind as *dn*; return those of *groups* (groupOfNames DNs) that list it as a member.

    Returns None when the server refuses the bind (a wrong DN or password, or an
    empty password: no unauthenticated bind). Raises DirectoryUnavailableError when
    the server cannot be reached.
    """
    if not dn or not password:
        return None
    server = ldap_server(settings)
    connection = ldap3.Connection(
        server, user=dn, password=password, receive_timeout=settings.timeout
    )
    try:
        connection.open()
        if settings.start_tls:
            connection.start_tls()
        if not connection.bind():
            return None
        member_of = []
        for group in groups:
            connection.search(
                group,
                f"(member={escape_filter_chars(dn)})",
                search_scope=ldap3.BASE,
                attributes=["cn"],
            )
            if any(r.get("type") == "searchResEntry" for r in connection.response or []):
                member_of.append(group)
        return member_of
    except LDAPException as exc:
        raise DirectoryUnavailableError(
            f"{settings.url}: cannot check a sign-in ({exc.__class__.__name__})"
        ) from None
    finally:
        with contextlib.suppress(LDAPException, OSError):
            connection.unbind()
