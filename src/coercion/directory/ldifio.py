"""Reading and writing LDIF content records, with errors that name the file and line."""

from __future__ import annotations

import io
from collections.abc import Iterable
from pathlib import Path

from ldif import LDIFParser, LDIFWriter

from coercion.errors import ConfigError, map_errors

__all__ = ["Entry", "escape_rdn_value", "format_ldif", "read_ldif", "read_ldif_folder"]

#: One directory entry: its DN and its attributes (name -> values as text).
Entry = tuple[str, dict[str, list[str]]]


def read_ldif(path: Path) -> list[Entry]:
    """The content records of *path*; a ConfigError names the file and line of a fault."""
    with map_errors({OSError: ConfigError}, f"{path}: cannot read"), open(path, "rb") as handle:
        parser = LDIFParser(handle, strict=True)
        try:
            records = [(dn, dict(attrs)) for dn, attrs in parser.parse() if dn is not None]
        except (ValueError, UnicodeDecodeError) as exc:
            raise ConfigError(
                f"{path}: line {parser.line_counter}: not valid LDIF ({exc})"
            ) from None
    for dn, attrs in records:
        if "changetype" in {name.lower() for name in attrs}:
            raise ConfigError(
                f"{path}: entry {dn}: change records are not configuration; "
                "write the entries as they should be"
            )
    return records


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
