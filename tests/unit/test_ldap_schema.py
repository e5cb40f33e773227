"""ldif/00-dicom-schema.ldif: the DICOM LDAP schema of PS3.15 Annex H as generated cn=config LDIF.

The names are read from the standard's schema text with a regular expression of
their own, not through the generator, and compared with the committed LDIF.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
GENERATOR = ROOT / "tools" / "generate_ldap_schema.py"
SOURCE = ROOT / "standard" / "ps3.15" / "dicom-ldap-schema.schema"
LDIF = ROOT / "ldif" / "00-dicom-schema.ldif"
PROJECT_ARC = "2.25.329800735698586629295641978511506172918"


def load_generator() -> ModuleType:
    """The generator script as a module (tools/ is not a package)."""
    spec = importlib.util.spec_from_file_location("generate_ldap_schema", GENERATOR)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


GENERATOR_MODULE = load_generator()


def source_text() -> str:
    """The standard's schema text without its comment lines."""
    lines = SOURCE.read_text(encoding="utf-8").splitlines()
    return "\n".join(line for line in lines if not line.lstrip().startswith("#"))


def ldif_values(text: str) -> list[tuple[str, str]]:
    """(attribute, value) of every unfolded, non-comment LDIF line."""
    logical: list[str] = []
    for raw in text.splitlines():
        if raw.startswith(" ") and logical:
            logical[-1] += raw[1:]
        elif raw and not raw.startswith("#"):
            logical.append(raw)
    return [(key, value.strip()) for key, _, value in (line.partition(":") for line in logical)]


def definitions(text: str) -> list[str]:
    """The olcAttributeTypes and olcObjectClasses values of an LDIF text."""
    kinds = ("olcAttributeTypes", "olcObjectClasses")
    return [value for key, value in ldif_values(text) if key in kinds]


def header(text: str) -> str:
    """The comment lines of an LDIF text as one line, whitespace collapsed."""
    return " ".join(
        " ".join(line[1:] for line in text.splitlines() if line.startswith("#")).split()
    )


def test_committed_ldif_is_current() -> None:
    """The committed LDIF is what the generator makes of the standard text now."""
    result = subprocess.run(
        [sys.executable, str(GENERATOR), "--check"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


def test_check_reports_a_stale_file(tmp_path: Path) -> None:
    """--check exits 1 and says what to run when the output differs."""
    stale = tmp_path / "stale.ldif"
    stale.write_text(LDIF.read_text(encoding="utf-8").replace("dicomPort", "dicomPart"))
    result = subprocess.run(
        [sys.executable, str(GENERATOR), "--check", "--output", str(stale)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert "run tools/generate_ldap_schema.py" in result.stderr


def test_every_source_name_is_in_the_ldif() -> None:
    """Each attribute type and object class NAME of the standard has one LDIF value."""
    names = re.findall(r"NAME\s+'([^']+)'", source_text())
    assert len(names) == 40
    values = definitions(LDIF.read_text(encoding="utf-8"))
    assert len(values) == len(names)
    for name in names:
        assert sum(f" NAME '{name}' " in value for value in values) == 1, name


def test_definition_counts_match_the_source() -> None:
    """As many attribute types and object classes as the source has, in the right attribute."""
    text = source_text()
    pairs = ldif_values(LDIF.read_text(encoding="utf-8"))
    for keyword, attribute in (
        ("attributetype", "olcAttributeTypes"),
        ("objectclass", "olcObjectClasses"),
    ):
        expected = len(re.findall(rf"^\s*{keyword}\b", text, re.MULTILINE | re.IGNORECASE))
        assert sum(key == attribute for key, _ in pairs) == expected


def test_no_oid_twice() -> None:
    """Every OID in the LDIF is unique; the standard's duplicate moved to the project arc."""
    oids = [value.split()[1] for value in definitions(LDIF.read_text(encoding="utf-8"))]
    assert len(oids) == len(set(oids))
    values = definitions(LDIF.read_text(encoding="utf-8"))
    by_name = {value.split("'")[1]: value.split()[1] for value in values}
    assert by_name["dicomSupportedCharacterSet"] == "1.2.840.10008.15.0.3.31"
    assert by_name["dicomInstitutionDepartmentType"] == f"{PROJECT_ARC}.1.1.31"


def test_header_explains_the_changes() -> None:
    """The header names the source, how to regenerate, and each changed definition."""
    comments = header(LDIF.read_text(encoding="utf-8"))
    assert "ps3.15/dicom-ldap-schema.schema" in comments
    assert "python tools/generate_ldap_schema.py" in comments
    assert (
        f"dicomInstitutionDepartmentType: OID 1.2.840.10008.15.0.3.31 -> {PROJECT_ARC}.1.1.31"
        in comments
    )
    assert "EQUALITY caseIgnoreMatch -> caseIgnoreIA5Match" in comments


def test_entry_shape_and_folding() -> None:
    """One cn=config schema entry; lines fit 76 columns; no tab or double space in a value."""
    text = LDIF.read_text(encoding="utf-8")
    assert all(len(line) <= 76 for line in text.splitlines())
    pairs = ldif_values(text)
    assert pairs[:3] == [
        ("dn", "cn=dicom,cn=schema,cn=config"),
        ("objectClass", "olcSchemaConfig"),
        ("cn", "dicom"),
    ]
    for value in definitions(text):
        assert "\t" not in value
        assert "  " not in value
        assert value.startswith("( ")
        assert value.endswith(" )")


def test_standard_text_is_kept_where_slapd_accepts_it() -> None:
    """Only the refused rule changes: IA5 attributes keep SUBSTR caseIgnoreSubstringsMatch."""
    values = definitions(LDIF.read_text(encoding="utf-8"))
    changed = [v for v in values if "caseIgnoreIA5Match" in v]
    assert [v.split("'")[1] for v in changed] == ["dicomInstitutionDepartmentType"]
    assert "SUBSTR caseIgnoreSubstringsMatch" in changed[0]


def test_any_duplicate_oid_is_replaced(tmp_path: Path) -> None:
    """Duplicates are found generally: a repeated object class OID moves to .1.2.<last arc>."""
    source = tmp_path / "ps3.15" / "dup.schema"
    source.parent.mkdir()
    source.write_text(
        "# comment with attributetype in it\n"
        "attributetype ( 1.2.3.4 NAME 'a'\n\tDESC 'x  y'\n"
        "\tSYNTAX 1.3.6.1.4.1.1466.115.121.1.15 )\n"
        "objectclass ( 1.2.3.9 NAME 'one' SUP top STRUCTURAL MUST ( a ) )\n"
        "objectclass ( 1.2.3.9 NAME 'two' SUP top STRUCTURAL MUST (a $ cn) )\n",
        encoding="utf-8",
    )
    text = GENERATOR_MODULE.render(source)
    values = definitions(text)
    assert values == [
        "( 1.2.3.4 NAME 'a' DESC 'x y' SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 )",
        "( 1.2.3.9 NAME 'one' SUP top STRUCTURAL MUST ( a ) )",
        f"( {PROJECT_ARC}.1.2.9 NAME 'two' SUP top STRUCTURAL MUST ( a $ cn ) )",
    ]
    assert f"- two: OID 1.2.3.9 -> {PROJECT_ARC}.1.2.9" in header(text)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("attributetype ( 1.2.3 NAME 'a' SYNTAX 1.2 ", "not closed"),
        ("objectidentifier dicom 1.2.840.10008.15.0", "unexpected 'objectidentifier'"),
        ("attributetype ( 1.2.3 NAME 'a' DESC 'open )", "unterminated"),
        ("attributetype ( 1.2.3 NAME 'a' )\nattributetype ( 1.2.4 NAME 'A' )", "duplicate NAME"),
    ],
)
def test_malformed_source_fails_loudly(tmp_path: Path, text: str, message: str) -> None:
    """Text the generator cannot convert faithfully is an error naming the problem."""
    source = tmp_path / "bad.schema"
    source.write_text(text, encoding="utf-8")
    with pytest.raises(GENERATOR_MODULE.SchemaSourceError, match=message):
        GENERATOR_MODULE.render(source)


def test_fold_round_trips() -> None:
    """Folded lines unfold to the original, also for words longer than a line."""
    line = "olcAttributeTypes: ( 1.2 DESC '" + "x" * 200 + " y z' )"
    folded = GENERATOR_MODULE.fold(line)
    assert all(len(part) <= 76 for part in folded)
    assert all(part.startswith(" ") for part in folded[1:])
    assert "".join([folded[0], *(part[1:] for part in folded[1:])]) == line
