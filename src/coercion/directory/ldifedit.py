"""Change one entry in a folder of LDIF files, leaving every other line as it was.

The embedded directory is a folder of ``*.ldif`` files the watcher follows.
An entry is replaced or removed where it is (the paragraph of its file that
holds it: comments, other entries and their order stay); a new entry is
appended to :data:`ADDED_FILE`. Each file is written atomically, so the
watcher sees the old file or the new one, never half of one.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

from ldif import LDIFParser

from coercion.dicom.outputs import atomic_output, write_all
from coercion.directory.ldifio import Entry, format_ldif, read_ldif
from coercion.errors import ConfigError

__all__ = ["ADDED_FILE", "find_entry_file", "put_entry", "remove_entry"]

#: Where new entries go: after the shipped files, so their parents load first.
ADDED_FILE = "50-console.ldif"
_BLANK = re.compile(r"\n[ \t]*\n")


def _norm(dn: str) -> str:
    return ",".join(part.strip() for part in dn.lower().split(","))


def _paragraphs(text: str) -> list[str]:
    return _BLANK.split(text)


def _dn_of(paragraph: str) -> str | None:
    """The DN of the record in *paragraph*, or None (comments only, a version line)."""
    parser = LDIFParser(io.BytesIO(paragraph.encode("utf-8") + b"\n"), strict=False)
    for dn, _attrs in parser.parse():
        return str(dn) if dn is not None else None
    return None


def find_entry_file(folder: Path, dn: str) -> Path | None:
    """The ``*.ldif`` file of *folder* that holds *dn*, or None."""
    for path in sorted(folder.glob("*.ldif")):
        if any(_norm(found) == _norm(dn) for found, _ in read_ldif(path)):
            return path
    return None


def _write(path: Path, text: str) -> None:
    try:
        with atomic_output(path) as fd:
            write_all(fd, text.encode("utf-8"))
    except OSError as exc:
        raise ConfigError(
            f"{path}: cannot write ({exc.strerror}); check the folder's mode"
        ) from None


def _rewrite(path: Path, dn: str, replacement: str | None) -> None:
    """Replace (or with None remove) the record of *dn* in *path*, keeping its comments."""
    text = path.read_text(encoding="utf-8")
    out = []
    for paragraph in _paragraphs(text):
        found = _dn_of(paragraph)
        if found is None or _norm(found) != _norm(dn):
            out.append(paragraph)
            continue
        comments = [line for line in paragraph.splitlines() if line.startswith("#")]
        kept = "\n".join(comments)
        if replacement is not None:
            out.append((kept + "\n" if kept else "") + replacement.rstrip("\n"))
        elif kept:
            out.append(kept)
    _write(path, "\n\n".join(part.strip("\n") for part in out if part.strip()) + "\n")


def put_entry(folder: Path, entry: Entry) -> Path:
    """Write *entry* into *folder*: in place if its DN is there, else at the end of ADDED_FILE.

    Returns the file written.
    """
    dn = entry[0]
    text = format_ldif([entry])
    path = find_entry_file(folder, dn)
    if path is not None:
        _rewrite(path, dn, text)
        return path
    path = folder / ADDED_FILE
    before = path.read_text(encoding="utf-8").rstrip("\n") + "\n\n" if path.exists() else ""
    _write(path, before + text)
    return path


def remove_entry(folder: Path, dn: str) -> Path:
    """Remove the entry *dn* from the file of *folder* that holds it; return that file."""
    path = find_entry_file(folder, dn)
    if path is None:
        raise ConfigError(f"{folder}: no entry {dn}")
    _rewrite(path, dn, None)
    return path
