"""Everything the node writes is readable by its owner only, whatever the umask; writes are durable.

The node runs under umask 000, where a file created without an explicit mode
would be 0666: stored objects (a pass-through copy holds all the PHI), the
forwarding queue, MPPS records, the audit trail, the SQLite store and its
-wal/-shm files must still be 0600 and the folders 0700.
"""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from pydicom import dcmwrite
from pydicom.uid import generate_uid

from coercion.directory.sources import EmbeddedDirectory
from coercion.directory.watch import ConfigurationWatcher
from coercion.engine import ActionEnv
from coercion.net.node import Node, NodeSettings
from tests.helpers import (
    DEVICE,
    SECRET,
    Start,
    config_dir,
    dcmtk,
    forward_rule,
    free_port,
    make_dataset,
    remote_device,
    report_mpps,
    stored,
    storescu,
)

pytestmark = pytest.mark.integration


#: A forward rule to a destination that is down (objects stay queued), and a
#: pseudonymisation scope whose store is the default SQLite file in the data folder.
EXTRA = (
    forward_rule("ARCHIVE")
    + f"""
dn: cn=TRIAL_A,{DEVICE}
objectClass: coercionPseudonymScope
cn: TRIAL_A
coercionParam: id_template=TA-{{hash}}

dn: cn=pseudonymize-trial-a,{DEVICE}
objectClass: coercionRule
cn: pseudonymize-trial-a
coercionDIMSE: C_STORE_RQ
dicomTransferRole: SCP
coercionCondition: SendingApplicationEntityTitle=TRIALCT
coercionURI: pseudonymize:TRIAL_A
"""
)


def ct_file(path: Path, index: int) -> Path:
    """A synthetic CT object with its own SOP Instance UID."""
    ds = make_dataset()
    ds.SOPInstanceUID = generate_uid(prefix="1.2.826.0.1.3680043.99.12.", entropy_srcs=[str(index)])
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    path.parent.mkdir(parents=True, exist_ok=True)
    dcmwrite(path, ds, enforce_file_format=True)
    return path


def test_node_files_are_private_under_umask_000(
    serve: Start, tmp_path: Path, loose_umask: None
) -> None:
    """Objects, queue, MPPS, audit, store and its -wal/-shm are 0600, the folders 0700."""
    extra = remote_device("archive", "ARCHIVE", free_port()) + EXTRA
    node = serve(config_dir(tmp_path, extra=extra))
    for calling, index in (("CT01", 1), ("TRIALCT", 2)):
        sent = dcmtk(
            "storescu", "-aet", calling, "-aec", "COERCION", "127.0.0.1", node.port,
            ct_file(tmp_path / "in" / f"{index}.dcm", index),
        )  # fmt: skip
        assert sent.returncode == 0, sent.stderr
    report_mpps(node.port, generate_uid(), calling="MR01", complete=False, Modality="MR")
    files = [p for p in node.data.rglob("*") if p.is_file()]
    names = {p.name for p in files}
    assert {"store.db", "store.db-wal", "store.db-shm"} <= names, names  # the node still runs
    assert len(stored(node.data)) == 2
    assert list((node.data / "queue" / "ARCHIVE").glob("*.dcm"))
    assert list((node.data / "mpps").glob("*.dcm"))
    assert list((node.data / "audit").glob("*.jsonl"))
    loose = {str(p.relative_to(node.data)): oct(stat.S_IMODE(p.stat().st_mode)) for p in files}
    assert {k: v for k, v in loose.items() if v != "0o600"} == {}
    folders = [node.data, *(p for p in node.data.rglob("*") if p.is_dir())]
    assert {str(p): oct(stat.S_IMODE(p.stat().st_mode)) for p in folders} == {
        str(p): "0o700" for p in folders
    }


@pytest.mark.parametrize(("setting", "synced"), [("", True), ("FALSE", False)])
# The forwarder's tries to the down ARCHIVE: pynetdicom leaves the refused socket to the GC.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_sync_writes_follow_the_device_setting(
    tmp_path: Path, fsynced: list[str], setting: str, synced: bool
) -> None:
    """A stored object and its queue entry are fsynced before success, unless FALSE."""
    config = config_dir(tmp_path, extra=remote_device("archive", "ARCHIVE", free_port()) + EXTRA)
    if setting:
        path = config / "10-default-config.ldif"
        text = path.read_text(encoding="utf-8").replace(
            "coercionPollInterval: 2", f"coercionPollInterval: 2\ncoercionSyncWrites: {setting}"
        )
        path.write_text(text, encoding="utf-8")
    watcher = ConfigurationWatcher(EmbeddedDirectory(config), ActionEnv(SECRET), "coercion")
    data = tmp_path / "data"
    node = Node(watcher, NodeSettings(port=0, data=data, secret=SECRET))
    assert node.sync_writes is synced
    del fsynced[:]  # what storing syncs, not what setting the node up did
    _host, port = node.start()
    try:
        source = ct_file(tmp_path / "in" / "x.dcm", 7)
        storescu(port, source)
    finally:
        node.stop()
    [kept] = stored(data)
    object_syncs = [p for p in fsynced if Path(p).parent == kept.parent]
    queue = str(data / "queue" / "ARCHIVE")
    assert any((data / "queue" / "ARCHIVE").glob("*.dcm"))  # the destination is down: queued
    if synced:
        assert object_syncs and str(kept.parent) in fsynced, fsynced
        assert queue in fsynced and str(data / "queue") in fsynced, fsynced
    else:
        assert object_syncs == [] and str(kept.parent) not in fsynced, fsynced
        assert queue not in fsynced, fsynced
