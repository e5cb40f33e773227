"""The directory, run twice: on the embedded directory and on a real slapd.

Loading, validation errors naming DN and attribute, hot reload within seconds,
rejected changes, slapd stopped and restarted, the snapshot, change detection
without syncprov; the node reads only its own entries and the devices it
references, and a change anywhere else does not reload it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from coercion.directory.config import load_configuration
from coercion.directory.watch import ConfigurationWatcher
from coercion.engine import ActionEnv, Dimse, Engine, EventContext, Role
from coercion.errors import ConfigError, DirectoryUnavailableError
from tests.directories import Directory, ldap_directory
from tests.helpers import BASE, DEVICE, SECRET, make_dataset, wait_until
from tests.slapd import Slapd

pytestmark = pytest.mark.integration

RESEARCH_RULE = f"cn=deidentify-research-store,dicomAETitle=RESEARCH,{DEVICE}"
STORE_TO_RESEARCH = EventContext(Dimse.C_STORE_RQ, Role.SCP, "CT01", "RESEARCH")


#: What the node reads of the default configuration, in order (parents first).
NODE_ENTRIES = [
    BASE,
    f"cn=DICOM Configuration,{BASE}",
    f"cn=Devices,cn=DICOM Configuration,{BASE}",
    DEVICE,
    f"cn=deidentify-research-modality-worklist,{DEVICE}",
    f"cn=deidentify-research-mpps,{DEVICE}",
    f"cn=dicom,{DEVICE}",
    f"dicomAETitle=COERCION,{DEVICE}",
    f"dicomAETitle=RESEARCH,{DEVICE}",
    RESEARCH_RULE,
]


def _load(directory: Directory) -> object:
    source = directory.open()
    try:
        return load_configuration(source, ActionEnv(SECRET))
    finally:
        source.close()


def test_default_configuration_loads_the_same_on_both(directory: Directory) -> None:
    """The node's device, AEs and rules; the path up to the suffix; no device it does not use."""
    source = directory.open()
    configuration = load_configuration(source, ActionEnv(SECRET))
    source.close()
    assert configuration.device.name == "coercion"
    assert sorted(ae.title for ae in configuration.device.aes) == ["COERCION", "RESEARCH"]
    assert configuration.device.aes[0].port == 11112
    assert [dn for dn, _ in configuration.raw] == NODE_ENTRIES
    assert configuration.known_ae_titles() == set()  # no forward rule, no upstream, no restriction
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
            lambda: not _research_applies(engine), "the research rule to stop applying", timeout=30
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


def test_without_syncprov_changes_are_seen_by_their_content(
    slapd_no_syncprov: Slapd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No contextCSN: the node's entries are read at each check; a change shows at once."""
    directory = ldap_directory(slapd_no_syncprov, tmp_path, monkeypatch)
    source = directory.open()
    try:
        before = source.fingerprint()
        directory.replace(f"dicomDeviceName=ris,{DEVICES}", "dicomDescription", "elsewhere")
        assert source.fingerprint() == before
        directory.replace(RESEARCH_RULE, "coercionPriority", "11")
        assert source.fingerprint() != before
    finally:
        source.close()


# -- what the node reads: its own entries and the devices it references ---------------------

DEVICES = f"cn=Devices,cn=DICOM Configuration,{BASE}"


def unrelated_devices(count: int) -> str:
    """LDIF of *count* devices of another product: device, connection, AE, and a child of it."""
    blocks = []
    for number in range(count):
        device = f"dicomDeviceName=other-{number:04},{DEVICES}"
        ae = f"dicomAETitle=OTHER{number:04},{device}"
        blocks.append(
            f"dn: {device}\nobjectClass: dicomDevice\ndicomDeviceName: other-{number:04}\n"
            f"dicomInstalled: TRUE\n\n"
            f"dn: cn=dicom,{device}\nobjectClass: dicomNetworkConnection\ncn: dicom\n"
            f"dicomHostname: 10.0.{number // 250}.{number % 250}\ndicomPort: 104\n\n"
            f"dn: {ae}\nobjectClass: dicomNetworkAE\ndicomAETitle: OTHER{number:04}\n"
            f"dicomNetworkConnectionReference: cn=dicom,{device}\n"
            "dicomAssociationInitiator: TRUE\ndicomAssociationAcceptor: TRUE\n\n"
            f"dn: cn=CT Image Storage SCP,{ae}\nobjectClass: dicomTransferCapability\n"
            "cn: CT Image Storage SCP\ndicomSOPClass: 1.2.840.10008.5.1.4.1.1.2\n"
            "dicomTransferRole: SCP\ndicomTransferSyntax: 1.2.840.10008.1.2\n\n"
        )
    return "".join(blocks)


def _forward_to(destination: str) -> str:
    return (
        f"dn: cn=forward-all,dicomAETitle=COERCION,{DEVICE}\nobjectClass: coercionForwardRule\n"
        f"cn: forward-all\ncoercionDestinationAETitle: {destination}\n"
    )


def test_a_change_elsewhere_in_a_large_directory_does_not_reload(
    directory: Directory, tmp_path: Path
) -> None:
    """1,000 entries of other devices: not read; a change there is no reload, ours is."""
    directory.add(unrelated_devices(250))
    watcher = ConfigurationWatcher(directory.open(), ActionEnv(SECRET), "coercion", interval=60)
    try:
        configuration = watcher.load_initial()
        assert [dn for dn, _ in configuration.raw] == NODE_ENTRIES
        directory.replace(f"dicomDeviceName=other-0007,{DEVICES}", "dicomInstalled", "FALSE")
        assert watcher.check() is False
        assert watcher.current is configuration
        directory.replace(RESEARCH_RULE, "coercionPriority", "12")
        assert watcher.check() is True
        assert watcher.current is not None
        assert watcher.current.rules.rules[0].priority == 12
    finally:
        watcher.stop()


def test_the_devices_a_forward_rule_names_are_read_without_their_subtrees(
    directory: Directory,
) -> None:
    """A forward rule to OTHER0003: that device, its connection and AE; not the AE's children.

    A change of that device's connection reloads; a change of its AE's child does not.
    """
    directory.add(unrelated_devices(5) + "\n" + _forward_to("OTHER0003"))
    watcher = ConfigurationWatcher(directory.open(), ActionEnv(SECRET), "coercion", interval=60)
    try:
        configuration = watcher.load_initial()
        other = f"dicomDeviceName=other-0003,{DEVICES}"
        assert [dn for dn, _ in configuration.raw if dn.endswith(other)] == [
            other,
            f"cn=dicom,{other}",
            f"dicomAETitle=OTHER0003,{other}",
        ]
        assert sorted(configuration.devices) == ["coercion", "other-0003"]
        assert configuration.devices["other-0003"].aes[0].hostname == "10.0.0.3"
        assert [f.destinations for f in configuration.forward_rules] == [("OTHER0003",)]
        capability = f"cn=CT Image Storage SCP,dicomAETitle=OTHER0003,{other}"
        directory.replace(capability, "dicomTransferSyntax", "1.2.840.10008.1.2.1")
        assert watcher.check() is False
        directory.replace(f"cn=dicom,{other}", "dicomPort", "11119")
        assert watcher.check() is True
        assert watcher.current is not None
        assert watcher.current.devices["other-0003"].aes[0].port == 11119
    finally:
        watcher.stop()


def test_an_unknown_destination_is_named_with_the_closest_known_title(
    directory: Directory,
) -> None:
    """A destination no device has: every device is read, so the error suggests one."""
    directory.add(unrelated_devices(5) + "\n" + _forward_to("OTHER003"))
    message = r"'OTHER003' is not the AE title of a known device; did you mean OTHER0003\?"
    with pytest.raises(ConfigError, match=message):
        _load(directory)


def test_restricted_calling_ae_titles_read_every_device(directory: Directory) -> None:
    """coercionRestrictCallingAETitles: TRUE: every device may call, so every one is known."""
    directory.replace(DEVICE, "coercionRestrictCallingAETitles", "TRUE")
    source = directory.open()
    try:
        configuration = load_configuration(source, ActionEnv(SECRET))
    finally:
        source.close()
    assert configuration.known_ae_titles() == {"CT01", "RESEARCH_MR1", "RIS"}
