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
from pydicom.tag import BaseTag
from pydicom.uid import generate_uid

from coercion.part10 import read_file
from tests.helpers import Served, Start, dcmtk, make_dataset, stored

pytestmark = pytest.mark.integration

#: The pixel data: 300 MiB, zero bytes but for a marked first and last MiB.
ROWS, COLUMNS = 10240, 15360
SIZE = ROWS * COLUMNS * 2
MARK = 1 << 20


def _marker(index: int) -> bytes:
    """One MiB of a pattern that differs at each end of the pixel data."""
    return hashlib.sha256(str(index).encode()).digest() * (MARK // 32)


def large_ct(path: Path) -> Path:
    """A valid CT object with 300 MiB of pixel data, written as a sparse file."""
    ds = make_dataset()
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.Rows, ds.Columns = ROWS, COLUMNS
    del ds.PixelData
    ds.save_as(path, enforce_file_format=True)
    with path.open("r+b") as out:
        out.seek(0, 2)
        out.write(struct.pack("<HH2s2xL", 0x7FE0, 0x0010, b"OW", SIZE))
        start = out.tell()
        out.write(_marker(0))
        out.seek(start + SIZE - MARK)
        out.write(_marker(1))  # the middle stays a hole: no disk used
    return path


def pixel_digest(path: Path) -> str:
    """SHA-256 of the pixel data's value in the file at *path*, read in chunks."""
    elem = read_file(path)._dict[BaseTag(0x7FE00010)]  # deferred: its offset, nothing loaded
    assert isinstance(elem, RawDataElement)
    assert elem.value is None and elem.length == SIZE
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        handle.seek(elem.value_tell)
        remaining = SIZE
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
    assert pixel_digest(research) == expected
    assert growth < 100 << 20
    assert [p for p in (node.data / "incoming").iterdir()] == []  # no temporary file left
    assert "Traceback" not in node.text()
