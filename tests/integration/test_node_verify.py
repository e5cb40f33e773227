"""``coercion serve`` verifies what it de-identifies, and forwards untouched objects as stored.

The node runs as a user starts it (a subprocess, verification on by default);
dcmtk's storescu sends, a pynetdicom storage SCP that keeps the bytes it
receives stands in for a forwarding destination.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread, dcmwrite
from pydicom.dataset import Dataset
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, evt

from tests.helpers import (
    Served,
    Start,
    config_dir,
    dcmtk,
    deidentify_outgoing,
    forward_rule,
    free_port,
    make_dataset,
    remote_device,
    stored,
    wait_until,
)

pytestmark = pytest.mark.integration

NAME = "QZXLEAKY^PHIMARKER"


def leaky_file(path: Path, uid_suffix: str = "1") -> Path:
    """A CT object whose ManufacturerModelName (kept by the profile) holds the patient's name."""
    ds = make_dataset(patient=NAME)
    ds.SOPInstanceUID = f"1.2.826.0.1.3680043.99.7.{uid_suffix}"
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyDescription = "CT head"
    ds.ManufacturerModelName = "Workstation of Phimarker Qzxleaky"
    path.parent.mkdir(parents=True, exist_ok=True)
    dcmwrite(path, ds, enforce_file_format=True)
    return path


def send(node: Served, called: str, source: Path) -> Any:
    """storescu -v from CT01 to *called*; the completed process."""
    return dcmtk("storescu", "-v", "-aet", "CT01", "-aec", called, "127.0.0.1", node.port, source)


def audit_lines(data: Path) -> list[dict[str, Any]]:
    """Every line of the node's audit trail."""
    return [
        json.loads(line)
        for path in sorted((data / "audit").glob("*.jsonl"))
        for line in path.read_text().splitlines()
    ]


def test_a_deidentified_object_passes_verification_and_is_stored(
    serve: Start, tmp_path: Path
) -> None:
    """Verification on (the default): a clean object to RESEARCH is de-identified and stored."""
    node = serve()
    source = make_dataset(patient=NAME)
    path = tmp_path / "in" / "clean.dcm"
    path.parent.mkdir(parents=True)
    dcmwrite(path, source, enforce_file_format=True)
    sent = send(node, "RESEARCH", path)
    assert sent.returncode == 0, sent.stderr
    [output] = stored(node.data)
    assert b"QZXLEAKY" not in output.read_bytes().upper()
    assert dcmread(output).PatientIdentityRemoved == "YES"


def test_an_output_that_still_names_the_patient_is_refused_and_not_written(
    serve: Start, tmp_path: Path
) -> None:
    """A leak is answered with a failure status, logged and audited by attribute, never stored."""
    node = serve()
    sent = send(node, "RESEARCH", leaky_file(tmp_path / "in" / "leaky.dcm"))
    assert sent.returncode != 0
    assert "Received Store Response (Error:" in sent.stderr, sent.stderr
    assert stored(node.data) == []
    assert not list((node.data / "objects").rglob("*.part"))  # nothing half-written either
    log = node.text()
    assert "output still holds identifying values of PatientName; nothing written" in log
    assert "answered 0xC003" in log
    [line] = [a for a in audit_lines(node.data) if a.get("dimse") == "C_STORE_RQ"]
    assert (line["status"], line["step"], line["error"]) == (
        "0xC003",
        "verify",
        "VerificationError",
    )
    for text in (log, json.dumps(audit_lines(node.data))):
        assert "QZXLEAKY" not in text.upper() and "PHIMARKER" not in text.upper()


def test_without_verification_the_same_object_is_stored(serve: Start, tmp_path: Path) -> None:
    """``serve --no-verify`` stores what the rule made of it, leak and all."""
    node = serve(None, "--no-verify")
    sent = send(node, "RESEARCH", leaky_file(tmp_path / "in" / "leaky.dcm"))
    assert sent.returncode == 0, sent.stderr
    [output] = stored(node.data)
    stored_ds = dcmread(output)
    assert stored_ds.PatientIdentityRemoved == "YES"
    assert "Qzxleaky" in str(stored_ds.ManufacturerModelName)


# -- forwarding ------------------------------------------------------------------------------


class Destination:
    """A CT storage SCP ARCHIVE that keeps each data set's bytes as they arrived."""

    def __init__(self, port: int) -> None:
        self.received: list[bytes] = []
        ae = AE(ae_title="ARCHIVE")
        ae.add_supported_context("1.2.840.10008.5.1.4.1.1.2", ALL_TRANSFER_SYNTAXES)
        handlers: list[Any] = [(evt.EVT_C_STORE, self._on_store)]
        self.server: Any = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=handlers)

    def _on_store(self, event: Any) -> int:
        self.received.append(event.request.DataSet.getvalue())
        return 0x0000


@pytest.fixture
def destination() -> Iterator[Destination]:
    """A running :class:`Destination` on a free port."""
    archive = Destination(free_port())
    yield archive
    archive.server.shutdown()


def data_set_bytes(path: Path) -> bytes:
    """The bytes of a Part 10 file after its preamble and file meta group."""
    data = path.read_bytes()
    assert data[128:132] == b"DICM" and data[132:136] == b"\x02\x00\x00\x00"
    (group_length,) = struct.unpack_from("<L", data, 140)
    return data[144 + group_length :]


def test_an_object_no_outgoing_rule_changes_is_forwarded_byte_for_byte(
    serve: Start, tmp_path: Path, destination: Destination
) -> None:
    """Without an SCU rule for the destination, it receives the stored file's data set bytes."""
    port = int(destination.server.server_address[1])
    extra = remote_device("archive", "ARCHIVE", port) + forward_rule("ARCHIVE")
    node = serve(config_dir(tmp_path, extra=extra))
    source = make_dataset()
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = "1", "99X", "head"
    source.ProcedureCodeSequence = [item]
    # Undefined lengths: a data set decoded and encoded again would have defined ones.
    source.ProcedureCodeSequence.is_undefined_length = True
    item.is_undefined_length_sequence_item = True
    path = tmp_path / "in" / "ct.dcm"
    path.parent.mkdir(parents=True)
    dcmwrite(path, source, enforce_file_format=True)
    # pynetdicom sends the file's lengths as they are (storescu would make them defined).
    sender = AE(ae_title="CT01")
    sender.add_requested_context(source.SOPClassUID, str(source.file_meta.TransferSyntaxUID))
    assoc = sender.associate("127.0.0.1", node.port, ae_title="COERCION")
    assert assoc.is_established
    try:
        assert int(assoc.send_c_store(dcmread(path)).Status) == 0x0000
    finally:
        assoc.release()
    wait_until(lambda: len(destination.received) == 1, "the forwarded object", 30, node.text)
    [output] = stored(node.data)
    assert b"\xff\xff\xff\xff" in data_set_bytes(output)  # stored with its undefined lengths
    assert destination.received == [data_set_bytes(output)]
    queue = node.data / "queue" / "ARCHIVE"
    # The queue entry goes once the destination's answer is back (just after it received).
    wait_until(lambda: not list(queue.glob("*.dcm")), "the queue emptied", 30, node.text)


def test_an_outgoing_rule_that_leaks_sets_the_object_aside(
    serve: Start, tmp_path: Path, destination: Destination
) -> None:
    """A de-identifying SCU rule whose output fails verification: set aside, nothing sent."""
    port = int(destination.server.server_address[1])
    extra = (
        remote_device("archive", "ARCHIVE", port) + forward_rule("ARCHIVE") + deidentify_outgoing()
    )
    node = serve(config_dir(tmp_path, extra=extra))
    leaky = leaky_file(tmp_path / "in" / "leaky.dcm", "2")
    clean = tmp_path / "in" / "clean.dcm"
    dcmwrite(clean, make_dataset(), enforce_file_format=True)
    assert send(node, "COERCION", leaky).returncode == 0
    assert send(node, "COERCION", clean).returncode == 0  # stored as received, both
    failed = node.data / "queue" / "ARCHIVE" / "failed"
    wait_until(
        lambda: len(destination.received) == 1 and any(failed.glob("*.reason")),
        "one object at the destination and one set aside",
        30,
        node.text,
    )
    [reason] = [p.read_text() for p in failed.glob("*.reason")]
    assert "output failed verification" in reason and "PatientName" in reason
    assert "QZXLEAKY" not in reason.upper()
    assert len(stored(node.data)) == 2
