"""LdapDirectory over TLS against a real slapd: StartTLS and ldaps://, and untrusted servers."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from coercion.directory.config import load_configuration
from coercion.directory.sources import LdapDirectory, LdapSettings
from coercion.engine import ActionEnv
from coercion.errors import DirectoryUnavailableError
from tests.slapd import Slapd, make_tls_files

pytestmark = pytest.mark.integration


def _settings(server: Slapd, ldaps: bool, ca_file: Path) -> LdapSettings:
    """Admin settings for *server* over ldaps:// or over StartTLS on ldap://."""
    if ldaps:
        assert server.ldaps_url is not None
        return LdapSettings(server.ldaps_url, server.admin_dn, ca_file=ca_file)
    return LdapSettings(server.url, server.admin_dn, start_tls=True, ca_file=ca_file)


@pytest.mark.parametrize("ldaps", [False, True], ids=["starttls", "ldaps"])
def test_default_configuration_loads_over_tls(
    slapd_tls: Slapd, monkeypatch: pytest.MonkeyPatch, ldaps: bool
) -> None:
    """With the server's CA the default configuration loads over StartTLS and over ldaps://."""
    monkeypatch.setenv("COERCION_LDAP_PASSWORD", slapd_tls.password)
    assert slapd_tls.tls is not None
    source = LdapDirectory(_settings(slapd_tls, ldaps, slapd_tls.tls.ca_cert))
    try:
        configuration = load_configuration(source, ActionEnv(b"k" * 32))
    finally:
        source.close()
    assert configuration.device.name == "coercion"
    assert len(configuration.rules) == 3


@pytest.mark.parametrize("ldaps", [False, True], ids=["starttls", "ldaps"])
def test_a_server_certificate_from_another_ca_is_refused(
    slapd_tls: Slapd, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, ldaps: bool
) -> None:
    """Trusting only another CA, loading fails with DirectoryUnavailableError naming the URL."""
    monkeypatch.setenv("COERCION_LDAP_PASSWORD", slapd_tls.password)
    settings = _settings(slapd_tls, ldaps, make_tls_files(tmp_path / "other").ca_cert)
    source = LdapDirectory(settings)
    try:
        with pytest.raises(DirectoryUnavailableError, match=re.escape(settings.url)) as caught:
            load_configuration(source, ActionEnv(b"k" * 32))
    finally:
        source.close()
    assert "CERTIFICATE_VERIFY_FAILED" in str(caught.value)
