"""``coercion serve`` storing objects larger than memory should hold (issue 12).

A received data set past 16 MiB is spooled to DATA/incoming/ while it comes
in; storing it must not read it back into memory. The node runs as a user
starts it, dcmtk's storescu sends a valid CT object of 300 MiB, and the node's
peak resident memory (VmHWM) is compared before and after.
"""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, _config

from coercion.dicom.part10 import read_file
from tests.helpers import (
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

#: The pixel data: 300 MiB, zero bytes but for a marked first and last MiB.
ROWS, COLUMNS = 10240, 15360
SIZE = ROWS * COLUMNS * 2
MARK = 1 << 20


def _marker(index: int) -> bytes:
    """One MiB of a pattern that differs at each end of the pixel data."""
    return hashlib.sha256(str(index).encode()).digest() * (MARK // 32)


def large_ct(path: Path, size: int = SIZE, mismatch: bool = False, cut: int = 0) -> Path:
    """A valid CT object with *size* bytes of pixel data, written as a sparse file.

    *mismatch*: the data set's SOP Instance UID differs from the file meta's
    (pynetdicom sends that one in the request); *cut*: bytes left off the end.
    """
    ds = make_dataset()
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    other = Dataset()
    other.PatientID = "PID-OTHER-1"
    other.IssuerOfPatientIDQualifiersSequence = [Dataset()]
    other.IssuerOfPatientIDQualifiersSequence[0].UniversalEntityID = "ISSUER-OTHER-2"
    ds.OtherPatientIDsSequence = [other]  # identifiers two sequence levels down
    block = ds.private_block(0x0009, "COERCION TEST", create=True)
    block.add_new(0x10, "UT", "COMMENT-ABOUT-DOE " * 2048)  # 36 KiB: deferred when read
    ds.Rows, ds.Columns = size // (2 * COLUMNS), COLUMNS
    del ds.PixelData
    ds.save_as(path, enforce_file_format=True)
    if mismatch:
        data = path.read_bytes()
        uid = ds.SOPInstanceUID.encode()
        at = data.index(uid, data.index(uid) + 1)  # the data set's, after the file meta's
        digit = b"1" if uid[-1:] != b"1" else b"2"
        path.write_bytes(data[: at + len(uid) - 1] + digit + data[at + len(uid) :])
    with path.open("r+b") as out:
        out.seek(0, 2)
        out.write(struct.pack("<HH2s2xL", 0x7FE0, 0x0010, b"OW", size))
        start = out.tell()
        out.write(_marker(0))
        out.seek(start + size - MARK)
        out.write(_marker(1))  # the middle stays a hole: no disk used
        out.truncate(start + size - cut)
    return path


#: Identifying values of :func:`large_ct` at the top level and in nested sequences.
PHI = (b"DOE^JANE", b"PID-4711", b"PID-OTHER-1", b"ISSUER-OTHER-2", b"COMMENT-ABOUT", b"Saint")


def header_bytes(path: Path) -> bytes:
    """The bytes of the file at *path* before its pixel data's value."""
    elem = read_file(path)._dict[BaseTag(0x7FE00010)]
    assert isinstance(elem, RawDataElement)
    with path.open("rb") as handle:
        return handle.read(elem.value_tell)


def pixel_digest(path: Path) -> str:
    """SHA-256 of the pixel data's value in the file at *path*, read in chunks."""
    elem = read_file(path)._dict[BaseTag(0x7FE00010)]  # deferred: its offset, nothing loaded
    assert isinstance(elem, RawDataElement)
    assert elem.value is None  # not read
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        handle.seek(elem.value_tell)
        remaining = elem.length
        while remaining:
            chunk = handle.read(min(remaining, 8 << 20))
            assert chunk, f"{path}: pixel data cut short"
            digest.update(chunk)
            remaining -= len(chunk)
    return digest.hexdigest()


def memory(node: Served, field: str) -> int:
    """A memory figure of the node process (``VmHWM``, ``VmRSS``) in bytes, from /proc."""
    status = Path(f"/proc/{node.process.pid}/status").read_text(encoding="ascii")
    line = next(line for line in status.splitlines() if line.startswith(f"{field}:"))
    return int(line.split()[1]) * 1024


def store(node: Served, called: str, path: Path) -> int:
    """Send *path* with storescu to *called*; return the node's peak RSS growth (bytes)."""
    Path(f"/proc/{node.process.pid}/clear_refs").write_text("5")  # peak := current
    before = memory(node, "VmRSS")
    sent = dcmtk("storescu", "-to", 60, "-aec", called, "127.0.0.1", node.port, path)
    assert sent.returncode == 0, sent.stderr + node.text()
    peak = memory(node, "VmHWM")
    print(f"{called}: node RSS {before >> 20} MiB, peak {peak >> 20} MiB while storing")
    return peak - before


def test_a_300_mib_object_is_stored_with_bounded_memory(serve: Start, tmp_path: Path) -> None:
    """300 MiB to COERCION (as sent) and RESEARCH (de-identified): pixel data intact, RSS flat."""
    node = serve()
    source = large_ct(tmp_path / "large.dcm")
    expected = pixel_digest(source)

    growth = store(node, "COERCION", source)
    [kept] = stored(node.data)
    assert kept.stat().st_mode & 0o777 == 0o600
    original = dcmread(kept, stop_before_pixels=True)
    assert original.PatientName == "DOE^JANE^Q"
    assert all(value in header_bytes(kept) for value in PHI)  # stored as sent
    assert pixel_digest(kept) == expected
    assert growth < 100 << 20
    kept.unlink()  # bounded disk use in tmp

    growth = store(node, "RESEARCH", source)
    [research] = stored(node.data)
    assert research.stat().st_mode & 0o777 == 0o600
    ds = dcmread(research, stop_before_pixels=True)
    assert ds.PatientName != "DOE^JANE^Q" and ds.PatientID != "PID-4711"
    assert "InstitutionName" not in ds or ds.InstitutionName != "Saint Example Hospital"
    assert ds.PatientIdentityRemoved == "YES"
    head = header_bytes(research)
    assert [value for value in PHI if value in head] == []  # at every depth, long values too
    assert pixel_digest(research) == expected
    assert growth < 100 << 20
    research.unlink()  # bounded disk use in tmp
    assert [p for p in (node.data / "incoming").iterdir()] == []  # no temporary file left
    assert "Traceback" not in node.text()


def test_spooled_objects_refused_leave_no_temporary_file(
    serve: Start, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """24 MiB objects (spooled) cut short or of another instance: refused, nothing left on disk."""
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)  # the file's bytes as is
    node = serve()
    size = 24 << 20
    cut = large_ct(tmp_path / "cut.dcm", size, cut=2)
    other = large_ct(tmp_path / "other.dcm", size, mismatch=True)
    whole = large_ct(tmp_path / "whole.dcm", size)
    ae = AE(ae_title="CT01")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    for called in ("COERCION", "RESEARCH"):
        assoc = ae.associate("127.0.0.1", node.port, ae_title=called)
        assert assoc.is_established
        try:
            statuses = [int(assoc.send_c_store(path).Status) for path in (cut, other, whole)]
        finally:
            assoc.release()
        assert statuses == [0xC000, 0xA900, 0x0000], node.text()
        [kept] = stored(node.data)
        assert pixel_digest(kept) == pixel_digest(whole)
        kept.unlink()
    assert list((node.data / "incoming").iterdir()) == []
    assert not list(node.data.rglob("*.part"))
    assert "Traceback" not in node.text()


def test_a_spooled_object_is_forwarded_from_its_stored_file(serve: Start, tmp_path: Path) -> None:
    """A 24 MiB object (spooled, stored by rename) is queued by hard link and forwarded whole."""
    port = free_port()
    extra = remote_device("archive", "ARCHIVE", port) + forward_rule("ARCHIVE")
    node = serve(config_dir(tmp_path, extra=extra))
    source = large_ct(tmp_path / "large.dcm", 24 << 20)
    store(node, "COERCION", source)  # the archive is not up yet: queued
    [kept] = stored(node.data)
    [queued] = (node.data / "queue" / "ARCHIVE").glob("*.dcm")
    assert queued.stat().st_ino == kept.stat().st_ino  # a hard link, no copy
    [received] = receive_at_archive(port, 1, detail=node.text)
    assert received.SOPInstanceUID == dcmread(kept, stop_before_pixels=True).SOPInstanceUID
    assert hashlib.sha256(received.PixelData).hexdigest() == pixel_digest(kept)
    assert pixel_digest(kept) == pixel_digest(source)
