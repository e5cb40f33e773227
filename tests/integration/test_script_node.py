"""``script:NAME`` in ``coercion serve``: on arrival (role SCP) and on forwarding (role SCU).

The node runs as a subprocess at debug level (``-vv``) with a configuration
folder holding a tag script; dcmtk's storescu sends, a pynetdicom storage SCP
stands in for a forwarding destination. Counters and fake values are kept in
the store the device names.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from io import BytesIO
from pathlib import Path

import pytest
from pydicom import dcmread, dcmwrite
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from coercion.script.runner import fake_name
from tests.directories import store_in
from tests.helpers import (
    DEVICE,
    Served,
    Start,
    config_dir,
    dcmtk,
    forward_rule,
    free_port,
    make_dataset,
    receive_at_archive,
    remote_device,
    stored,
)

pytestmark = pytest.mark.integration

MARKER = "QZXMARKER"
SCRIPT = {
    "general": {
        "preset": "default",
        "(0010,0010)": "set(@fake_name@)",
        "(0010,0020)": "SUBJ-__COUNTER-001__",
    },
    "trial": {"name": "Trial", "(0008,1030)": "set(TRIAL STUDY)"},
    "partner": {"(0010,0010)": "set(PARTNER^SIDE)"},
}


def script_config(tmp_path: Path, rules: str, store: bool = True) -> Path:
    """The default configuration plus the node AE AZ_TRIAL, the script and *rules*.

    With *store* the device names the store, tmp_path/store.db, for counters and fake values.
    """
    extra = f"""dn: dicomAETitle=AZ_TRIAL,{DEVICE}
objectClass: dicomNetworkAE
dicomAETitle: AZ_TRIAL
dicomNetworkConnectionReference: cn=dicom,{DEVICE}
dicomAssociationInitiator: TRUE
dicomAssociationAcceptor: TRUE

dn: cn=trial-script,{DEVICE}
objectClass: coercionTagScript
cn: trial-script
coercionScript: {json.dumps(SCRIPT)}

{rules}"""
    folder = config_dir(tmp_path, extra)
    if store:
        store_in(folder, tmp_path / "store.db")
    return folder


def rule(name: str, role: str, parent: str = DEVICE) -> str:
    """LDIF of a ``script:trial-script`` rule on C_STORE_RQ in *role* under *parent*."""
    return f"""dn: cn={name},{parent}
objectClass: coercionRule
cn: {name}
coercionDIMSE: C_STORE_RQ
dicomTransferRole: {role}
coercionURI: script:trial-script
"""


def patient_file(folder: Path, name: str, patient: str, study: int, instance: int) -> Path:
    """A CT object of patient *patient* (the marker in its name and ID) in study *study*."""
    ds = make_dataset(patient=f"{MARKER}^{patient}", patient_id=f"{MARKER}-{patient}")
    ds.StudyInstanceUID = generate_uid(entropy_srcs=["script-node", str(study)])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=["script-node", str(study), "series"])
    ds.SOPInstanceUID = generate_uid(entropy_srcs=["script-node", str(study), str(instance)])
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    dcmwrite(path, ds, enforce_file_format=True)
    return path


def store_to(node: Served, called: str, *files: Path) -> None:
    """storescu from CT01 to *called*: *files* over one association, in order."""
    sent = dcmtk("storescu", "-aet", "CT01", "-aec", called, "127.0.0.1", node.port, *files)
    assert sent.returncode == 0, sent.stderr + node.text()


def audit_text(node: Served) -> str:
    """The node's audit trail, all files."""
    return "".join(p.read_text(encoding="utf-8") for p in (node.data / "audit").glob("*.jsonl"))


def encoded(ds: Dataset) -> bytes:
    """*ds* encoded (Explicit VR Little Endian), for a search of every byte."""
    out = BytesIO()
    dcmwrite(out, ds, implicit_vr=False, little_endian=True)
    return out.getvalue()


def test_script_on_arrival_numbers_patients_and_leaves_no_marker(
    serve: Start, tmp_path: Path
) -> None:
    """Objects sent to AZ_TRIAL are stored scripted: SUBJ-nnn per patient, fake names, no PHI."""
    config = script_config(
        tmp_path, rule("script-on-arrival", "SCP", f"dicomAETitle=AZ_TRIAL,{DEVICE}")
    )
    node = serve(config)
    folder = tmp_path / "in"
    first = patient_file(folder, "a1.dcm", "ALICE", 1, 1)
    second = patient_file(folder, "b1.dcm", "BOB", 2, 1)
    again = patient_file(folder, "a2.dcm", "ALICE", 1, 2)
    store_to(node, "AZ_TRIAL", first, second, again)

    outputs = [dcmread(p) for p in stored(node.data)]
    assert len(outputs) == 3, node.text()
    names: dict[str, set[str]] = {}
    for ds in outputs:
        names.setdefault(str(ds.PatientID), set()).add(str(ds.PatientName))
    assert sorted(str(ds.PatientID) for ds in outputs) == ["SUBJ-001", "SUBJ-001", "SUBJ-002"]
    assert names == {"SUBJ-001": {fake_name(1)}, "SUBJ-002": {fake_name(2)}}
    assert {ds.StudyDescription for ds in outputs} == {"TRIAL STUDY"}  # the AZ_TRIAL section
    assert all(ds.PatientBirthDate == "" for ds in outputs)  # preset default: Z
    studies = {str(ds.PatientID): str(ds.StudyInstanceUID) for ds in outputs}
    assert len(set(studies.values())) == 2  # one new Study UID per patient's study
    assert (tmp_path / "store.db").is_file()  # the device's store holds the counters

    log = node.text()
    assert "DEBUG coercion.script.action: script:trial-script project trial" in log
    audit = audit_text(node)
    assert "script-on-arrival" in audit
    for path in stored(node.data):
        assert MARKER.encode() not in path.read_bytes()
    for text in (log, audit):
        assert MARKER not in text


def test_script_on_forwarding_runs_for_the_destination_only(serve: Start, tmp_path: Path) -> None:
    """A forwarded copy is scripted for the destination's section; the stored object is not."""
    port = free_port()
    forward = forward_rule("AZ_PARTNER", "forward-to-partner")
    rules = remote_device("partner", "AZ_PARTNER", port) + "\n" + forward + "\n"
    node = serve(script_config(tmp_path, rules + rule("script-on-forward", "SCU")))
    source = patient_file(tmp_path / "in", "c1.dcm", "CAROL", 3, 1)
    with ThreadPoolExecutor(1) as pool:
        arriving = pool.submit(receive_at_archive, port, 1, None, "AZ_PARTNER")
        store_to(node, "COERCION", source)
        received = arriving.result()

    assert len(received) == 1, node.text()
    [copy] = received
    assert copy.PatientID == "SUBJ-001" and copy.PatientName == "PARTNER^SIDE"
    assert MARKER.encode() not in encoded(copy)
    [path] = stored(node.data)
    kept, original = dcmread(path), dcmread(source)
    assert kept.PatientID == original.PatientID and kept.PatientName == original.PatientName
    assert MARKER.encode() in path.read_bytes()  # stored as received: the search finds it
    log = node.text()
    assert "script:trial-script project partner" in log
    audit = audit_text(node)
    assert "script-on-forward" in audit
    for text in (log, audit):
        assert MARKER not in text


def test_default_store_is_in_the_data_folder(serve: Start, tmp_path: Path) -> None:
    """Without coercionStoreURL the counters are kept in DATA/store.db, DATA given by --data."""
    on_arrival = rule("script-on-arrival", "SCP", f"dicomAETitle=AZ_TRIAL,{DEVICE}")
    node = serve(script_config(tmp_path, on_arrival, store=False))
    store_to(node, "AZ_TRIAL", patient_file(tmp_path / "in", "d1.dcm", "DAVE", 4, 1))
    assert [str(dcmread(p).PatientID) for p in stored(node.data)] == ["SUBJ-001"]
    assert (node.data / "store.db").is_file()
