"""Reloads are all or nothing; start-up uses what is known good.

A rejected change leaves the serving rules exactly as they were (their scripts, scopes and
store); the snapshot of the last good configuration is written at start and stands in when
the directory is down or invalid at the next start; a wrong bind password is a configuration
error; ``coercionPollInterval`` applies without a restart. Run on the embedded directory and on
a real slapd where the directory matters.
"""

from __future__ import annotations

import json
import logging
import stat
from pathlib import Path

import pytest

from coercion.directory.ldifio import format_ldif
from coercion.directory.sources import LdapDirectory, LdapSettings
from coercion.directory.watch import ConfigurationWatcher
from coercion.engine import ActionEnv, Dimse, Engine, EventContext, Role
from coercion.errors import ConfigError
from tests.directories import Directory, ldap_directory
from tests.helpers import DEVICE, SECRET, Start, coercion, make_dataset, wait_until
from tests.slapd import Slapd

pytestmark = pytest.mark.integration

SCRIPT_DN = f"cn=reload-script,{DEVICE}"
BAD_RULE_DN = f"cn=broken-rule,{DEVICE}"
STORE = EventContext(Dimse.C_STORE_RQ, Role.SCP, "CT01", "COERCION")


def _body(description: str) -> str:
    return json.dumps(
        {
            "general": {
                "preset": "none",
                "(0008,1030)": f"set({description})",
                "(0010,0020)": "R-__COUNTER-001__",
            }
        }
    )


def _script_ldif(description: str) -> str:
    script = format_ldif(
        [
            (
                SCRIPT_DN,
                {
                    "objectClass": ["coercionTagScript"],
                    "cn": ["reload-script"],
                    "coercionScript": [_body(description)],
                },
            )
        ]
    )
    rule = (
        f"dn: cn=run-reload-script,{DEVICE}\nobjectClass: coercionRule\ncn: run-reload-script\n"
        "coercionDIMSE: C_STORE_RQ\ndicomTransferRole: SCP\ncoercionURI: script:reload-script\n"
    )
    return f"{script}\n{rule}"


def _set_script(directory: Directory, description: str) -> None:
    """Change the tag script's body (the entry added by :func:`_script_ldif`)."""
    if directory.slapd is not None:
        directory.replace(SCRIPT_DN, "coercionScript", _body(description))
    else:
        folder = Path(directory.open().origin)
        (folder / "20-added.ldif").write_text(_script_ldif(description), encoding="utf-8")


def _fix_bad_rule(directory: Directory) -> None:
    """Give the broken rule a valid URI (wherever it was added)."""
    if directory.slapd is not None:
        directory.replace(BAD_RULE_DN, "coercionURI", "deidentify:RetainUIDsOption")
        return
    for path in Path(directory.open().origin).glob("*.ldif"):
        text = path.read_text(encoding="utf-8")
        if "NoSuchOption" in text:
            path.write_text(text.replace("NoSuchOption", "RetainUIDsOption"), encoding="utf-8")


def test_a_rejected_change_leaves_the_serving_rules_exactly_as_they_were(
    directory: Directory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An invalid change that also alters the script and the store: old rules, old store."""
    directory.add(_script_ldif("Before"))
    watcher = ConfigurationWatcher(directory.open(), ActionEnv(SECRET), "coercion", interval=60)
    engine = Engine(watcher.load_initial().rules)
    try:
        # Every intermediate state is invalid: the broken rule comes first.
        directory.add(
            f"dn: {BAD_RULE_DN}\nobjectClass: coercionRule\ncn: broken-rule\n"
            "coercionDIMSE: C_STORE_RQ\ndicomTransferRole: SCP\n"
            "coercionURI: deidentify:NoSuchOption\n"
        )
        directory.replace(DEVICE, "coercionStoreURL", f"sqlite:///{tmp_path / 'other.db'}")
        _set_script(directory, "After")
        with caplog.at_level(logging.ERROR, logger="coercion.directory.watch"):
            assert watcher.check() is False
        assert BAD_RULE_DN in str(watcher.last_error)
        rejected = [r.getMessage() for r in caplog.records]
        assert any("configuration change rejected" in m and BAD_RULE_DN in m for m in rejected)
        # The serving rules run first now, after the rejected reload: the old script, the old
        # store (its counter), nothing in the store the rejected change named.
        ds = make_dataset()
        engine.apply(ds, STORE)
        assert ds.StudyDescription == "Before"
        assert ds.PatientID == "R-001"
        assert (tmp_path / "store.db").exists()
        assert not (tmp_path / "other.db").exists()
        # Fixed, the change applies whole.
        _fix_bad_rule(directory)
        assert watcher.check() is True
        assert watcher.current is not None
        engine.replace_rules(watcher.current.rules)
        ds = make_dataset()
        engine.apply(ds, STORE)
        assert ds.StudyDescription == "After"
        assert ds.PatientID == "R-001"  # a fresh counter in the new store
        assert (tmp_path / "other.db").exists()
    finally:
        watcher.stop()


def test_each_configuration_has_its_own_environment_closed_after_the_swap(
    directory: Directory,
) -> None:
    """A reload builds in a new ActionEnv; the replaced one is closed after the grace."""
    template = ActionEnv(SECRET)
    watcher = ConfigurationWatcher(
        directory.open(), template, "coercion", interval=60, close_grace=0.0
    )
    first = watcher.load_initial()
    try:
        assert first.env is not None and first.env is not template
        closed: list[bool] = []
        first.env.cache["probe"] = type("Probe", (), {"close": lambda self: closed.append(True)})()
        directory.replace(DEVICE, "coercionPollInterval", "3")
        assert watcher.check() is True
        assert watcher.current is not None and watcher.current.env is not first.env
        assert template.scopes == {} and template.scripts == {}  # the template is never filled
        wait_until(lambda: closed == [True], "the old source to be closed")
    finally:
        watcher.stop()


def _slapd_args(server: Slapd, tmp_path: Path) -> list[str]:
    password = tmp_path / "ldap-password"
    password.write_text(server.password, encoding="utf-8")
    return ["--ldap", server.url, "--bind-dn", server.admin_dn, "--password-file", str(password)]


def test_serve_starts_from_the_snapshot_while_slapd_is_down_and_catches_up(
    slapd: Slapd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, serve: Start
) -> None:
    """Written at start (0600); used, loudly, when slapd is down; slapd back: reloaded."""
    ldap_directory(slapd, tmp_path, monkeypatch)
    args = [*_slapd_args(slapd, tmp_path), "--poll-interval", "0.2"]
    first = serve(None, *args)
    snapshot = first.data / "directory-snapshot.json"
    assert stat.S_IMODE(snapshot.stat().st_mode) == 0o600  # written at start, not on a change
    kept = [entry["dn"] for entry in json.loads(snapshot.read_text(encoding="utf-8"))["entries"]]
    assert DEVICE in kept
    assert not any(dn.startswith("dc=") for dn in kept)  # only the entries coercion reads
    first.process.terminate()
    assert first.process.wait(20) == 0
    slapd.stop()
    third = serve(None, *args, "--data", str(first.data))  # the last --data counts
    assert "STARTING FROM THE SNAPSHOT" in third.text()
    wait_until(  # the banner follows the log line
        lambda: "rules from snapshot" in third.text(), "the node to serve the snapshot"
    )
    slapd.start()
    wait_until(
        lambda: "configuration reloaded from ldap://" in third.text(),
        "a reload from slapd",
        timeout=20,
        detail=third.text,
    )


def test_an_invalid_entry_at_start_falls_back_to_the_snapshot(
    directory: Directory, tmp_path: Path
) -> None:
    """Invalid entries at start: logged, the snapshot serves, the fix is picked up."""
    snapshot = tmp_path / "snapshot.json"
    first = ConfigurationWatcher(directory.open(), ActionEnv(SECRET), "coercion", snapshot=snapshot)
    first.load_initial()
    first.stop()
    directory.add(
        f"dn: {BAD_RULE_DN}\nobjectClass: coercionRule\ncn: broken-rule\n"
        "coercionDIMSE: C_STORE_RQ\ndicomTransferRole: SCP\ncoercionURI: deidentify:NoSuchOption\n"
    )
    absent = ConfigurationWatcher(
        directory.open(), ActionEnv(SECRET), "coercion", snapshot=tmp_path / "absent.json"
    )
    with pytest.raises(ConfigError, match=BAD_RULE_DN):
        absent.load_initial()
    absent.stop()
    later = ConfigurationWatcher(directory.open(), ActionEnv(SECRET), "coercion", snapshot=snapshot)
    try:
        configuration = later.load_initial()
        assert configuration.origin.startswith("snapshot")
        assert later.from_snapshot
        assert BAD_RULE_DN in str(later.last_error)
        assert later.check() is False  # the same invalid state is not reloaded every poll
        _fix_bad_rule(directory)
        assert later.check() is True
        assert later.current is not None and not later.current.origin.startswith("snapshot")
        assert any(r.name == "broken-rule" for r in later.current.rules.rules)
    finally:
        later.stop()


def test_a_wrong_bind_password_is_invalid_credentials(slapd: Slapd, tmp_path: Path) -> None:
    """A refused bind: ConfigError 'invalid credentials', exit 2, never 'cannot connect'."""
    wrong = tmp_path / "wrong-password"
    wrong.write_text("not-the-password", encoding="utf-8")
    source = LdapDirectory(LdapSettings(slapd.url, slapd.admin_dn, wrong))
    with pytest.raises(ConfigError, match="invalid credentials") as caught:
        source.entries()
    assert caught.value.exit_code == 2
    assert "not-the-password" not in str(caught.value)
    source.close()
    args = ["--ldap", slapd.url, "--bind-dn", slapd.admin_dn, "--password-file", str(wrong)]
    result = coercion("serve", "--port", "0", "--data", str(tmp_path / "data"), *args)
    assert result.returncode == 2, result.stderr
    assert "invalid credentials" in result.stderr
    assert "cannot connect" not in result.stderr


def test_the_poll_interval_follows_the_directory(
    directory: Directory, caplog: pytest.LogCaptureFixture
) -> None:
    """coercionPollInterval changed in the directory: the watcher's interval follows it."""
    watcher = ConfigurationWatcher(directory.open(), ActionEnv(SECRET), "coercion")
    watcher.load_initial()
    assert watcher.interval == 2.0
    watcher.start()
    try:
        directory.replace(DEVICE, "coercionPollInterval", "1")
        with caplog.at_level(logging.INFO, logger="coercion.directory.watch"):
            wait_until(lambda: watcher.interval == 1.0, "the poll interval to become 1 s")
        assert any("poll interval: 1 s" in r.getMessage() for r in caplog.records)
    finally:
        watcher.stop()
