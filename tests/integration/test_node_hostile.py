"""``coercion serve`` against a hostile peer: crafted UIDs and broken data sets, sent raw.

Each object is sent by pynetdicom from a crafted file whose bytes after the
file meta go on the wire untouched (``STORE_SEND_CHUNKED_DATASET``), so the
node sees exactly the broken bytes; valid objects go through dcmtk's storescu.
The node runs as a user starts it (``coercion serve``, a subprocess).
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom import config as pydicom_config
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, MRImageStorage
from pynetdicom import AE, _config

from coercion.dicom.part10 import file_meta_bytes
from tests.helpers import (
    MPPS_CLASS,
    Served,
    Start,
    dcmtk,
    make_dataset,
    report_mpps,
    start_node,
    stored,
    storescu,
)

pytestmark = pytest.mark.integration

EXPLICIT_LE = "1.2.840.10008.1.2.1"
STUDY = "1.2.826.0.1.3680043.99.7.1"
SERIES = "1.2.826.0.1.3680043.99.7.2"
INSTANCE = "1.2.826.0.1.3680043.99.7.3"
WORKLIST_FIND = "1.2.840.10008.5.1.4.31"
LONG_VRS = {"OB", "OW", "SQ", "UN", "UT"}
UNDEFINED = 0xFFFFFFFF


# -- crafting explicit VR little endian bytes ------------------------------------------------


def element(tag: int, vr: str, value: bytes, length: int | None = None) -> bytes:
    """One element; *length* overrides the encoded length (for impossible ones)."""
    if len(value) % 2:
        value += b"\x00" if vr in ("UI", "OB") else b" "
    size = len(value) if length is None else length
    if vr in LONG_VRS:
        return struct.pack("<HH2s2xL", tag >> 16, tag & 0xFFFF, vr.encode(), size) + value
    return struct.pack("<HH2sH", tag >> 16, tag & 0xFFFF, vr.encode(), size) + value


def delimiter(tag: int, length: int = 0) -> bytes:
    """An item, item delimiter or sequence delimiter header (no VR)."""
    return struct.pack("<HHL", 0xFFFE, tag & 0xFFFF, length)


def undefined_sequence(tag: int) -> bytes:
    """The header of an SQ of undefined length."""
    return struct.pack("<HH2s2xL", tag >> 16, tag & 0xFFFF, b"SQ", UNDEFINED)


def body(
    study: str = STUDY,
    series: str = SERIES,
    instance: str | None = INSTANCE,
    sop_class: str = CTImageStorage,
    middle: bytes = b"",
    pixels: bytes | None = None,
) -> bytes:
    """A small CT data set; *middle* goes between (0008,0018) and (0010,0010)."""
    parts = [element(0x00080016, "UI", sop_class.encode())]
    if instance is not None:
        parts.append(element(0x00080018, "UI", instance.encode()))
    parts.append(middle)
    parts.append(element(0x00100010, "PN", b"HOSTILE^TEST"))
    parts.append(element(0x0020000D, "UI", study.encode()))
    parts.append(element(0x0020000E, "UI", series.encode()))
    parts.append(element(0x7FE00010, "OW", pixels if pixels is not None else bytes(range(256)) * 8))
    return b"".join(parts)


def crafted(
    folder: Path, name: str, data: bytes, instance: str = INSTANCE, sop_class: str = CTImageStorage
) -> Path:
    """A file whose meta names *sop_class*/*instance* and whose data set is *data*, as is."""
    path = folder / f"{name}.dcm"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(file_meta_bytes(sop_class, instance, EXPLICIT_LE) + data)
    return path


@pytest.fixture
def raw_sending(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """pynetdicom sends a file's data set bytes untouched; crafted UIDs do not warn."""
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)
    for mode in ("reading_validation_mode", "writing_validation_mode"):
        monkeypatch.setattr(pydicom_config.settings, mode, pydicom_config.IGNORE)
    monkeypatch.setitem(_config.VALIDATORS, "UI", lambda value: (True, ""))  # a hostile peer
    yield


def send(node: Served, *paths: Path, called: str = "COERCION") -> list[int]:
    """C-STORE each file from CT01 on one association; the statuses."""
    ae = AE(ae_title="CT01")
    ae.add_requested_context(CTImageStorage, EXPLICIT_LE)
    assoc = ae.associate("127.0.0.1", node.port, ae_title=called)
    assert assoc.is_established
    try:
        return [int(assoc.send_c_store(path).Status) for path in paths]
    finally:
        assoc.release()


def files_under(folder: Path) -> set[Path]:
    """Every file below *folder*."""
    return {p for p in folder.rglob("*") if p.is_file()}


def audit_lines(node: Served) -> list[dict[str, Any]]:
    """The node's audit trail, parsed."""
    return [
        json.loads(line)
        for path in sorted((node.data / "audit").glob("*.jsonl"))
        for line in path.read_text().splitlines()
    ]


def only_audit_written(node: Served, tmp_path: Path, before: set[Path]) -> None:
    """Nothing was written anywhere but the audit trail (and the node's own log).

    The empty lock files that count associations across workers (``.associations``) hold nothing;
    the metrics files (``metrics/``, the console's counters of refusals) hold counts by AE
    title and result, never a received value.
    """
    new = files_under(tmp_path) - before
    locks = {p for p in new if ".associations" in p.parts}
    assert all(p.stat().st_size == 0 for p in locks)
    counts = {p for p in new if "metrics" in p.parts and p.suffix == ".db"}
    assert all(INSTANCE.encode() not in p.read_bytes() for p in counts)
    extra = {p for p in new - locks - counts if "audit" not in p.parts and p.suffix != ".log"}
    assert extra == set(), sorted(map(str, extra))


# -- 1. paths from received values ------------------------------------------------------------

PATH_ATTACKS = {
    "study-dotdot-series-dotdot": (body(study="..", series=".."), INSTANCE),
    "study-dotdot-series-worklist": (body(study="..", series="worklist"), INSTANCE),
    "study-dotdot-series-mpps": (body(study="..", series="mpps"), INSTANCE),
    "study-with-slash": (body(study="1.2/../../3"), INSTANCE),
    "series-too-long": (body(series="1." + "2" * 63), INSTANCE),
    "leading-zero-component": (body(study="1.02.3"), INSTANCE),
    "empty-component": (body(series="1..2"), INSTANCE),
    "instance-dotdot": (body(instance="../../INJECTED1"), "../../INJECTED1"),
    "no-study-uid": (body(study=""), INSTANCE),
}


@pytest.fixture(scope="module")
def refusing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One node for the tests whose objects are all refused (it must store nothing)."""
    node = start_node(tmp_path_factory.mktemp("refusing"), 0, None)
    yield node
    node.process.terminate()
    node.process.wait(20)


@pytest.mark.parametrize("name", sorted(PATH_ATTACKS))
def test_path_attack_refused_and_nothing_written(
    name: str, refusing: Served, tmp_path: Path, raw_sending: None
) -> None:
    """A UID that is not PS3.5 9.1-valid is refused 0xC000; nothing lands anywhere."""
    data, instance = PATH_ATTACKS[name]
    path = crafted(tmp_path / "in", name, data, instance)
    root, start = refusing.data.parent, len(refusing.text())
    before = files_under(root)
    response = _store_with_response(refusing, path)
    assert int(response.Status) == 0xC000
    assert str(response.ErrorComment).split(":")[0] in ("invalid UID", "missing UID")
    only_audit_written(refusing, root, before)
    assert stored(refusing.data) == []
    log = refusing.text()[start:]
    assert "refused, nothing stored" in log and "INJECTED1" not in log
    line = audit_lines(refusing)[-1]
    assert line["status"] == "0xC000" and ".." not in line["detail"]


def test_forged_mpps_record_cannot_block_the_modality(
    serve: Start, tmp_path: Path, raw_sending: None
) -> None:
    """Study .. + Series mpps is refused, so the modality's N-CREATE and N-SET succeed."""
    node = serve()
    uid = "1.2.826.0.1.3680043.99.7.77"
    forged = crafted(tmp_path / "in", "forged", body(study="..", series="mpps", instance=uid), uid)
    assert send(node, forged) == [0xC000]
    report_mpps(node.port, uid)
    assert dcmread(node.data / "mpps" / f"{uid}.dcm").PerformedProcedureStepStatus == "COMPLETED"


@pytest.mark.parametrize("uid", ["../objects/1.2.3", "1.2.3/..", "1.2..3", "01.2", "1.2.x"])
def test_mpps_instance_uid_must_be_valid(
    uid: str, serve: Start, tmp_path: Path, raw_sending: None
) -> None:
    """N-CREATE and N-SET of an invalid instance UID get 0x0117; no record is written."""
    node = serve()
    ae = AE(ae_title="CT01")
    ae.add_requested_context(MPPS_CLASS)
    assoc = ae.associate("127.0.0.1", node.port, ae_title="COERCION")
    assert assoc.is_established
    before = files_under(tmp_path)
    try:
        create = Dataset()
        create.PerformedProcedureStepStatus = "IN PROGRESS"
        assert assoc.send_n_create(create, MPPS_CLASS, uid)[0].Status == 0x0117
        assert assoc.send_n_set(create, MPPS_CLASS, uid)[0].Status == 0x0117
    finally:
        assoc.release()
    only_audit_written(node, tmp_path, before)
    assert [line["status"] for line in audit_lines(node)] == ["0x0117", "0x0117"]


# -- 2. objects are whole before they are acknowledged --------------------------------------

SEQ = 0x00081115  # ReferencedSeriesSequence
ITEM_BODY = element(0x0020000E, "UI", SERIES.encode())
WHOLE = body()

BROKEN = {
    "cut-in-half": WHOLE[: len(WHOLE) // 2 + 3],
    "cut-inside-a-header-value": WHOLE[:50],
    "cut-inside-pixel-data": WHOLE[:-100],
    "impossible-length": body(middle=element(0x00080020, "DA", b"20240101", length=0xFFF0)),
    "garbage-undefined-sequence": body(middle=undefined_sequence(SEQ) + b"GARBAGE!" * 4),
    "item-longer-than-sequence": body(
        middle=element(SEQ, "SQ", delimiter(0xFFFEE000, len(ITEM_BODY) + 40) + ITEM_BODY)
    ),
    "sequence-without-delimiter": WHOLE
    + undefined_sequence(0xFFFAFFFA)
    + delimiter(0xFFFEE000, len(ITEM_BODY))
    + ITEM_BODY,
    "item-without-delimiter": body(
        middle=undefined_sequence(SEQ)
        + delimiter(0xFFFEE000, UNDEFINED)
        + ITEM_BODY
        + delimiter(0xFFFEE0DD)
    ),
    "fragments-run-past-the-end": body(pixels=b"")[:-12]
    + struct.pack("<HH2s2xL", 0x7FE0, 0x0010, b"OB", UNDEFINED)
    + delimiter(0xFFFEE000, 0)
    + delimiter(0xFFFEE000, 4000)
    + b"\xff" * 100,
    "not-a-vr": body(middle=b"\x08\x00\x20\x00\x01\x02\x08\x0020240101"),
    "stray-item-delimiter": body(middle=delimiter(0xFFFEE00D)),
}


@pytest.mark.parametrize("kind", sorted(BROKEN))
@pytest.mark.parametrize("called", ["COERCION", "RESEARCH"])
def test_broken_data_set_refused_and_not_stored(
    kind: str, called: str, refusing: Served, tmp_path: Path, raw_sending: None
) -> None:
    """A structurally broken data set gets 0xC000 naming the element; nothing is stored."""
    path = crafted(tmp_path / "in", kind, BROKEN[kind])
    start = len(refusing.text())
    response = _store_with_response(refusing, path, called)
    assert int(response.Status) == 0xC000
    assert str(response.ErrorComment).startswith("malformed data set: ("), response.ErrorComment
    assert stored(refusing.data) == []
    assert not list(refusing.data.rglob("*.part"))
    assert "malformed data set" in refusing.text()[start:]
    line = audit_lines(refusing)[-1]
    assert line["status"] == "0xC000" and "malformed data set" in line["detail"]


def _store_with_response(node: Served, path: Path, called: str = "COERCION") -> Any:
    ae = AE(ae_title="CT01")
    ae.add_requested_context(CTImageStorage, EXPLICIT_LE)
    assoc = ae.associate("127.0.0.1", node.port, ae_title=called)
    assert assoc.is_established
    try:
        return assoc.send_c_store(path)
    finally:
        assoc.release()


def test_whole_crafted_object_is_stored(serve: Start, tmp_path: Path, raw_sending: None) -> None:
    """The crafted bytes the broken cases start from are whole: stored byte for byte."""
    node = serve()
    sequence = undefined_sequence(SEQ) + delimiter(0xFFFEE000, UNDEFINED) + ITEM_BODY
    sequence += delimiter(0xFFFEE00D) + delimiter(0xFFFEE0DD)
    data = body(middle=sequence)
    assert send(node, crafted(tmp_path / "in", "whole", data)) == [0x0000]
    [output] = stored(node.data)
    assert output.read_bytes().endswith(data)
    assert output.parts[-3:] == (STUDY, SERIES, f"{INSTANCE}.dcm")


def test_truncated_second_copy_does_not_replace_the_first(
    serve: Start, tmp_path: Path, raw_sending: None
) -> None:
    """A cut copy of a stored instance is refused and leaves it; a whole copy replaces it."""
    node = serve()
    source = tmp_path / "in" / "complete.dcm"
    source.parent.mkdir()
    make_dataset().save_as(source, enforce_file_format=True)
    storescu(node.port, source)
    [output] = stored(node.data)
    complete = output.read_bytes()
    cut = tmp_path / "in" / "cut.dcm"
    cut.write_bytes(source.read_bytes()[:-3])  # the same instance, its pixel data cut short
    assert send(node, cut) == [0xC000]
    assert output.read_bytes() == complete
    second = tmp_path / "in" / "second.dcm"
    make_dataset(patient="SECOND^COPY").save_as(second, enforce_file_format=True)
    assert send(node, second) == [0x0000]
    assert str(dcmread(output).PatientName) == "SECOND^COPY"
    assert [line.get("replaced") for line in audit_lines(node)] == [None, None, True]


def test_mismatched_sop_class_and_instance_refused(
    serve: Start, tmp_path: Path, raw_sending: None
) -> None:
    """A data set of another SOP class or instance than the request gets 0xA900, no SOP
    Instance UID 0xC000; nothing is stored."""
    node = serve()
    folder = tmp_path / "in"
    other_class = crafted(folder, "mr", body(sop_class=MRImageStorage))
    other_instance = crafted(folder, "instance", body(instance="1.2.3.4"))
    no_instance = crafted(folder, "none", body(instance=None))
    assert send(node, other_class, other_instance, no_instance) == [0xA900, 0xA900, 0xC000]
    assert stored(node.data) == []
    assert [line["status"] for line in audit_lines(node)] == ["0xA900", "0xA900", "0xC000"]
    assert not (node.data / "objects" / "UNKNOWN").exists()


def nested(depth: int) -> bytes:
    """Sequences nested *depth* deep, of undefined length, each in an item of undefined length."""
    opening = (undefined_sequence(SEQ) + delimiter(0xFFFEE000, UNDEFINED)) * depth
    closing = (delimiter(0xFFFEE00D) + delimiter(0xFFFEE0DD)) * depth
    return opening + ITEM_BODY + closing


def test_thousands_deep_nesting_refused_with_log_and_audit(
    serve: Start, tmp_path: Path, raw_sending: None
) -> None:
    """5000 nested sequences: 0xC000, a log line and an audit line, no RecursionError."""
    node = serve()
    path = crafted(tmp_path / "in", "deep", body(middle=nested(5000)))
    response = _store_with_response(node, path, "RESEARCH")
    assert int(response.Status) == 0xC000
    assert str(response.ErrorComment) == "malformed data set: (0008,1115)"
    assert "nested deeper than 64 levels" in node.text()
    assert "RecursionError" not in node.text()
    [line] = audit_lines(node)
    assert line["status"] == "0xC000" and "nested deeper" in line["detail"]
    assert stored(node.data) == []


@pytest.mark.parametrize("called", ["COERCION", "RESEARCH"])
def test_nesting_at_the_limit_is_stored(
    called: str, serve: Start, tmp_path: Path, raw_sending: None
) -> None:
    """64 nested sequences are accepted, stored as received or de-identified."""
    node = serve()
    path = crafted(tmp_path / "in", "deep", body(middle=nested(64)))
    assert send(node, path, called=called) == [0x0000], node.text()
    [output] = stored(node.data)
    ds = dcmread(output)
    for _level in range(64):
        ds = ds.ReferencedSeriesSequence[0]
    assert "SeriesInstanceUID" in ds


# -- worklist files ------------------------------------------------------------------------------


def test_unreadable_worklist_files_skipped_with_one_log_line_each(
    serve: Start, tmp_path: Path
) -> None:
    """A cut, a garbage, an empty and an outside-pointing file are skipped, one log line each."""
    node = serve()
    worklist = node.data / "worklist"
    worklist.mkdir(parents=True)
    item = Dataset()
    item.PatientName = "WORKLIST^ONE"
    item.PatientID = "WL1"
    good = worklist / "good.wl"
    item.save_as(good, implicit_vr=False, little_endian=True)
    (worklist / "cut.wl").write_bytes(good.read_bytes()[:-5])
    (worklist / "garbage.dcm").write_bytes(b"\x08\x00\x50\x00XY" + os.urandom(64))
    (worklist / "empty.wl").write_bytes(b"")
    outside = tmp_path / "outside.wl"
    outside.write_bytes(good.read_bytes())
    (worklist / "link.wl").symlink_to(outside)
    out = tmp_path / "answers"
    out.mkdir()
    found = dcmtk(
        "findscu", "-W", "-X", "-od", out, "-aet", "CT01", "-aec", "COERCION",
        "127.0.0.1", node.port, "-k", "PatientName", "-k", "PatientID",
    )  # fmt: skip
    assert found.returncode == 0, found.stderr
    answers = [dcmread(p) for p in out.glob("*.dcm")]
    assert [str(a.PatientID) for a in answers] == ["WL1"]
    log = node.text()
    for name in ("cut.wl", "garbage.dcm", "empty.wl", "link.wl"):
        assert log.count(f"worklist item {name} skipped") == 1, log
    assert "WORKLIST^ONE" not in log


def deep_item(depth: int) -> Dataset:
    """An item with sequences nested *depth* deep below it (pydicom encodes it)."""
    ds = Dataset()
    ds.PatientID = "DEEP"
    for _level in range(depth):
        outer = Dataset()
        outer.ReferencedSeriesSequence = [ds]
        ds = outer
    return ds


def test_deep_mpps_and_worklist_requests_are_refused(refusing: Served) -> None:
    """N-CREATE and C-FIND data sets nested past the limit are refused, logged and audited."""
    start, lines = len(refusing.text()), len(audit_lines(refusing))
    ae = AE(ae_title="CT01")
    ae.add_requested_context(MPPS_CLASS)
    ae.add_requested_context(WORKLIST_FIND)
    assoc = ae.associate("127.0.0.1", refusing.port, ae_title="COERCION")
    assert assoc.is_established
    try:
        create = deep_item(100)
        create.PerformedProcedureStepStatus = "IN PROGRESS"
        status, _attributes = assoc.send_n_create(create, MPPS_CLASS, "1.2.826.0.1.3680043.99.7.9")
        assert status.Status == 0x0110
        assert str(status.ErrorComment) == "malformed data set: (0008,1115)"
        answers = list(assoc.send_c_find(deep_item(100), WORKLIST_FIND))
        assert [int(status.Status) for status, _identifier in answers] == [0xC000]
    finally:
        assoc.release()
    assert refusing.text()[start:].count("nested deeper than 64 levels") == 2
    assert [line["status"] for line in audit_lines(refusing)[lines:]] == ["0x0110", "0xC000"]
    assert not (refusing.data / "mpps").exists() or not list((refusing.data / "mpps").iterdir())


@pytest.mark.parametrize("called", ["COERCION", "RESEARCH"])
def test_whole_objects_in_every_uncompressed_syntax_are_stored(
    called: str, serve: Start, tmp_path: Path
) -> None:
    """storescu in implicit, explicit big endian and deflated syntaxes: no whole object refused."""
    node = serve()
    options = {
        "-xi": "1.2.840.10008.1.2",
        "-xb": "1.2.840.10008.1.2.2",
        "-xd": "1.2.840.10008.1.2.1.99",
    }
    for index, option in enumerate(options):
        ds = make_dataset()
        ds.SOPInstanceUID = f"{INSTANCE}.{index + 1}"
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        item = Dataset()
        item.PatientID = "NESTED"
        ds.ReferencedPatientSequence = [item]
        source = tmp_path / "in" / f"{index}.dcm"
        source.parent.mkdir(exist_ok=True)
        ds.save_as(source, enforce_file_format=True)
        sent = dcmtk(
            "storescu", option, "-aet", "CT01", "-aec", called, "127.0.0.1", node.port, source
        )
        assert sent.returncode == 0, sent.stderr
    outputs = stored(node.data)
    assert len(outputs) == 3, node.text()
    syntaxes = {str(dcmread(p).file_meta.TransferSyntaxUID) for p in outputs}
    assert syntaxes == set(options.values())
    assert "malformed" not in node.text()
