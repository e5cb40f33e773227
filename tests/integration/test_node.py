"""``coercion serve`` against real clients: dcmtk's echoscu, storescu, findscu; pynetdicom for MPPS.

The node runs as a user starts it (a subprocess), except where a test needs a
rule the shipped schemes cannot give (a rule that fails): there the node runs
in this process, still reached by storescu.
"""

from __future__ import annotations

import re
import signal
import ssl
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread, dcmwrite
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE, evt

from coercion.directory.sources import EmbeddedDirectory
from coercion.directory.watch import ConfigurationWatcher
from coercion.engine import ActionEnv, EventContext, register_scheme
from coercion.errors import CoercionError
from coercion.net.node import Node, NodeSettings
from coercion.profile import Change
from tests.helpers import (
    DEVICE,
    MPPS_CLASS,
    SECRET,
    Served,
    Start,
    config_dir,
    dcmtk,
    deidentify_outgoing,
    free_port,
    make_dataset,
    receive_at_archive,
    remote_device,
    report_mpps,
    stored,
    storescu,
    storescu_at_once,
    storescu_tls,
    tls_options,
    wait_until,
    with_tls,
)
from tests.slapd import make_tls_files

pytestmark = pytest.mark.integration

CANARY_NAME = "QZXCANARY^PHIMARKER"
CANARY_ID = "QZXCANARYID77"
WORKLIST_FIND = "1.2.840.10008.5.1.4.31"


def canary_file(path: Path, index: int = 0) -> Path:
    """A synthetic CT object carrying the PHI canary in its name and ID (and in a sequence)."""
    ds = make_dataset(patient=CANARY_NAME, patient_id=CANARY_ID)
    ds.SOPInstanceUID = generate_uid(prefix="1.2.826.0.1.3680043.99.9.", entropy_srcs=[str(index)])
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    item = Dataset()
    item.PatientID = CANARY_ID
    item.ReferencedSOPInstanceUID = ds.SOPInstanceUID
    ds.ReferencedPatientSequence = [item]
    path.parent.mkdir(parents=True, exist_ok=True)
    dcmwrite(path, ds, enforce_file_format=True)
    return path


def find(node: Served, calling: str, out: Path, query: list[str]) -> None:
    """findscu -W from *calling* to the node's COERCION AE; answers written into *out*."""
    found = dcmtk(
        "findscu",
        "-W",
        "-X",
        "-od",
        out,
        "-aet",
        calling,
        "-aec",
        "COERCION",
        "127.0.0.1",
        node.port,
        *query,
    )
    assert found.returncode == 0, found.stderr


# -- C-ECHO, association checks, shutdown ------------------------------------------------


def test_echo_and_called_ae_check_and_clean_shutdown(serve: Start) -> None:
    node = serve()
    ok = dcmtk("echoscu", "-aec", "COERCION", "127.0.0.1", node.port)
    assert ok.returncode == 0, ok.stderr
    assert dcmtk("echoscu", "-aec", "RESEARCH", "127.0.0.1", node.port).returncode == 0
    wrong = dcmtk("echoscu", "-aec", "NOTOURS", "127.0.0.1", node.port)
    assert wrong.returncode != 0
    assert "Called AE Title Not Recognized" in wrong.stderr
    node.process.send_signal(signal.SIGTERM)
    assert node.process.wait(20) == 0
    assert "stopped" in node.text()


def test_restricted_calling_ae_titles(serve: Start, tmp_path: Path) -> None:
    node = serve(config_dir(tmp_path, restrict=True))
    unknown = dcmtk("echoscu", "-aet", "STRANGER", "-aec", "COERCION", "127.0.0.1", node.port)
    assert unknown.returncode != 0
    assert "Calling AE Title Not Recognized" in unknown.stderr
    known = dcmtk("echoscu", "-aet", "CT01", "-aec", "COERCION", "127.0.0.1", node.port)
    assert known.returncode == 0, known.stderr


# -- storage --------------------------------------------------------------------------------


def test_phi_canary_through_storescu(serve: Start, tmp_path: Path) -> None:
    node = serve()
    source = canary_file(tmp_path / "in" / "canary.dcm")
    storescu(node.port, source, called="RESEARCH")
    [output] = stored(node.data)
    data = output.read_bytes()
    assert b"QZXCANARY" not in data and CANARY_ID.encode() not in data
    assert dcmread(output).PatientIdentityRemoved == "YES"
    # At debug level, neither the log nor the audit trail holds the marker.
    log = node.text()
    assert "DEBUG coercion.profile.deidentifier" in log  # debug logging was on
    for text in (log, *(p.read_text() for p in (node.data / "audit").glob("*.jsonl"))):
        assert "QZXCANARY" not in text and CANARY_ID not in text


def test_object_no_rule_touches_is_stored_as_received(serve: Start, tmp_path: Path) -> None:
    node = serve()
    source = canary_file(tmp_path / "in" / "clinical.dcm")
    storescu(node.port, source)
    [output] = stored(node.data)
    original, kept = dcmread(source), dcmread(output)
    assert (
        kept.PatientName == original.PatientName and kept.SOPInstanceUID == original.SOPInstanceUID
    )
    assert output.parts[-3:] == (
        original.StudyInstanceUID,
        original.SeriesInstanceUID,
        f"{original.SOPInstanceUID}.dcm",
    )
    assert output.read_bytes().endswith(original.PixelData)


def test_eight_concurrent_associations_store_2000_objects_once(
    serve: Start, tmp_path: Path
) -> None:
    node = serve()
    folders = [tmp_path / "in" / f"batch{n}" for n in range(8)]
    for n, folder in enumerate(folders):
        for i in range(250):
            canary_file(folder / f"{i:03d}.dcm", n * 1000 + i)
    storescu_at_once(node.port, "COERCION", [[folder] for folder in folders], "+sd")
    outputs = stored(node.data)
    assert len(outputs) == 2000
    assert not list((node.data / "objects").rglob("*.part"))  # nothing half-written
    uids = {dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in outputs}
    assert len(uids) == 2000


def _every_worker_reloaded(log: str) -> bool:
    """Whether each worker that logged (``[worker N]``) has reloaded its rules.

    The console's watcher in serve's own process reloads too: its line alone does not
    mean the worker holding the association has the new rules. One process: its line.
    """
    workers, reloaded = set(), set()
    for line in log.splitlines():
        found = re.search(r"\[worker (\d+)\]", line)
        if found:
            workers.add(found[1])
            if "configuration reloaded" in line:
                reloaded.add(found[1])
    return workers <= reloaded if workers else "configuration reloaded" in log


def test_rule_change_applies_to_the_next_object_on_the_same_association(
    serve: Start, tmp_path: Path
) -> None:
    config = config_dir(tmp_path)
    node = serve(config)
    ae = AE(ae_title="CT01")
    ae.add_requested_context("1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.1.2.1")
    assoc = ae.associate("127.0.0.1", node.port, ae_title="COERCION")
    assert assoc.is_established
    try:
        first = dcmread(canary_file(tmp_path / "in" / "1.dcm", 1))
        assert assoc.send_c_store(first).Status == 0
        rule = (
            f"dn: cn=deidentify-clinical,dicomAETitle=COERCION,{DEVICE}\n"
            "objectClass: coercionRule\ncn: deidentify-clinical\ncoercionDIMSE: C_STORE_RQ\n"
            "dicomTransferRole: SCP\ncoercionURI: deidentify:\n"
        )
        (config / "20-extra.ldif").write_text(rule, encoding="utf-8")
        wait_until(
            lambda: _every_worker_reloaded(node.text()),
            "every worker of the node to reload its rules",
            timeout=30,
            detail=node.text,
        )
        second = dcmread(canary_file(tmp_path / "in" / "2.dcm", 2))
        assert assoc.send_c_store(second).Status == 0
    finally:
        assoc.release()
    names = sorted(str(dcmread(p).PatientName) for p in stored(node.data))
    assert names[-1] == CANARY_NAME and names[0] != CANARY_NAME  # one kept, one coerced


class _Failing:
    def apply(self, ds: Dataset, ctx: EventContext) -> list[Change]:
        ds.PatientName = "HALF^DONE"
        raise CoercionError("refused by the test rule")


def _failing(spec: str, params: object, env: ActionEnv) -> _Failing:
    return _Failing()


register_scheme("test-fail", _failing)


def test_rethrow_failure_gives_a_failure_status_and_stores_nothing(tmp_path: Path) -> None:
    rule = (
        f"dn: cn=always-fails,{DEVICE}\nobjectClass: coercionRule\ncn: always-fails\n"
        "coercionDIMSE: C_STORE_RQ\ndicomTransferRole: SCP\ncoercionURI: test-fail:\n"
    )
    env = ActionEnv(SECRET)
    watcher = ConfigurationWatcher(
        EmbeddedDirectory(config_dir(tmp_path, extra=rule)), env, "coercion"
    )
    data = tmp_path / "data"
    node = Node(watcher, NodeSettings(port=0, data=data, secret=SECRET))
    _host, port = node.start()
    try:
        source = canary_file(tmp_path / "in" / "x.dcm")
        sent = dcmtk(
            "storescu", "-v", "-aet", "CT01", "-aec", "COERCION", "127.0.0.1", port, source
        )
        assert sent.returncode != 0
        assert "Received Store Response (Error: CannotUnderstand)" in sent.stderr, sent.stderr
    finally:
        node.stop()
    assert stored(data) == []
    audit = "".join(p.read_text() for p in (data / "audit").glob("*.jsonl"))
    assert "always-fails" in audit and '"status":"0xC001"' in audit


# -- worklist ----------------------------------------------------------------------------------


def worklist_item(path: Path, name: str, patient_id: str, modality: str, date: str) -> None:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName = name
    ds.PatientID = patient_id
    ds.AccessionNumber = f"ACC{patient_id[-3:]}"
    ds.StudyInstanceUID = generate_uid()
    step = Dataset()
    step.Modality = modality
    step.ScheduledStationAETitle = "CT01"
    step.ScheduledProcedureStepStartDate = date
    step.ScheduledProcedureStepID = "SPS1"
    ds.ScheduledProcedureStepSequence = [step]
    path.parent.mkdir(parents=True, exist_ok=True)
    dcmwrite(path, ds, implicit_vr=False, little_endian=True)  # a bare data set, as .wl files


def test_worklist_answers_are_matched_and_coerced(serve: Start, tmp_path: Path) -> None:
    node = serve()
    worklist = node.data / "worklist"
    worklist_item(worklist / "1.dcm", CANARY_NAME, CANARY_ID, "CT", "20261123")
    worklist_item(worklist / "2.dcm", "OTHER^PATIENT", "PID-002", "MR", "20261123")
    worklist_item(worklist / "3.dcm", "LATER^PATIENT", "PID-003", "CT", "20261201")
    query = [
        "-k",
        "ScheduledProcedureStepSequence[0].Modality=CT",
        "-k",
        "ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartDate=20261120-20261124",
        "-k",
        "PatientName",
        "-k",
        "PatientID",
    ]
    clinical = tmp_path / "clinical"
    clinical.mkdir()
    find(node, "CT01", clinical, query)
    [answer] = [dcmread(p) for p in clinical.glob("*.dcm")]
    assert answer.PatientID == CANARY_ID  # CT01 is not a research modality: no rule
    research = tmp_path / "research"
    research.mkdir()
    find(node, "RESEARCH_MR1", research, query)
    [answer] = [dcmread(p) for p in research.glob("*.dcm")]
    assert answer.PatientID != CANARY_ID and str(answer.PatientName) != CANARY_NAME
    assert "QZXCANARY" not in node.text()


# -- MPPS ----------------------------------------------------------------------------------------


def test_mpps_create_duplicate_set_and_final(serve: Start) -> None:
    node = serve()
    ae = AE(ae_title="RESEARCH_MR1")
    ae.add_requested_context(MPPS_CLASS)
    assoc = ae.associate("127.0.0.1", node.port, ae_title="COERCION")
    assert assoc.is_established
    uid = generate_uid()
    try:
        ds = Dataset()
        ds.PatientName = CANARY_NAME
        ds.PatientID = CANARY_ID
        ds.PerformedProcedureStepStatus = "IN PROGRESS"
        ds.PerformedProcedureStepID = "PPS1"
        ds.Modality = "MR"
        status, _attrs = assoc.send_n_create(ds, MPPS_CLASS, uid)
        assert status.Status == 0x0000
        status, _attrs = assoc.send_n_create(ds, MPPS_CLASS, uid)
        assert status.Status == 0x0111
        change = Dataset()
        change.PerformedProcedureStepStatus = "COMPLETED"
        status, _attrs = assoc.send_n_set(change, MPPS_CLASS, uid)
        assert status.Status == 0x0000
        status, _attrs = assoc.send_n_set(change, MPPS_CLASS, uid)
        assert status.Status == 0x0110
        status, _attrs = assoc.send_n_set(change, MPPS_CLASS, generate_uid())
        assert status.Status == 0x0112
    finally:
        assoc.release()
    [record] = list((node.data / "mpps").glob("*.dcm"))
    kept = dcmread(record)
    assert kept.PerformedProcedureStepStatus == "COMPLETED"
    assert kept.PatientID != CANARY_ID  # RESEARCH_ calling AEs: the MPPS rule applies


# -- forwarding ------------------------------------------------------------------------------------


def archive_config(port: int) -> str:
    """A destination device ARCHIVE, a forward rule, and a de-identifying rule on the way out."""
    return (
        remote_device("archive", "ARCHIVE", port)
        + f"""
dn: cn=forward-clinical,dicomAETitle=COERCION,{DEVICE}
objectClass: coercionForwardRule
cn: forward-clinical
coercionDestinationAETitle: ARCHIVE
coercionCondition: Modality=CT
"""
        + deidentify_outgoing("ARCHIVE")
    )


def test_forwarding_survives_a_stopped_destination(serve: Start, tmp_path: Path) -> None:
    port = free_port()
    node = serve(config_dir(tmp_path, extra=archive_config(port)))
    folder = tmp_path / "in"
    for i in range(5):
        canary_file(folder / f"{i}.dcm", 500 + i)
    storescu(node.port, folder)
    queue = node.data / "queue" / "ARCHIVE"
    assert len(list(queue.glob("*.dcm"))) == 5  # the destination is down: all queued
    wait_until(
        lambda: node.text().count("forwarding to ARCHIVE failed") >= 2,
        "two failed attempts to forward",
        detail=node.text,
    )
    received = receive_at_archive(port, 5, detail=node.text)
    assert len(received) == 5, node.text()
    # A queue entry goes once the destination's answer is back (just after it received).
    wait_until(lambda: not list(queue.glob("*.dcm")), "the queue emptied", detail=node.text)
    # Coerced for the destination on the way out; the stored copies are as received.
    assert all(str(ds.PatientID) != CANARY_ID for ds in received)
    assert all(str(dcmread(p).PatientID) == CANARY_ID for p in stored(node.data))
    assert {ds.SOPInstanceUID for ds in received} == {
        dcmread(p).SOPInstanceUID for p in stored(node.data)
    }  # RetainUIDsOption


def test_worklist_proxied_to_the_upstream_ris(serve: Start, tmp_path: Path) -> None:
    port = free_port()
    config = config_dir(tmp_path)
    path = config / "10-default-config.ldif"
    text = path.read_text(encoding="utf-8").replace("dicomPort: 11115", f"dicomPort: {port}")
    text = text.replace(
        "coercionPollInterval: 2", "coercionPollInterval: 2\ncoercionWorklistAETitle: RIS"
    )
    path.write_text(text, encoding="utf-8")
    queries: list[Dataset] = []
    items = [(CANARY_NAME, CANARY_ID), ("OTHER^PATIENT", "PID-002")]

    def on_find(event: Any) -> Any:
        queries.append(event.identifier)
        for name, patient_id in items:
            answer = Dataset()
            answer.PatientName = name
            answer.PatientID = patient_id
            step = Dataset()
            step.Modality = "CT"
            answer.ScheduledProcedureStepSequence = [step]
            yield 0xFF00, answer

    ris = AE(ae_title="RIS")
    ris.add_supported_context(WORKLIST_FIND)
    upstream: Any = ris.start_server(
        ("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_FIND, on_find)]
    )
    try:
        node = serve(config)
        query = [
            "-k",
            "PatientName",
            "-k",
            "PatientID",
            "-k",
            "ScheduledProcedureStepSequence[0].Modality=CT",
        ]
        clinical, research = tmp_path / "clinical", tmp_path / "research"
        for folder, calling in ((clinical, "CT01"), (research, "RESEARCH_MR1")):
            folder.mkdir()
            find(node, calling, folder, query)
    finally:
        upstream.shutdown()
    assert len(queries) == 2  # each query went upstream
    kept = sorted(str(dcmread(p).PatientID) for p in clinical.glob("*.dcm"))
    assert kept == sorted(patient_id for _name, patient_id in items)
    coerced = [dcmread(p) for p in research.glob("*.dcm")]
    assert len(coerced) == 2
    assert all(ds.PatientID not in (CANARY_ID, "PID-002") for ds in coerced)


# -- TLS ----------------------------------------------------------------------------------------


def test_tls_listener_and_tls_forwarding(serve: Start, tmp_path: Path) -> None:
    node_tls = make_tls_files(tmp_path / "node-tls")
    archive_tls = make_tls_files(tmp_path / "archive-tls")
    port = free_port()
    extra = with_tls(archive_config(port), port)
    node = serve(
        config_dir(tmp_path, extra=extra),
        *tls_options(node_tls.server_cert, node_tls.server_key, archive_tls.ca_cert),
    )
    source = canary_file(tmp_path / "in" / "tls.dcm")
    plain = dcmtk("storescu", "-aet", "CT01", "-aec", "COERCION", "127.0.0.1", node.port, source)
    assert plain.returncode != 0  # the listener speaks TLS only
    # Our listener asks for a client certificate (--tls-ca): give it the archive's pair,
    # whose CA the node trusts, and trust the node's CA in return.
    sent = storescu_tls(
        node.port, source, archive_tls.server_key, archive_tls.server_cert, node_tls.ca_cert
    )
    assert sent.returncode == 0, sent.stderr
    assert len(stored(node.data)) == 1
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(archive_tls.server_cert, archive_tls.server_key)
    received = receive_at_archive(port, 1, context, detail=node.text)
    assert len(received) == 1, node.text()
    assert str(received[0].PatientID) != CANARY_ID


def test_mpps_is_forwarded_in_order(serve: Start, tmp_path: Path) -> None:
    port = free_port()
    extra = archive_config(port) + (
        f"\ndn: cn=forward-mpps,{DEVICE}\nobjectClass: coercionForwardRule\ncn: forward-mpps\n"
        "coercionDestinationAETitle: ARCHIVE\ncoercionDIMSE: N_CREATE_RQ\n"
    )
    node = serve(config_dir(tmp_path, extra=extra))
    uid = generate_uid()
    report_mpps(node.port, uid, PatientID=CANARY_ID)
    events: list[tuple[str, str, str]] = []

    def on_create(event: Any) -> tuple[int, Dataset]:
        ds = event.attribute_list
        events.append(("create", str(event.request.AffectedSOPInstanceUID), str(ds.PatientID)))
        return 0x0000, ds

    def on_set(event: Any) -> tuple[int, None]:
        ds = event.modification_list
        uid_set = str(event.request.RequestedSOPInstanceUID)
        events.append(("set", uid_set, str(ds.PerformedProcedureStepStatus)))
        return 0x0000, None

    archive = AE(ae_title="ARCHIVE")
    archive.add_supported_context(MPPS_CLASS)
    server: Any = archive.start_server(
        ("127.0.0.1", port),
        block=False,
        evt_handlers=[(evt.EVT_N_CREATE, on_create), (evt.EVT_N_SET, on_set)],
    )
    try:
        wait_until(lambda: len(events) >= 2, "N-CREATE and N-SET at ARCHIVE", timeout=40)
    finally:
        server.shutdown()
    # N-CREATE then N-SET, for the same instance; CT01 is not a research modality: no coercion.
    assert events == [("create", uid, CANARY_ID), ("set", uid, "COMPLETED")], node.text()
    assert not list((node.data / "queue" / "ARCHIVE").glob("*.dcm"))


def test_queue_survives_kill_9_of_the_node(serve: Start, tmp_path: Path) -> None:
    port = free_port()
    config = config_dir(tmp_path, extra=archive_config(port))
    data = tmp_path / "shared-data"
    first = serve(config, "--data", str(data))
    folder = tmp_path / "in"
    for i in range(3):
        canary_file(folder / f"{i}.dcm", 700 + i)
    storescu(first.port, folder)
    first.process.kill()  # no clean shutdown
    first.process.wait(10)
    assert len(list((data / "queue" / "ARCHIVE").glob("*.dcm"))) == 3
    second = serve(config, "--data", str(data))
    received = receive_at_archive(port, 3, detail=second.text)
    assert len(received) == 3, second.text()
    assert {ds.SOPInstanceUID for ds in received} == {
        dcmread(p).SOPInstanceUID for p in folder.glob("*.dcm")
    }
    wait_until(
        lambda: not list((data / "queue" / "ARCHIVE").glob("*.dcm")),
        "the queue emptied",
        detail=second.text,
    )
