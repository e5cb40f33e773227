"""LDIF content records and their DNs.

Reading and writing LDIF (the ldif package), with errors that name the file and
line; DNs split, compared and escaped as RFC 4514 says, through ``ldap3.utils.dn``.
"""

from __future__ import annotations

import base64
import io
import re
from collections.abc import Iterable
from pathlib import Path

from ldap3.core.exceptions import LDAPInvalidDnError
from ldap3.utils.dn import escape_rdn, parse_dn
from ldif import LDIFParser, LDIFWriter

from coercion.errors import ConfigError, map_errors

__all__ = [
    "Change",
    "DnKey",
    "Entry",
    "canonical_dn",
    "dn_key",
    "duplicate_dns",
    "escape_rdn_value",
    "format_ldif",
    "parent_dn",
    "rdn_values",
    "read_ldif",
    "read_ldif_folder",
    "read_ldif_update",
]

#: One directory entry: its DN and its attributes (name -> values as text).
Entry = tuple[str, dict[str, list[str]]]
#: One change record other than an addition: its DN, change type and the attributes it touches.
Change = tuple[str, str, list[str]]

#: A DN as compared: its RDNs from the suffix down, each a sorted tuple of (type, value).
DnKey = tuple[tuple[tuple[str, str], ...], ...]


def read_ldif(path: Path) -> list[Entry]:
    """The content records of *path*; a ConfigError names the file and line of a fault."""
    records = _parse(path, _read_text(path))
    for dn, attrs in records:
        if "changetype" in {name.lower() for name in attrs}:
            raise ConfigError(
                f"{path}: entry {dn}: change records are not configuration; "
                "write the entries as they should be"
            )
        _check_naming_values(path, dn, attrs)
    return records


def read_ldif_update(path: Path) -> tuple[list[Entry], list[Change]]:
    """The entries of *path*, content and ``changetype: add`` records alike, and its other changes.

    Update files (such as dcm4chee-arc's) mix added entries with modifications:
    the added entries are returned without their ``changetype``; each other
    change record as its DN, change type and the attribute names it touches.
    """
    lines = _read_text(path).split("\n")
    changes: list[Change] = []
    start = 0
    for end in [*(i for i, line in enumerate(lines) if not line.strip()), len(lines)]:
        block = _unfold(lines[start:end])
        kind = next((v for n, v in block if n == "changetype"), "add")
        if kind.lower() != "add":
            dn = next((v for n, v in block if n == "dn"), "")
            touched = sorted({v for n, v in block if n in {"add", "replace", "delete"} and v})
            changes.append((dn, kind.lower(), touched))
            lines[start:end] = ["#"] * (end - start)  # keeps the line numbers of the rest
        start = end + 1
    records = _parse(path, "\n".join(lines))
    for _dn, attrs in records:
        for name in [n for n in attrs if n.lower() == "changetype"]:
            del attrs[name]
    return records, changes


def _unfold(lines: list[str]) -> list[tuple[str, str]]:
    """The (lower-case name, value) pairs of a record's lines (base64 values left as they are)."""
    joined: list[str] = []
    for line in lines:
        if line.startswith(" ") and joined:
            joined[-1] += line[1:]
        elif not line.startswith("#"):
            joined.append(line)
    pairs = []
    for line in joined:
        name, sep, value = line.partition(":")
        if sep:
            pairs.append((name.strip().lower(), value.lstrip(": ").strip()))
    return pairs


def _read_text(path: Path) -> str:
    with map_errors({OSError: ConfigError}, f"{path}: cannot read"):
        data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not valid LDIF ({exc})") from None


def _parse(path: Path, text: str) -> list[Entry]:
    parser = LDIFParser(io.BytesIO(text.encode("utf-8")), strict=True)
    try:
        return [(dn, dict(attrs)) for dn, attrs in parser.parse() if dn is not None]
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: line {parser.line_counter}: not valid LDIF ({exc})") from None


def duplicate_dns(entries: Iterable[Entry]) -> list[str]:
    """The DNs that more than one of *entries* has (compared as LDAP does: :func:`dn_key`)."""
    seen: set[object] = set()
    twice: list[str] = []
    for dn, _attrs in entries:
        try:
            normal: object = dn_key(dn)
        except ValueError:
            normal = dn
        if normal in seen and dn not in twice:
            twice.append(dn)
        seen.add(normal)
    return twice


def _check_naming_values(path: Path, dn: str, attrs: dict[str, list[str]]) -> None:
    """Each value the DN's first RDN names is one of the entry's values (as LDAP requires).

    An attribute the entry lacks gets the RDN's value, as a server adds it.
    """
    try:
        named = rdn_values(dn)
    except ValueError as exc:
        raise ConfigError(f"{path}: entry {dn}: not a valid DN ({exc})") from None
    for attribute, value in named:
        given = next((v for k, v in attrs.items() if k.lower() == attribute.lower()), None)
        if given is None:
            attrs[attribute] = [value]
        elif value.lower() not in {v.lower() for v in given}:
            raise ConfigError(
                f"{path}: entry {dn}: attribute {attribute}: does not hold the value the DN "
                f"names; write it {_as_ldif_line(attribute, value)}"
            )


def _as_ldif_line(attribute: str, value: str) -> str:
    """How to write *value* in LDIF, for a hint (base64 when spaces begin or end it)."""
    if value == value.strip(" "):
        return f"unescaped ({attribute}: {value})"
    encoded = base64.b64encode(value.encode()).decode("ascii")
    return (
        f"base64-encoded, as LDIF drops the spaces around a plain value ({attribute}:: {encoded})"
    )


def read_ldif_folder(folder: Path) -> tuple[list[Entry], list[Entry]]:
    """All entries of the ``*.ldif`` files of *folder*, in file-name order.

    Returns ``(schema, data)``: entries under ``cn=schema,cn=config`` (schema
    definitions) and the rest.
    """
    if not folder.is_dir():
        raise ConfigError(f"{folder}: not a folder of LDIF files")
    files = sorted(folder.glob("*.ldif"))
    if not files:
        raise ConfigError(f"{folder}: holds no *.ldif files")
    schema: list[Entry] = []
    data: list[Entry] = []
    for path in files:
        for dn, attrs in read_ldif(path):
            (schema if dn.lower().endswith("cn=schema,cn=config") else data).append((dn, attrs))
    return schema, data


def format_ldif(entries: Iterable[Entry]) -> str:
    """*entries* as LDIF text (values that need it base64-encoded, long lines folded).

    A value that begins or ends with a space is base64-encoded too (RFC 2849
    says it should be: readers strip the spaces around a plain value). DNs are
    written in one form, :func:`canonical_dn`, whichever form the source gave.
    """
    buffer = io.BytesIO()
    writer = LDIFWriter(buffer)
    for dn, attrs in entries:
        record = {name: [_protected(v) for v in values] for name, values in attrs.items()}
        writer.unparse(canonical_dn(dn), record)
    return buffer.getvalue().decode("utf-8")


def _protected(value: str) -> str | bytes:
    """*value*, as bytes (which LDIFWriter base64-encodes) when a space begins or ends it."""
    return value.encode("utf-8") if value != value.strip(" ") else value


def escape_rdn_value(value: str) -> str:
    """*value* escaped for the value of an RDN (RFC 4514 section 2.4): ``cn=a\\,b``.

    ldap3's ``escape_rdn``: the special characters get a backslash, so do a
    leading ``#`` or space and a trailing space; NUL becomes ``\\00`` (ldap3
    puts the backslash before the NUL itself, which RFC 4514 does not allow).
    """
    return escape_rdn(value).replace("\\\0", "\\00") if value else value


def _components(dn: str) -> list[tuple[str, str, str]]:
    """ldap3's parse of *dn*: (type, escaped value, separator) triples; ValueError if no DN."""
    try:
        # escape=True: a '#' or '=' inside a value is valid RFC 4514 that ldap3 would refuse.
        return list(parse_dn(dn, escape=True))
    except LDAPInvalidDnError as exc:
        raise ValueError(str(exc)) from None


def _rdns(dn: str) -> list[list[tuple[str, str]]]:
    """The RDNs of *dn*, first to last, each a list of (type, escaped value)."""
    rdns: list[list[tuple[str, str]]] = [[]]
    for attribute, value, separator in _components(dn):
        rdns[-1].append((attribute, value))
        if separator != "+":
            rdns.append([])
    return rdns[:-1]


_ESCAPED = re.compile(r"\\([0-9A-Fa-f]{2}|.)", re.DOTALL)


def _unescape(value: str) -> str:
    """An RFC 4514 attribute value as text (``\\,`` and ``\\2C`` are both a comma).

    ldap3 escapes but has no inverse; the hex pairs are UTF-8 bytes.
    """
    out = bytearray()
    position = 0
    for match in _ESCAPED.finditer(value):
        out += value[position : match.start()].encode()
        pair = match[1]
        out += bytes.fromhex(pair) if len(pair) == 2 else pair.encode()
        position = match.end()
    out += value[position:].encode()
    return out.decode("utf-8", errors="replace")


def rdn_values(dn: str) -> list[tuple[str, str]]:
    """The (type, value) pairs the first RDN of *dn* names, values unescaped."""
    rdns = _rdns(dn)
    return [(attribute, _unescape(value)) for attribute, value in rdns[0]] if rdns else []


def dn_key(dn: str) -> DnKey:
    """*dn* for comparing and sorting; ValueError when it is not a DN.

    Its RDNs from the suffix down (so a parent's key is a prefix of its
    children's, and sorted keys list a tree parents first), types and values
    folded to lower case and escapes resolved: ``cn=A\\,b`` and ``CN=a\\2Cb`` are one DN.
    """
    return tuple(
        tuple(sorted((attribute.lower(), _unescape(value).lower()) for attribute, value in rdn))
        for rdn in reversed(_rdns(dn))
    )


def canonical_dn(dn: str) -> str:
    """*dn* with every value escaped as :func:`escape_rdn_value` does (``\\2C`` becomes ``\\,``).

    slapd gives special characters as hex pairs, files often as ``\\,``: one
    form makes an export the same from either. A string that is no DN is returned as is.
    """
    try:
        rdns = _rdns(dn)
    except ValueError:
        return dn
    return ",".join(
        "+".join(f"{attribute}={escape_rdn_value(_unescape(value))}" for attribute, value in rdn)
        for rdn in rdns
    )


def parent_dn(dn: str) -> str:
    """The DN of *dn*'s parent (empty for a DN of one RDN); ValueError when it is not a DN."""
    rdns = _rdns(dn)
    return ",".join("+".join(f"{a}={v}" for a, v in rdn) for rdn in rdns[1:])
