"""One entry changed in a folder of LDIF files; everything else left as it was."""

from __future__ import annotations

from pathlib import Path

import pytest

from coercion.directory.ldifedit import ADDED_FILE, put_entry, remove_entry
from coercion.directory.ldifio import read_ldif
from coercion.errors import ConfigError

TEXT = """# A file with comments.

# the first entry
dn: cn=one,dc=x
objectClass: coercionRule
cn: one

# the second entry
dn: cn=two,dc=x
objectClass: coercionRule
cn: two
description: keep me
"""


def test_replace_keeps_comments_and_other_entries(tmp_path: Path) -> None:
    """Replacing an entry rewrites its paragraph only; comments and other entries stay."""
    path = tmp_path / "10.ldif"
    path.write_text(TEXT, encoding="utf-8")
    written = put_entry(
        tmp_path,
        ("cn=one,dc=x", {"objectClass": ["coercionRule"], "cn": ["one"], "description": ["new"]}),
    )
    assert written == path
    text = path.read_text(encoding="utf-8")
    assert text.startswith("# A file with comments.\n\n# the first entry\ndn: cn=one,dc=x\n")
    assert "description: new" in text and "description: keep me" in text
    assert "# the second entry" in text
    assert [dn for dn, _ in read_ldif(path)] == ["cn=one,dc=x", "cn=two,dc=x"]


def test_new_entry_goes_to_the_added_file(tmp_path: Path) -> None:
    """An entry not in the folder is appended to ADDED_FILE (created when absent)."""
    (tmp_path / "10.ldif").write_text(TEXT, encoding="utf-8")
    put_entry(tmp_path, ("cn=three,dc=x", {"objectClass": ["coercionRule"], "cn": ["three"]}))
    put_entry(tmp_path, ("cn=four,dc=x", {"objectClass": ["coercionRule"], "cn": ["four"]}))
    added = tmp_path / ADDED_FILE
    assert [dn for dn, _ in read_ldif(added)] == ["cn=three,dc=x", "cn=four,dc=x"]
    assert (tmp_path / "10.ldif").read_text(encoding="utf-8") == TEXT


def test_remove_entry(tmp_path: Path) -> None:
    """Removing drops the entry (its comment stays); an unknown DN is an error."""
    path = tmp_path / "10.ldif"
    path.write_text(TEXT, encoding="utf-8")
    remove_entry(tmp_path, "CN=two, dc=x")
    assert [dn for dn, _ in read_ldif(path)] == ["cn=one,dc=x"]
    assert "# the second entry" in path.read_text(encoding="utf-8")
    with pytest.raises(ConfigError, match="no entry cn=nine"):
        remove_entry(tmp_path, "cn=nine,dc=x")
