"""The private slapd of tests/slapd.py, with the generated DICOM schema (PS3.15 Annex H) loaded."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import ldap3
import pytest

import tests.slapd
from tests.helpers import free_port
from tests.servers import short_directory
from tests.slapd import (
    DEFAULT_SUFFIX,
    LdapToolError,
    Slapd,
    SlapdError,
    repository_ldif,
    start_slapd,
)

pytestmark = pytest.mark.integration

SCHEMA = Path(__file__).resolve().parents[2] / "ldif" / "00-dicom-schema.ldif"
SUFFIX = "dc=coercion,dc=local"
CONFIG_ROOT = f"cn=DICOM Configuration,{SUFFIX}"
DEVICE = f"dicomDeviceName=COERCION,cn=Devices,{CONFIG_ROOT}"
CONNECTION = f"cn=dicom,{DEVICE}"
AE = f"dicomAETitle=COERCION,{DEVICE}"

DATA = f"""\
dn: {SUFFIX}
objectClass: dcObject
objectClass: organization
dc: coercion
o: coercion

dn: {CONFIG_ROOT}
objectClass: dicomConfigurationRoot
cn: DICOM Configuration

dn: cn=Devices,{CONFIG_ROOT}
objectClass: dicomDevicesRoot
cn: Devices

dn: {DEVICE}
objectClass: dicomDevice
objectClass: extensibleObject
dicomDeviceName: COERCION
dicomInstalled: TRUE
dicomManufacturer: coercion
dicomInstitutionDepartmentType: RADIOLOGY

dn: {CONNECTION}
objectClass: dicomNetworkConnection
cn: dicom
dicomHostname: 127.0.0.1
dicomPort: 11112

dn: {AE}
objectClass: dicomNetworkAE
dicomAETitle: COERCION
dicomNetworkConnectionReference: {CONNECTION}
dicomAssociationInitiator: TRUE
dicomAssociationAcceptor: TRUE
dicomSupportedCharacterSet: ISO_IR 100
"""


def _start(tmp_path: Path, syncprov: bool) -> Iterator[Slapd]:
    data = tmp_path / "data.ldif"
    data.write_text(DATA, encoding="utf-8")
    with (
        short_directory("sl") as directory,
        start_slapd(directory / "s", [SCHEMA], [data], SUFFIX, syncprov=syncprov) as server,
    ):
        yield server


@pytest.fixture
def dicom_slapd(tmp_path: Path) -> Iterator[Slapd]:
    """A slapd with syncprov holding the DICOM configuration tree of DATA."""
    yield from _start(tmp_path, syncprov=True)


@pytest.fixture
def dicom_slapd_no_syncprov(tmp_path: Path) -> Iterator[Slapd]:
    """A slapd without syncprov holding the DICOM configuration tree of DATA."""
    yield from _start(tmp_path, syncprov=False)


@contextmanager
def connect(server: Slapd, get_info: Any = ldap3.NONE) -> Iterator[ldap3.Connection]:
    """An admin connection to *server*, unbound (socket closed) on exit.

    ldap3's own ``with connection:`` leaves an auto-bound connection open.
    """
    connection = ldap3.Connection(
        ldap3.Server(server.url, get_info=get_info),
        server.admin_dn,
        server.password,
        auto_bind=True,
    )
    try:
        yield connection
    finally:
        connection.unbind()


def read(server: Slapd, dn: str, *attributes: str) -> dict[str, list[str]] | None:
    """The requested attributes of entry *dn* (values as strings), or None if it is absent."""
    with connect(server) as connection:
        found = connection.search(
            dn, "(objectClass=*)", search_scope=ldap3.BASE, attributes=list(attributes)
        )
        if not found:
            return None
        raw = connection.entries[0].entry_attributes_as_dict
        return {key: [str(value) for value in values] for key, values in raw.items()}


def context_csn(server: Slapd) -> list[str]:
    """The contextCSN values of the suffix entry (empty without syncprov)."""
    entry = read(server, server.suffix, "contextCSN")
    assert entry is not None
    return entry.get("contextCSN", [])


def test_dicom_tree_reads_back(dicom_slapd: Slapd) -> None:
    """Entries of every PS3.15 Annex H object class used here load and read back."""
    with connect(dicom_slapd) as connection:
        connection.search(
            CONFIG_ROOT, "(dicomAETitle=COERCION)", attributes=["dicomNetworkConnectionReference"]
        )
        assert [entry.entry_dn for entry in connection.entries] == [AE]
        assert connection.entries[0].dicomNetworkConnectionReference.value == CONNECTION
        connection.search(CONFIG_ROOT, "(objectClass=dicomNetworkConnection)", attributes=["*"])
        assert connection.entries[0].dicomPort.value == "11112"
        assert connection.entries[0].dicomHostname.value == "127.0.0.1"
        assert connection.search(CONFIG_ROOT, "(objectClass=dicomDevicesRoot)")
        assert connection.search(SUFFIX, "(objectClass=dicomConfigurationRoot)")


def test_ae_title_matches_case_exactly(dicom_slapd: Slapd) -> None:
    """dicomAETitle uses caseExactIA5Match as the standard says."""
    with connect(dicom_slapd) as connection:
        assert connection.search(SUFFIX, "(dicomAETitle=COERCION)")
        assert not connection.search(SUFFIX, "(dicomAETitle=coercion)")


def test_renamed_attribute_keeps_case_insensitive_matching(dicom_slapd: Slapd) -> None:
    """dicomInstitutionDepartmentType (replacement OID, IA5 equality rule) matches ignoring case."""
    with connect(dicom_slapd) as connection:
        assert connection.search(SUFFIX, "(dicomInstitutionDepartmentType=radiology)")
        assert connection.search(SUFFIX, "(dicomInstitutionDepartmentType=*diolo*)")


def test_server_schema_has_every_generated_definition(dicom_slapd: Slapd) -> None:
    """slapd's subschema lists every DICOM attribute type and object class with our OIDs."""
    with connect(dicom_slapd, get_info=ldap3.SCHEMA) as connection:
        schema = connection.server.schema
    assert schema.attribute_types["dicomSupportedCharacterSet"].oid == "1.2.840.10008.15.0.3.31"
    assert (
        schema.attribute_types["dicomInstitutionDepartmentType"].oid
        == "2.25.329800735698586629295641978511506172918.1.1.31"
    )
    text = SCHEMA.read_text(encoding="utf-8").replace("\n ", "")
    for kind, table in (
        ("olcAttributeTypes", schema.attribute_types),
        ("olcObjectClasses", schema.object_classes),
    ):
        names = [line.split("'")[1] for line in text.splitlines() if line.startswith(kind)]
        assert names
        assert [name for name in names if name not in table] == []


def test_context_csn_changes_on_modify(dicom_slapd: Slapd) -> None:
    """With syncprov the suffix carries a contextCSN, and an ldapmodify advances it."""
    before = context_csn(dicom_slapd)
    assert len(before) == 1
    dicom_slapd.ldapmodify(
        f"dn: {DEVICE}\nchangetype: modify\nreplace: dicomManufacturer\ndicomManufacturer: other\n"
    )
    after = context_csn(dicom_slapd)
    assert len(after) == 1
    assert after[0] > before[0]
    assert read(dicom_slapd, DEVICE, "dicomManufacturer") == {"dicomManufacturer": ["other"]}


def test_no_context_csn_without_syncprov(dicom_slapd_no_syncprov: Slapd) -> None:
    """Without syncprov there is no contextCSN, but modifyTimestamp and entryCSN are there."""
    assert context_csn(dicom_slapd_no_syncprov) == []
    dicom_slapd_no_syncprov.ldapmodify(
        f"dn: {DEVICE}\nchangetype: modify\nreplace: dicomManufacturer\ndicomManufacturer: other\n"
    )
    assert context_csn(dicom_slapd_no_syncprov) == []
    entry = read(dicom_slapd_no_syncprov, DEVICE, "modifyTimestamp", "entryCSN")
    assert entry is not None
    assert set(entry) == {"modifyTimestamp", "entryCSN"}


def test_restart_keeps_data(dicom_slapd: Slapd) -> None:
    """stop() ends slapd (twice is fine) and start() brings it back with its data."""
    dicom_slapd.ldapmodify(
        f"dn: cn=second,{DEVICE}\nchangetype: add\nobjectClass: dicomNetworkConnection\n"
        "cn: second\ndicomHostname: localhost\n"
    )
    dicom_slapd.stop()
    dicom_slapd.stop()
    assert not dicom_slapd.running
    port = int(dicom_slapd.url.rsplit(":", 1)[1])
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port)):
        pass
    dicom_slapd.start()
    assert read(dicom_slapd, f"cn=second,{DEVICE}", "dicomHostname") == {
        "dicomHostname": ["localhost"]
    }
    assert read(dicom_slapd, AE, "dicomAETitle") == {"dicomAETitle": ["COERCION"]}


def test_ldapi_external_bind(dicom_slapd: Slapd) -> None:
    """Root reaches cn=config over the private ldapi socket with SASL EXTERNAL."""
    connection = ldap3.Connection(
        ldap3.Server(dicom_slapd.ldapi, get_info=ldap3.NONE),
        authentication=ldap3.SASL,
        sasl_mechanism=ldap3.EXTERNAL,
        sasl_credentials="",
        auto_bind=True,
    )
    try:
        assert connection.search("cn=schema,cn=config", "(cn=*dicom)", search_scope=ldap3.LEVEL)
    finally:
        connection.unbind()


def test_ldapmodify_error_shows_stderr(dicom_slapd: Slapd) -> None:
    """A failing ldapmodify raises with the tool's message in the exception text."""
    with pytest.raises(LdapToolError, match="No such object"):
        dicom_slapd.ldapmodify(f"dn: cn=absent,{SUFFIX}\nchangetype: delete\n")


def test_schema_violation_in_data_is_reported(tmp_path: Path) -> None:
    """slapadd's complaint about invalid data reaches the exception, and no slapd is left."""
    data = tmp_path / "bad.ldif"
    data.write_text(DATA.replace("dicomInstalled: TRUE\n", ""), encoding="utf-8")
    with short_directory("sl") as directory, pytest.raises(SlapdError, match="dicomInstalled"):
        start_slapd(directory / "s", [SCHEMA], [data], SUFFIX)


def test_port_taken_after_probe_is_retried(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """When another process takes the probed port first, slapd starts on another one."""
    data = tmp_path / "data.ldif"
    data.write_text(DATA, encoding="utf-8")
    with short_directory("sl") as directory, socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        taken_port: int = taken.getsockname()[1]
        ports = iter([taken_port])
        monkeypatch.setattr(tests.slapd, "free_port", lambda: next(ports, 0) or free_port())
        with start_slapd(directory / "s", [SCHEMA], [data], SUFFIX) as server:
            assert server.url != f"ldap://127.0.0.1:{taken_port}"
            assert read(server, AE, "dicomAETitle") == {"dicomAETitle": ["COERCION"]}
            assert "errno=98" in server.log()


def test_long_directory_is_refused(tmp_path: Path) -> None:
    """A directory too deep for the ldapi socket path is refused before slapd can crash on it."""
    deep = tmp_path / ("d" * 120)
    with pytest.raises(SlapdError, match="too long"):
        start_slapd(deep, [SCHEMA], [], SUFFIX)


def test_repository_fixture(slapd: Slapd) -> None:
    """The ``slapd`` fixture loads the repository's ldif/ and serves its suffix with syncprov."""
    schema_files, data_files = repository_ldif()
    assert SCHEMA in schema_files
    assert SCHEMA not in data_files
    if not data_files:
        assert slapd.suffix == DEFAULT_SUFFIX
    assert read(slapd, slapd.suffix) is not None
    assert len(context_csn(slapd)) == 1


def test_repository_fixture_without_syncprov(slapd_no_syncprov: Slapd) -> None:
    """The ``slapd_no_syncprov`` fixture serves the same suffix without contextCSN."""
    assert read(slapd_no_syncprov, slapd_no_syncprov.suffix) is not None
    assert context_csn(slapd_no_syncprov) == []
