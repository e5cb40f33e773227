"""Names (cn) that need escaping in a DN, on the embedded directory and on slapd.

Each character RFC 4514 escapes (``, + = # ; " < > \\``, a leading or trailing space)
in the name of a rule: the rule loads under its name, exported LDIF holds one cn, and
``config export`` -> ``config import`` -> ``config export`` gives the same file.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from coercion.directory.config import load_configuration
from coercion.directory.ldifio import escape_rdn_value, format_ldif, read_ldif
from coercion.engine import ActionEnv
from coercion.resources import default_ldif_dir
from tests.directories import Directory
from tests.helpers import DEVICE, SECRET, coercion
from tests.slapd import Slapd

pytestmark = pytest.mark.integration

NAMES = ["a,b", "a+b", "a=b", "#lead", "a#b", "a;b", 'a"b', "a<b", "a>b", "a\\b", " lead", "trail "]


def _rule(name: str) -> tuple[str, dict[str, list[str]]]:
    return (
        f"cn={escape_rdn_value(name)},{DEVICE}",
        {
            "objectClass": ["coercionRule"],
            "cn": [name],
            "coercionDIMSE": ["C_STORE_RQ"],
            "dicomTransferRole": ["SCP"],
            "coercionURI": ["deidentify:RetainUIDsOption"],
            "coercionPriority": ["50"],
        },
    )


@pytest.mark.parametrize("name", NAMES)
def test_a_rule_named_with_a_special_character_loads(
    directory: Directory, name: str, tmp_path: Path
) -> None:
    """The rule carries its name as written; its entry exports with that one cn."""
    dn, attrs = _rule(name)
    directory.add(format_ldif([(dn, attrs)]))
    source = directory.open()
    try:
        configuration = load_configuration(source, ActionEnv(SECRET))
    finally:
        source.close()
    assert configuration.rules.rules[0].name == name
    exported = tmp_path / "exported.ldif"
    exported.write_text(format_ldif(configuration.raw), encoding="utf-8")
    assert dict(read_ldif(exported))[dn]["cn"] == [name]


def _ldap_args(server: Slapd, tmp_path: Path) -> list[str]:
    password = tmp_path / "password"
    password.write_text(server.password, encoding="utf-8")
    return ["--ldap", server.url, "--bind-dn", server.admin_dn, "--password-file", str(password)]


def test_export_import_export_gives_the_same_file(slapd: Slapd, tmp_path: Path) -> None:
    """--config-dir with every special name -> export -> import into slapd -> export: identical."""
    folder = tmp_path / "config"
    shutil.copytree(default_ldif_dir(), folder)
    (folder / "20-names.ldif").write_text(format_ldif(map(_rule, NAMES)), encoding="utf-8")
    first, second = tmp_path / "first.ldif", tmp_path / "second.ldif"
    exported = coercion("config", "export", "--config-dir", folder, "--out", first)
    assert exported.returncode == 0, exported.stderr
    args = _ldap_args(slapd, tmp_path)
    imported = coercion("config", "import", first, *args)
    assert imported.returncode == 0, imported.stderr
    assert f"{len(NAMES)} added" in imported.stdout
    assert f"{3 + len(NAMES)} rules" in imported.stdout
    again = coercion("config", "export", "--out", second, *args)
    assert again.returncode == 0, again.stderr
    assert second.read_text(encoding="utf-8") == first.read_text(encoding="utf-8")
    once_more = coercion("config", "import", second, *args)
    assert f"0 added, 0 modified, {len(read_ldif(second))} unchanged" in once_more.stdout
