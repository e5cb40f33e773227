"""DNs and LDIF records: escaping, comparing and writing names that need escaping."""

from __future__ import annotations

from pathlib import Path

import pytest

from coercion.directory.ldifio import (
    canonical_dn,
    dn_key,
    escape_rdn_value,
    format_ldif,
    parent_dn,
    rdn_values,
    read_ldif,
)
from coercion.errors import ConfigError

PARENT = "dicomDeviceName=coercion,cn=Devices,dc=coercion,dc=local"

#: A name with each character RFC 4514 escapes, and how the RDN writes it.
SPECIAL = [
    ("a,b", r"a\,b"),
    ("a+b", r"a\+b"),
    ("a=b", r"a\=b"),
    ("#lead", r"\#lead"),
    ("a#b", "a#b"),  # only a leading '#' needs the backslash
    ("a;b", r"a\;b"),
    ('a"b', r"a\"b"),
    ("a<b", r"a\<b"),
    ("a>b", r"a\>b"),
    ("a\\b", r"a\\b"),
    (" lead", r"\ lead"),
    ("trail ", r"trail\ "),
    ("é ü", "é ü"),
]


@pytest.mark.parametrize(("name", "escaped"), SPECIAL)
def test_each_special_character_is_escaped_and_read_back(name: str, escaped: str) -> None:
    """escape_rdn_value writes the RFC 4514 form; rdn_values gives the name back."""
    assert escape_rdn_value(name) == escaped
    dn = f"cn={escaped},{PARENT}"
    assert rdn_values(dn) == [("cn", name)]
    assert parent_dn(dn) == PARENT
    assert canonical_dn(dn) == dn


@pytest.mark.parametrize(("name", "escaped"), SPECIAL)
def test_each_special_character_survives_an_ldif_file(
    name: str, escaped: str, tmp_path: Path
) -> None:
    """Written with format_ldif and read back: one cn value, the name as it was."""
    dn = f"cn={escaped},{PARENT}"
    path = tmp_path / "entry.ldif"
    path.write_text(format_ldif([(dn, {"objectClass": ["device"], "cn": [name]})]), "utf-8")
    assert read_ldif(path) == [(dn, {"objectClass": ["device"], "cn": [name]})]


def test_hex_pairs_and_backslashes_are_one_dn() -> None:
    """slapd writes special characters as hex pairs; the DN is the same one."""
    assert dn_key(r"CN=A\2Cb,DC=x") == dn_key(r"cn=a\,b,dc=x")
    assert dn_key(r"cn=\C3\A9t\C3\A9,dc=x") == dn_key("cn=été,dc=x")
    assert canonical_dn(r"cn=a\2Cb\20,dc=x") == r"cn=a\,b\ ,dc=x"
    assert dn_key(r"cn=a\,b,dc=x")[:-1] == dn_key("dc=x")  # the comma splits no RDN


def test_nul_is_written_as_a_hex_pair() -> None:
    """RFC 4514 wants NUL as \\00 (ldap3 alone puts a backslash before the NUL)."""
    assert escape_rdn_value("a\0b") == r"a\00b"
    assert rdn_values(r"cn=a\00b,dc=x") == [("cn", "a\0b")]


def test_multi_valued_rdns_compare_in_any_order() -> None:
    assert dn_key("cn=a+sn=b,dc=x") == dn_key("sn=B+cn=A,dc=x")
    assert rdn_values(r"cn=a\+b+sn=c,dc=x") == [("cn", "a+b"), ("sn", "c")]


def test_an_entry_whose_cn_is_not_the_dns_is_named(tmp_path: Path) -> None:
    """The DN names one cn, the entry holds another: file, DN, attribute and the fix."""
    path = tmp_path / "entry.ldif"
    path.write_text(f"dn: cn=a\\,b,{PARENT}\nobjectClass: device\ncn: a\\,b\n", "utf-8")
    with pytest.raises(ConfigError, match=r"attribute cn: does not hold .*\(cn: a,b\)") as caught:
        read_ldif(path)
    assert str(path) in str(caught.value)
    path.write_text(f"dn: cn=trail\\ ,{PARENT}\nobjectClass: device\ncn: trail \n", "utf-8")
    with pytest.raises(ConfigError, match=r"base64-encoded.*\(cn:: dHJhaWwg\)"):
        read_ldif(path)


def test_an_entry_without_its_naming_attribute_gets_it(tmp_path: Path) -> None:
    """As a server does: the RDN's value becomes the attribute's value."""
    path = tmp_path / "entry.ldif"
    path.write_text(f"dn: cn=a\\2Cb,{PARENT}\nobjectClass: device\n", "utf-8")
    assert read_ldif(path)[0][1]["cn"] == ["a,b"]


def test_a_dn_ldap3_cannot_parse_is_named(tmp_path: Path) -> None:
    """A space after a comma passes the LDIF reader, not RFC 4514: file, entry, reason."""
    path = tmp_path / "entry.ldif"
    path.write_text("dn: cn=a, dc=x\nobjectClass: device\n", "utf-8")
    with pytest.raises(ConfigError, match=r"entry\.ldif: entry cn=a, dc=x: not a valid DN \("):
        read_ldif(path)
