"""The directory, run twice: on the embedded directory and on a real slapd.

Loading, validation errors naming DN and attribute, hot reload within seconds,
rejected changes, slapd stopped and restarted, the snapshot, the
modifyTimestamp fallback.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from coercion.directory.config import load_configuration
from coercion.directory.watch import ConfigurationWatcher
from coercion.engine import ActionEnv, Dimse, Engine, EventContext, Role
from coercion.errors import ConfigError, DirectoryUnavailableError
from tests.directories import Directory, ldap_directory
from tests.helpers import DEVICE, SECRET, make_dataset, wait_until
from tests.slapd import Slapd

pytestmark = pytest.mark.integration

RESEARCH_RULE = f"cn=deidentify-research-store,dicomAETitle=RESEARCH,{DEVICE}"
STORE_TO_RESEARCH = EventContext(Dimse.C_STORE_RQ, Role.SCP, "CT01", "RESEARCH")


def _load(directory: Directory) -> object:
    source = directory.open()
    try:
        return load_configuration(source, ActionEnv(SECRET))
    finally:
        source.close()


def test_default_configuration_loads_the_same_on_both(directory: Directory) -> None:
    source = directory.open()
    configuration = load_configuration(source, ActionEnv(SECRET))
    source.close()
    assert configuration.device.name == "coercion"
    assert sorted(ae.title for ae in configuration.device.aes) == ["COERCION", "RESEARCH"]
    assert configuration.device.aes[0].port == 11112
    assert configuration.known_ae_titles() == {"CT01", "RESEARCH_MR1", "RIS"}
    assert [(r.name, r.ae_title, r.priority) for r in configuration.rules.rules] == [
        ("deidentify-research-store", "RESEARCH", 10),
        ("deidentify-research-modality-worklist", None, 5),
        ("deidentify-research-mpps", None, 5),
    ]
    ds = make_dataset()
    outcome = Engine(configuration.rules).apply(ds, STORE_TO_RESEARCH)
    assert [a.rule.name for a in outcome.applied] == ["deidentify-research-store"]
    assert outcome.dataset.PatientName != "DOE^JANE^Q"


@pytest.mark.parametrize(
    ("attribute", "value", "message"),
    [
        ("coercionDIMSE", "C_STORE_RSP", r"attribute coercionDIMSE: 'C_STORE_RSP' is not one of"),
        ("coercionURI", "deidentify:RetainUIDOption", r"attribute coercionURI: .*did you mean"),
        ("coercionPriority", "high", None),  # slapd refuses it; the embedded load names it
    ],
)
def test_bad_entries_are_named_by_dn_and_attribute(
    directory: Directory, attribute: str, value: str, message: str | None
) -> None:
    if message is None:
        if directory.slapd is not None:
            with pytest.raises(Exception, match="Invalid syntax"):
                directory.replace(RESEARCH_RULE, attribute, value)
            return
        message = r"attribute coercionPriority: 'high' is not an integer"
    directory.replace(RESEARCH_RULE, attribute, value)
    with pytest.raises(ConfigError, match=message) as caught:
        _load(directory)
    assert RESEARCH_RULE in str(caught.value)


def _watch(directory: Directory, tmp_path: Path) -> tuple[ConfigurationWatcher, Engine]:
    watcher = ConfigurationWatcher(
        directory.open(),
        ActionEnv(SECRET),
        "coercion",
        interval=0.2,
        snapshot=tmp_path / "snapshot.json",
    )
    configuration = watcher.load_initial()
    engine = Engine(configuration.rules)
    watcher.on_change = lambda c: engine.replace_rules(c.rules)
    watcher.start()
    return watcher, engine


def _research_applies(engine: Engine) -> bool:
    return bool(engine.apply(make_dataset(), STORE_TO_RESEARCH).applied)


def test_a_changed_rule_applies_within_five_seconds(directory: Directory, tmp_path: Path) -> None:
    watcher, engine = _watch(directory, tmp_path)
    try:
        assert _research_applies(engine)
        directory.replace(RESEARCH_RULE, "coercionDIMSE", "C_FIND_RQ")
        wait_until(lambda: not _research_applies(engine), "the research rule to stop applying")
        directory.replace(RESEARCH_RULE, "coercionDIMSE", "C_STORE_RQ")
        wait_until(lambda: _research_applies(engine), "the research rule to apply again")
    finally:
        watcher.stop()


def test_an_invalid_change_is_rejected_and_old_rules_keep_serving(
    directory: Directory, tmp_path: Path
) -> None:
    watcher, engine = _watch(directory, tmp_path)
    try:
        directory.replace(RESEARCH_RULE, "coercionURI", "deidentify:NoSuchOption")
        wait_until(lambda: watcher.last_error is not None, "the bad change to be rejected")
        assert RESEARCH_RULE in str(watcher.last_error)
        assert "coercionURI" in str(watcher.last_error)
        assert _research_applies(engine)  # the previous rules still apply
        directory.replace(RESEARCH_RULE, "coercionURI", "deidentify:RetainUIDsOption")
        wait_until(lambda: watcher.last_error is None, "the fixed change to load")
        rules = engine.rules.rules
        assert any(r.uri == "deidentify:RetainUIDsOption" for r in rules)
    finally:
        watcher.stop()


def test_slapd_stopped_and_restarted_the_engine_keeps_serving(
    slapd: Slapd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = ldap_directory(slapd, tmp_path, monkeypatch)
    watcher, engine = _watch(directory, tmp_path)
    try:
        slapd.stop()
        with pytest.raises(DirectoryUnavailableError, match=slapd.url):
            watcher.check()
        assert _research_applies(engine)  # still serving from the loaded rules
        slapd.start()
        directory.replace(RESEARCH_RULE, "coercionDIMSE", "C_FIND_RQ")
        wait_until(
            lambda: not _research_applies(engine), "the research rule to stop applying", timeout=10
        )
    finally:
        watcher.stop()


def test_start_while_unreachable_uses_the_snapshot_or_fails_clearly(
    slapd: Slapd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = ldap_directory(slapd, tmp_path, monkeypatch)
    snapshot = tmp_path / "snapshot.json"
    first = ConfigurationWatcher(directory.open(), ActionEnv(SECRET), "coercion", snapshot=snapshot)
    first.load_initial()
    first.stop()
    assert snapshot.exists()
    slapd.stop()
    later = ConfigurationWatcher(directory.open(), ActionEnv(SECRET), "coercion", snapshot=snapshot)
    configuration = later.load_initial()
    later.stop()
    assert configuration.origin.startswith("snapshot")
    assert len(configuration.rules) == 3
    none = ConfigurationWatcher(
        directory.open(), ActionEnv(SECRET), "coercion", snapshot=tmp_path / "absent.json"
    )
    with pytest.raises(DirectoryUnavailableError, match="no snapshot"):
        none.load_initial()
    none.stop()


def test_without_syncprov_changes_are_seen_by_modify_timestamp(
    slapd_no_syncprov: Slapd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = ldap_directory(slapd_no_syncprov, tmp_path, monkeypatch)
    source = directory.open()
    before = source.fingerprint()
    assert before.startswith("ts:")
    newest = before.split(":")[1]  # modifyTimestamp, to the second: 20240301101500Z
    wait_until(
        lambda: time.strftime("%Y%m%d%H%M%SZ", time.gmtime()) > newest,
        "the clock to pass the newest modifyTimestamp",
        timeout=5,
    )
    directory.replace(RESEARCH_RULE, "coercionPriority", "11")
    assert source.fingerprint() != before
    source.close()
