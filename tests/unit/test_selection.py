"""Which entries a node reads, on entries held in memory (the embedded directory's tree)."""

from __future__ import annotations

import pytest

from coercion.directory.config import build_configuration
from coercion.directory.ldifio import Entry
from coercion.directory.selection import MemoryTree, Scope, read_node_entries
from coercion.engine import ActionEnv
from coercion.errors import ConfigError
from tests.helpers import SECRET

DEVICES = "cn=Devices,dc=x"


def _device(name: str, parent: str = DEVICES) -> Entry:
    return (
        f"dicomDeviceName={name},{parent}",
        {"objectClass": ["dicomDevice"], "dicomDeviceName": [name], "dicomInstalled": ["TRUE"]},
    )


def _tree(*entries: Entry) -> MemoryTree:
    root: list[Entry] = [
        ("dc=x", {"objectClass": ["dcObject"], "dc": ["x"]}),
        (DEVICES, {"objectClass": ["dicomDevicesRoot"], "cn": ["Devices"]}),
    ]
    return MemoryTree([*root, *entries], "test")


def test_without_the_device_the_names_of_all_devices_are_read() -> None:
    """The error then lists the devices there are."""
    tree = _tree(_device("alpha"), _device("beta"))
    entries = read_node_entries(tree, tree.suffixes, "coercion")
    assert [dn for dn, _ in entries] == [
        f"dicomDeviceName=alpha,{DEVICES}",
        f"dicomDeviceName=beta,{DEVICES}",
    ]
    with pytest.raises(ConfigError, match=r"no device 'coercion' \(devices found: alpha, beta\)"):
        build_configuration(entries, "test", ActionEnv(SECRET))


def test_two_devices_of_the_node_name_are_refused() -> None:
    """Both DNs are named; the node would not know which is its own."""
    tree = _tree(
        _device("coercion"),
        ("cn=Other,dc=x", {"cn": ["Other"]}),
        _device("coercion", "cn=Other,dc=x"),
    )
    with pytest.raises(
        ConfigError,
        match=r"dicomDeviceName=coercion,cn=Devices,dc=x; .*two devices named 'coercion'",
    ):
        read_node_entries(tree, tree.suffixes, "coercion")


def test_the_device_name_matches_exactly() -> None:
    """A server matches dicomDeviceName ignoring case; the node's name does not."""
    tree = _tree(_device("Coercion"))
    assert [dn for dn, _ in read_node_entries(tree, tree.suffixes, "coercion")] == [
        f"dicomDeviceName=Coercion,{DEVICES}"
    ]  # the list of devices, for the error: not the node's entries


def test_scopes_of_the_memory_tree() -> None:
    """BASE, LEVEL and SUBTREE as a server gives them; an absent base gives nothing."""
    tree = _tree(_device("a"), (f"cn=dicom,dicomDeviceName=a,{DEVICES}", {"cn": ["dicom"]}))
    assert [dn for dn, _ in tree.search(DEVICES, Scope.BASE)] == [DEVICES]
    assert [dn for dn, _ in tree.search(DEVICES, Scope.LEVEL)] == [f"dicomDeviceName=a,{DEVICES}"]
    assert len(tree.search("dc=x", Scope.SUBTREE)) == 4
    assert tree.search("cn=absent,dc=x", Scope.SUBTREE) == []
    assert tree.search(DEVICES, Scope.SUBTREE, ("dicomDevice",)) == [_device("a")]


def test_an_entry_given_twice_is_refused() -> None:
    """Also when its DN is written differently (escapes, case)."""
    with pytest.raises(ConfigError, match=r"test: entry cn=A\\2Cb,dc=x appears twice"):
        _tree(("cn=a\\,b,dc=x", {"cn": ["a,b"]}), ("cn=A\\2Cb,dc=x", {"cn": ["a,b"]}))


def _node_with_rule(uri: str, *params: str) -> MemoryTree:
    """The node (device coercion) with one rule, and three other devices with an AE each."""
    node = f"dicomDeviceName=coercion,{DEVICES}"
    rule: Entry = (
        f"cn=rule,{node}",
        {"objectClass": ["coercionRule"], "cn": ["rule"], "coercionURI": [uri]}
        | ({"coercionParam": list(params)} if params else {}),
    )
    others = [
        entry
        for name in ("ris", "modality", "archive")
        for entry in (
            _device(name),
            (
                f"dicomAETitle={name.upper()},dicomDeviceName={name},{DEVICES}",
                {"objectClass": ["dicomNetworkAE"], "dicomAETitle": [name.upper()]},
            ),
        )
    ]
    return _tree(_device("coercion"), rule, *others)


def _devices_read(tree: MemoryTree) -> list[str]:
    entries = read_node_entries(tree, tree.suffixes, "coercion")
    return [dn.split(",")[0] for dn, attrs in entries if "dicomDevice" in attrs["objectClass"]]


@pytest.mark.parametrize(
    ("uri", "params", "devices"),
    [
        ("deidentify:", (), ["dicomDeviceName=coercion"]),
        ("merge-mwl:", ("mwl-scp=RIS",), ["dicomDeviceName=coercion", "dicomDeviceName=ris"]),
        (
            "sup-from-dev:",
            ("device=modality",),
            ["dicomDeviceName=coercion", "dicomDeviceName=modality"],
        ),
        (
            "sup-from-dev:",
            (),
            [
                "dicomDeviceName=archive",
                "dicomDeviceName=coercion",
                "dicomDeviceName=modality",
                "dicomDeviceName=ris",
            ],
        ),
        (
            "merge-mwl:",
            ("mwl-scp=NOSUCH",),
            [
                "dicomDeviceName=archive",
                "dicomDeviceName=coercion",
                "dicomDeviceName=modality",
                "dicomDeviceName=ris",
            ],
        ),
    ],
)
def test_devices_a_rule_names_are_read(
    uri: str, params: tuple[str, ...], devices: list[str]
) -> None:
    """mwl-scp= names an AE title, device= a device; sup-from-dev: alone any calling device;
    a name not found makes every device read (for the error's suggestion)."""
    assert _devices_read(_node_with_rule(uri, *params)) == devices
