"""Reading and writing LDIF content records, with errors that name the file and line."""

from __future__ import annotations

import io
from collections.abc import Iterable
from pathlib import Path

from ldap3.core.exceptions import LDAPInvalidDnError
from ldap3.utils.dn import parse_dn
from ldif import LDIFParser, LDIFWriter

from coercion.errors import ConfigError, map_errors

__all__ = [
    "Change",
    "Entry",
    "duplicate_dns",
    "escape_rdn_value",
    "format_ldif",
    "read_ldif",
    "read_ldif_folder",
    "read_ldif_update",
]

#: One directory entry: its DN and its attributes (name -> values as text).
Entry = tuple[str, dict[str, list[str]]]
#: One change record other than an addition: its DN, change type and the attributes it touches.
Change = tuple[str, str, list[str]]


def read_ldif(path: Path) -> list[Entry]:
    """The content records of *path*; a ConfigError names the file and line of a fault."""
    records = _parse(path, _read_text(path))
    for dn, attrs in records:
        if "changetype" in {name.lower() for name in attrs}:
            raise ConfigError(
                f"{path}: entry {dn}: change records are not configuration; "
                "write the entries as they should be"
            )
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
    """The DNs that more than one of *entries* has (compared as LDAP does: case and spaces)."""
    seen: set[object] = set()
    twice: list[str] = []
    for dn, _attrs in entries:
        try:
            normal: object = tuple((t.lower(), v.lower()) for t, v, _ in parse_dn(dn, escape=True))
        except LDAPInvalidDnError:
            normal = dn
        if normal in seen and dn not in twice:
            twice.append(dn)
        seen.add(normal)
    return twice


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
    """*entries* as LDIF text (values that need it base64-encoded, long lines folded)."""
    buffer = io.BytesIO()
    writer = LDIFWriter(buffer)
    for dn, attrs in entries:
        writer.unparse(dn, {name: list(values) for name, values in attrs.items()})
    return buffer.getvalue().decode("utf-8")


def escape_rdn_value(value: str) -> str:
    """*value* escaped for the value of an RDN (RFC 4514 section 2.4): ``cn=a\\,b``.

    The special characters get a backslash, so do a leading ``#`` or space
    and a trailing space; NUL becomes ``\\00``.
    """
    last = len(value) - 1
    out = []
    for index, char in enumerate(value):
        if char == "\0":
            out.append("\\00")
        elif (
            char in _RDN_SPECIAL or (index == 0 and char in "# ") or (index == last and char == " ")
        ):
            out.append("\\" + char)
        else:
            out.append(char)
    return "".join(out)


_RDN_SPECIAL = frozenset('\\,+"<>;=')
