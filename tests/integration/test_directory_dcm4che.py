"""A directory that already serves dcm4chee-arc: dcm4che's DICOM schema, then ours.

dcm4che's ``dicom.ldif`` (tests/data/dcm4che-schema) defines the PS3.15 Annex H schema
with the OIDs of our ``00-dicom-schema.ldif``: slapd refuses both. Loaded with
dcm4che's, our ``01-coercion-schema.ldif`` needs nothing of our 00 file, and the
default entries load as the node's configuration.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from coercion.directory.config import load_configuration
from coercion.directory.sources import LdapDirectory, LdapSettings
from coercion.engine import ActionEnv
from tests.helpers import BASE, SECRET, Start, coercion, dcmtk
from tests.slapd import LDIF_DIR, Slapd, SlapdError, start_slapd

pytestmark = pytest.mark.integration

DCM4CHE_SCHEMA = Path(__file__).resolve().parents[1] / "data" / "dcm4che-schema" / "dicom.ldif"


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A short temporary folder (it holds slapd's ldapi socket)."""
    folder = Path(tempfile.mkdtemp(prefix="sl", dir="/tmp"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def dcm4che_slapd(short_dir: Path) -> Iterator[Slapd]:
    """slapd with dcm4che's dicom.ldif, our 01 schema and our default entries."""
    server = start_slapd(
        short_dir / "s",
        [DCM4CHE_SCHEMA, LDIF_DIR / "01-coercion-schema.ldif"],
        [LDIF_DIR / "10-default-config.ldif"],
        BASE,
    )
    yield server
    server.stop()


def test_our_coercion_schema_loads_on_dcm4ches_dicom_schema(
    dcm4che_slapd: Slapd, tmp_path: Path, serve: Start
) -> None:
    """The node's configuration loads from it, ``config validate`` says so, the node serves."""
    password = tmp_path / "password"
    password.write_text(dcm4che_slapd.password, encoding="utf-8")
    source = LdapDirectory(LdapSettings(dcm4che_slapd.url, dcm4che_slapd.admin_dn, password))
    try:
        configuration = load_configuration(source, ActionEnv(SECRET))
    finally:
        source.close()
    assert sorted(ae.title for ae in configuration.device.aes) == ["COERCION", "RESEARCH"]
    assert len(configuration.rules) == 3
    args = ["--ldap", dcm4che_slapd.url, "--bind-dn", dcm4che_slapd.admin_dn]
    result = coercion("config", "validate", *args, "--password-file", password)
    assert result.returncode == 0, result.stderr
    assert "3 rules for device coercion" in result.stdout
    node = serve(None, *args, "--password-file", str(password))
    echo = dcmtk("echoscu", "-aet", "CT01", "-aec", "RESEARCH", "127.0.0.1", node.port)
    assert echo.returncode == 0, echo.stderr


def test_our_dicom_schema_collides_with_dcm4ches(short_dir: Path) -> None:
    """Why the README says to load only 01-coercion-schema.ldif beside dcm4che: same OIDs."""
    with pytest.raises(SlapdError, match="Duplicate attributeType"):
        start_slapd(
            short_dir / "s",
            [DCM4CHE_SCHEMA, LDIF_DIR / "00-dicom-schema.ldif"],
            [LDIF_DIR / "10-default-config.ldif"],
            BASE,
        )
