"""``coercion deidentify`` end to end: in-process through ``main()`` and as a real subprocess."""

from __future__ import annotations

import csv
import gc
import hashlib
import os
import re
import shutil
import signal
import stat
import subprocess
import warnings
import zlib
from pathlib import Path

import pytest
from pydicom import dcmread, dcmwrite
from pydicom.data import get_charset_files, get_testdata_files
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.fileset import FileSet
from pydicom.uid import DeflatedExplicitVRLittleEndian

from coercion.batch import KEY_FILE_COLUMNS
from coercion.profile import compile_profile
from coercion.profile.dicomdir import MEDIA_STORAGE_DIRECTORY
from tests.helpers import (
    coercion,
    coercion_command,
    coercion_in_process,
    make_dataset,
    wait_until,
)

pytestmark = pytest.mark.integration

PIXEL_DATA = 0x7FE00010
UNDEFINED = 0xFFFFFFFF


# -- helpers -----------------------------------------------------------------------


def synthetic(index: int, pixels: bytes = b"\x01\x00\x02\x00\x03\x00\x04\x00") -> Dataset:
    """Synthetic object number *index*: own patient; five instances per series, ten per study."""
    ds = make_dataset(patient=f"CLIWICZ^ZOFIA{index}", patient_id=f"PID-{index:05d}")
    ds.PatientBirthDate = f"19{40 + index % 50:02d}0{1 + index % 9}1{index % 10}"
    ds.StudyInstanceUID = f"1.2.826.0.1.3680043.99.6.{index // 10}"
    ds.SeriesInstanceUID = f"1.2.826.0.1.3680043.99.7.{index // 5}"
    ds.SOPInstanceUID = f"1.2.826.0.1.3680043.99.8.{index}"
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.PixelData = pixels
    return ds


def write(ds: Dataset, path: Path) -> Path:
    """Write *ds* as a Part 10 file (folders created) and return *path*."""
    path.parent.mkdir(parents=True, exist_ok=True)
    dcmwrite(path, ds, enforce_file_format=True)
    return path


def files(root: Path) -> dict[Path, Path]:
    """Every file under *root* keyed by its path relative to *root*."""
    return {p.relative_to(root): p for p in sorted(root.rglob("*")) if p.is_file()}


def snapshot(root: Path) -> dict[Path, tuple[str, int, int]]:
    """Content hash, mtime and mode of every file under *root*."""
    return {
        rel: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns, p.stat().st_mode)
        for rel, p in files(root).items()
    }


def key_rows(path: Path) -> list[dict[str, str]]:
    """The key file as a header check plus a list of row dicts."""
    with path.open(newline="") as handle:
        rows = list(csv.reader(handle))
    assert tuple(rows[0]) == KEY_FILE_COLUMNS
    return [dict(zip(rows[0], row, strict=True)) for row in rows[1:]]


def age(path: Path) -> int:
    """Give *path* an old modification time (a rewrite would change it); return it in ns."""
    os.utime(path, ns=(1_000_000_000 * 10**9, 1_000_000_000 * 10**9))
    return path.stat().st_mtime_ns


def temporaries(root: Path) -> list[Path]:
    """Leftover temporary files of atomic_output under *root*."""
    return [p for p in root.rglob("*") if p.name.endswith(".part")]


@pytest.fixture
def key(tmp_path: Path) -> Path:
    """A key file in tmp_path (never the user's default key)."""
    return tmp_path / "keys" / "secret.key"


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A nested source tree: DICOM files at several depths, one named notes.txt, one text .dcm."""
    src = tmp_path / "src"
    write(synthetic(0), src / "top.dcm")
    write(synthetic(1), src / "p1" / "study" / "series" / "one.dcm")
    write(synthetic(2), src / "p1" / "study" / "series" / "two.dcm")
    write(synthetic(3), src / "p2" / "deep" / "er" / "still" / "notes.txt")
    (src / "p2" / "x.dcm").write_text("This is a text file with a .dcm name\n")
    return src


# -- layout ------------------------------------------------------------------------


def test_tree_is_mirrored_and_dicom_found_by_content(tmp_path: Path, tree: Path, key: Path) -> None:
    """Nested files are mirrored; notes.txt (DICOM) is processed, x.dcm (text) skipped; exit 0."""
    dst = tmp_path / "dst"
    err = coercion_in_process(
        "deidentify", "--key", key, "--workers", "1", tree, dst, check=True
    ).stderr
    assert set(files(dst)) == {
        Path("top.dcm"),
        Path("p1/study/series/one.dcm"),
        Path("p1/study/series/two.dcm"),
        Path("p2/deep/er/still/notes.txt"),
    }
    notes = dcmread(dst / "p2" / "deep" / "er" / "still" / "notes.txt")
    assert notes.PatientIdentityRemoved == "YES"
    assert notes.PatientID != synthetic(3).PatientID
    assert f"skipped {tree / 'p2' / 'x.dcm'}: not a DICOM file" in err
    assert "4 written" in err and "1 not DICOM" in err and "0 failed" in err


def test_skipped_path_with_brackets_is_reported_verbatim(tmp_path: Path, key: Path) -> None:
    """A skipped file is named exactly as it is, even when its name holds [brackets]."""
    src = tmp_path / "src"
    write(synthetic(0), src / "a.dcm")
    odd = src / "scan [draft].dcm"
    odd.write_text("draft notes\n")
    result = coercion_in_process(
        "deidentify", "--key", key, "--workers", "1", src, tmp_path / "dst", check=True
    )
    assert f"skipped {odd}: not a DICOM file" in result.stderr


def test_sources_are_never_modified(tmp_path: Path, tree: Path, key: Path) -> None:
    """No source file changes (content, mtime, mode) and none is added, whatever the options."""
    before = snapshot(tree)
    coercion_in_process(
        "deidentify", "--key", key, "--workers", "1", tree, tmp_path / "a", check=True
    )
    coercion_in_process(
        "deidentify",
        "--key",
        key,
        "--key-file",
        tmp_path / "k.csv",
        "--rename",
        tree,
        tmp_path / "b",
        check=True,
    )
    coercion_in_process(
        "deidentify", "--key", key, "--resume", "--workers", "2", tree, tmp_path / "a", check=True
    )
    assert snapshot(tree) == before


@pytest.mark.parametrize("inside", ["dst_in_src", "src_in_dst", "same"])
def test_overlapping_destination_is_refused(tmp_path: Path, key: Path, inside: str) -> None:
    """A destination inside the source (or the reverse) is refused with a clear message, exit 2."""
    if inside == "src_in_dst":
        dst = tmp_path / "dst"
        src = dst / "src"
    else:
        src = tmp_path / "src"
        dst = src / "out" if inside == "dst_in_src" else src
    write(synthetic(0), src / "a.dcm")
    outer = dst if inside == "src_in_dst" else src
    before = snapshot(outer)
    result = coercion_in_process("deidentify", "--key", key, "--workers", "1", src, dst)
    assert result.returncode == 2, result.stderr
    err = result.stderr
    assert "error:" in err and "overlaps" in err and str(dst) in err
    assert snapshot(outer) == before
    assert not (src / "out").exists()


def test_overlapping_destination_is_refused_by_the_command(tmp_path: Path, key: Path) -> None:
    """The real command refuses DST inside SRC before writing anything, with a non-zero status."""
    write(synthetic(0), tmp_path / "src" / "a.dcm")
    result = coercion("deidentify", "--key", key, "src", "src/out", cwd=tmp_path)
    assert result.returncode == 2
    assert "src/out: destination overlaps source src" in result.stderr
    assert not (tmp_path / "src" / "out").exists()


# -- key file ----------------------------------------------------------------------


def test_key_file_lists_every_written_file(tmp_path: Path, tree: Path, key: Path) -> None:
    """The key file (0600) has one row per written file with original and new ids; a PHI warning."""
    dst, key_file = tmp_path / "dst", tmp_path / "private" / "key.csv"
    err = coercion_in_process(
        "deidentify", "--key", key, "--key-file", key_file, "--workers", "1", tree, dst, check=True
    ).stderr
    assert f"warning: {key_file} holds PHI" in err
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    rows = key_rows(key_file)
    assert sorted(Path(r["output"]) for r in rows) == sorted(files(dst))
    for row in rows:
        source, output = dcmread(row["source"]), dcmread(dst / row["output"])
        assert row["original_patient_id"] == source.PatientID
        assert row["new_patient_id"] == output.PatientID != source.PatientID
        assert row["original_patient_name"] == str(source.PatientName)
        for level, keyword in (
            ("study", "StudyInstanceUID"),
            ("series", "SeriesInstanceUID"),
            ("sop", "SOPInstanceUID"),
        ):
            assert row[f"original_{level}_instance_uid"] == source[keyword].value
            assert row[f"new_{level}_instance_uid"] == output[keyword].value
            assert output[keyword].value != source[keyword].value


# -- rename ------------------------------------------------------------------------


def test_rename_names_outputs_by_new_ids_only(tmp_path: Path, key: Path) -> None:
    """--rename writes <PatientID>/<StudyUID>/<SeriesUID>/<SOPUID>.dcm; no original id in paths."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    originals = [synthetic(i) for i in range(12)]
    for ds in originals:
        write(ds, src / str(ds.PatientName) / str(ds.PatientID) / f"{ds.SOPInstanceUID}.dcm")
    coercion_in_process(
        "deidentify", "--key", key, "--rename", "--workers", "1", src, dst, check=True
    )
    written = files(dst)
    assert len(written) == 12
    for relative, path in written.items():
        ds = dcmread(path)
        assert relative == Path(
            str(ds.PatientID),
            ds.StudyInstanceUID,
            ds.SeriesInstanceUID,
            f"{ds.SOPInstanceUID}.dcm",
        )
    text = "\n".join(str(p) for p in written)
    for ds in originals:
        for value in (
            ds.PatientID,
            ds.StudyInstanceUID,
            ds.SeriesInstanceUID,
            ds.SOPInstanceUID,
            *str(ds.PatientName).split("^"),
        ):
            assert value not in text
    assert len({p.parts[1] for p in written}) == 2  # twelve instances in two studies


# -- resume ------------------------------------------------------------------------


def test_resume_skips_existing_outputs_and_lists_them(tmp_path: Path, key: Path) -> None:
    """--resume leaves existing outputs untouched (mtime), writes the rest, keys all of them."""
    src, dst, key_file = tmp_path / "src", tmp_path / "dst", tmp_path / "key.csv"
    for i in range(6):
        write(synthetic(i), src / f"{i}.dcm")
    coercion_in_process("deidentify", "--key", key, "--workers", "1", src, dst, check=True)
    (dst / "4.dcm").unlink()
    (dst / "5.dcm").unlink()
    kept = {rel: age(p) for rel, p in files(dst).items()}
    result = coercion_in_process(
        "deidentify",
        "--key",
        key,
        "--key-file",
        key_file,
        "--resume",
        "--workers",
        "1",
        src,
        dst,
        check=True,
    )
    assert "2 written, 4 already done" in result.stderr
    assert set(files(dst)) == {Path(f"{i}.dcm") for i in range(6)}
    assert {rel: files(dst)[rel].stat().st_mtime_ns for rel in kept} == kept
    assert sorted(r["output"] for r in key_rows(key_file)) == [f"{i}.dcm" for i in range(6)]


# -- determinism -------------------------------------------------------------------


def test_same_key_gives_identical_outputs_other_key_other_uids(tmp_path: Path, tree: Path) -> None:
    """Two runs with one key are byte-identical; another key gives other UIDs and ids."""
    key_a, key_b = tmp_path / "a.key", tmp_path / "b.key"
    coercion_in_process(
        "deidentify", "--key", key_a, "--workers", "1", tree, tmp_path / "one", check=True
    )
    coercion_in_process(
        "deidentify", "--key", key_a, "--workers", "1", tree, tmp_path / "two", check=True
    )
    coercion_in_process(
        "deidentify", "--key", key_b, "--workers", "1", tree, tmp_path / "three", check=True
    )
    one, two, three = (files(tmp_path / n) for n in ("one", "two", "three"))
    assert set(one) == set(two) == set(three)
    for rel in one:
        assert one[rel].read_bytes() == two[rel].read_bytes()
        a, b = dcmread(one[rel]), dcmread(three[rel])
        for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
            assert a[keyword].value != b[keyword].value
        assert a.PatientID != b.PatientID


def test_two_workers_and_one_give_identical_outputs(tmp_path: Path, key: Path) -> None:
    """--workers 2 writes the same bytes as --workers 1, over several chunks of work."""
    src = tmp_path / "src"
    for i in range(80):
        write(synthetic(i), src / f"d{i % 3}" / f"{i}.dcm")
    coercion_in_process(
        "deidentify", "--key", key, "--workers", "1", src, tmp_path / "w1", check=True
    )
    coercion_in_process(
        "deidentify", "--key", key, "--workers", "2", src, tmp_path / "w2", check=True
    )
    w1, w2 = files(tmp_path / "w1"), files(tmp_path / "w2")
    assert len(w1) == 80 and set(w1) == set(w2)
    assert all(w1[rel].read_bytes() == w2[rel].read_bytes() for rel in w1)


# -- failures ----------------------------------------------------------------------


def test_truncated_file_is_reported_and_the_others_written(tmp_path: Path, key: Path) -> None:
    """A truncated file fails with its path and a reason, exit 1; others written; no partials."""
    src = tmp_path / "src"
    for i in range(4):
        write(synthetic(i), src / f"{i}.dcm")
    big = write(synthetic(9, pixels=bytes(range(256)) * 256), tmp_path / "big.dcm").read_bytes()
    (src / "cut.dcm").write_bytes(big[:-1000])
    small = write(synthetic(8), tmp_path / "small.dcm").read_bytes()
    (src / "cut_small.dcm").write_bytes(small[:-3])
    result = coercion("deidentify", "--key", key, "--workers", "2", "src", "dst", cwd=tmp_path)
    assert result.returncode != 0
    for name in ("cut.dcm", "cut_small.dcm"):
        assert re.search(rf"failed src/{name}: malformed DICOM: .*truncated", result.stderr)
        assert not (tmp_path / "dst" / name).exists()
    assert set(files(tmp_path / "dst")) == {Path(f"{i}.dcm") for i in range(4)}
    assert temporaries(tmp_path / "dst") == []
    assert "CLIWICZ" not in result.stderr and "ZOFIA" not in result.stderr


def test_unknown_option_suggests_the_right_name(tmp_path: Path, tree: Path, key: Path) -> None:
    """--option RetainUIDOption fails with exit 2 and a did-you-mean for RetainUIDsOption."""
    result = coercion(
        "deidentify", "--key", key, "--option", "RetainUIDOption", tree, "dst", cwd=tmp_path
    )
    assert result.returncode == 2
    assert "RetainUIDOption" in result.stderr
    assert "did you mean 'RetainUIDsOption'?" in result.stderr
    assert not (tmp_path / "dst").exists()


def test_unknown_option_in_process(tmp_path: Path, tree: Path, key: Path) -> None:
    """main() maps the unknown option to exit status 2 with the hint."""
    result = coercion_in_process(
        "deidentify", "--key", key, "--option", "retainuidoption", tree, tmp_path / "dst"
    )
    assert result.returncode == 2, result.stderr
    assert "did you mean 'RetainUIDsOption'?" in result.stderr


def _leaky(index: int) -> Dataset:
    """An object whose ManufacturerModelName (kept: not in Table E.1-1) holds the patient's name."""
    ds = synthetic(index)
    family, given = str(ds.PatientName).split("^")
    ds.ManufacturerModelName = f"Workstation of {given.title()} {family.title()}"
    assert compile_profile().action_for(0x00081090) is None
    return ds


@pytest.mark.parametrize("deflated", [False, True], ids=["explicit", "deflated"])
def test_verification_fails_a_file_that_still_names_the_patient(
    tmp_path: Path, key: Path, deflated: bool
) -> None:
    """A leak fails the file naming PatientName (never the value), exit 1; --no-verify writes it."""
    src = tmp_path / "src"
    leaky = _leaky(5)
    if deflated:
        leaky.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    write(leaky, src / "leaky.dcm")
    write(synthetic(6), src / "clean.dcm")
    result = coercion_in_process(
        "deidentify", "--key", key, "--workers", "1", src, tmp_path / "checked"
    )
    assert result.returncode == 1, result.stderr
    err = result.stderr
    assert re.search(
        r"failed \S*leaky\.dcm: output still holds identifying values of PatientName", err
    )
    assert "Zofia5" not in err and "CLIWICZ" not in err and "Cliwicz" not in err
    assert set(files(tmp_path / "checked")) == {Path("clean.dcm")}
    coercion_in_process(
        "deidentify",
        "--key",
        key,
        "--workers",
        "1",
        "--no-verify",
        src,
        tmp_path / "open",
        check=True,
    )
    out = dcmread(tmp_path / "open" / "leaky.dcm")
    assert out.ManufacturerModelName == leaky.ManufacturerModelName


def test_clean_descriptors_from_the_command_line_passes_verification(
    tmp_path: Path, key: Path
) -> None:
    """--option CleanDescriptorsOption with default verification writes cleaned descriptions."""
    ds = synthetic(7)
    family, given = str(ds.PatientName).split("^")
    ds.ReferringPhysicianName = "HOUSE^GREGORY"
    ds.StudyDescription = f"CT head {given.title()} {family.title()} 1970-02-13"
    item = Dataset()
    item.ImageComments = f"Dr House: {family}, {ds.AccessionNumber}, call 555-123-4567, stable"
    ds.ReferencedSeriesSequence = [item]
    write(ds, tmp_path / "src" / "in.dcm")
    result = coercion(
        "deidentify", "--key", key, "--option", "CleanDescriptorsOption",
        tmp_path / "src", tmp_path / "dst",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = dcmread(tmp_path / "dst" / "in.dcm")
    assert out.StudyDescription == "CT head"
    assert out.ReferencedSeriesSequence[0].ImageComments == "Dr : , , call , stable"


# -- every file pydicom ships ------------------------------------------------------


def _raw_value(ds: Dataset, keyword: str) -> bytes | None:
    """The value of *keyword* as stored in the file, without padding."""
    elem = ds.get_item(keyword)
    if elem is None or elem.value is None:
        return None
    value = elem.value if isinstance(elem, RawDataElement) else str(elem.value).encode("latin-1")
    return bytes(value).strip(b" \x00")


def _scanned_bytes(path: Path) -> bytes:
    """The bytes of a Part 10 file, inflated when deflated, without the pixel data value."""
    data = path.read_bytes()
    ds = dcmread(path)
    if ds.file_meta.TransferSyntaxUID == DeflatedExplicitVRLittleEndian:
        group_length = int.from_bytes(data[140:144], "little")
        end = 144 + group_length
        data = data[:end] + zlib.decompress(data[end:], -zlib.MAX_WBITS)
    pixels = ds.get_item(PIXEL_DATA)
    if pixels is not None and pixels.value and len(pixels.value) >= 64:
        data = data.replace(bytes(pixels.value), b"")
    return data


_ALNUM = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


def _occurs(data: bytes, needle: bytes, edge: bytes) -> bool:
    """True when *needle* occurs in *data* not flanked by a byte of *edge*."""
    if not edge:
        return needle in data
    bound = rb"[" + re.escape(edge) + rb"]"
    pattern = rb"(?<!" + bound + rb")" + re.escape(needle) + rb"(?!" + bound + rb")"
    return re.search(pattern, data) is not None


def _short_elements(ds: Dataset) -> list[int]:
    """Tags whose declared length is more than the bytes the file holds for them."""
    short = []
    for tag in list(ds.keys()):
        raw = ds.get_item(tag)
        if (
            isinstance(raw, RawDataElement)
            and raw.length != UNDEFINED
            and raw.value is not None
            and len(raw.value) < raw.length
        ):
            short.append(int(tag))
        if isinstance(raw, RawDataElement) and _items_overrun(raw):
            short.append(int(tag))
        if ds[tag].VR == "SQ":
            for item in ds[tag].value:
                short += _short_elements(item)
    return short


def _items_overrun(raw: RawDataElement) -> bool:
    """True when the items of a defined-length sequence declare more bytes than it holds."""
    value = raw.value or b""
    if raw.length == UNDEFINED or not value.startswith(b"\xfe\xff\x00\xe0"):
        return False
    pos = 0
    while pos + 8 <= len(value):
        length = int.from_bytes(value[pos + 4 : pos + 8], "little")
        if length == UNDEFINED:
            return False
        pos += 8 + length
    return pos > len(value)


def _cannot_be_read_fully(path: Path) -> bool:
    """True when pydicom fails on the file or finds an element cut short."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            return bool(_short_elements(dcmread(path)))
    except Exception:
        return True


@pytest.fixture(scope="module")
def bundled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every file pydicom ships (test and character set files, local only), copied with folders."""
    paths = [Path(p) for p in (*get_testdata_files(), *get_charset_files()) if Path(p).is_file()]
    base = Path(os.path.commonpath(paths))
    src = tmp_path_factory.mktemp("bundled") / "src"
    for path in paths:
        target = src / path.relative_to(base)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    return src


def _pydicom_reads(path: Path) -> bool:
    """True when pydicom reads *path* with its defaults (no force)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dcmread(path)
    except Exception:
        return False
    return True


def _loads_as_file_set(path: Path) -> int:
    """The number of instances pydicom's FileSet loads from DICOMDIR *path*, all found."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a referenced file missing is a warning: fail on it
        warnings.simplefilter("ignore", ResourceWarning)  # FileSet's own temporary folder
        fs = FileSet(path)
        count = sum(1 for instance in fs if Path(instance.path).is_file())
        del fs
        gc.collect()
    return count


def test_every_file_pydicom_reads_is_deidentified_or_refused_as_truncated(
    bundled: Path, tmp_path: Path
) -> None:
    """pydicom's corpus: what pydicom reads is written, readable and id-free, or refused as cut."""
    key_file = tmp_path / "key.csv"
    result = coercion(
        "deidentify", "--key", tmp_path / "k", "--key-file", key_file, bundled, tmp_path / "dst"
    )
    outputs = {Path(r["source"]): tmp_path / "dst" / r["output"] for r in key_rows(key_file)}
    skipped = re.findall(r"^skipped (.+): not a DICOM file$", result.stderr, re.MULTILINE)
    failed = dict(re.findall(r"^failed (.+?): malformed DICOM: (.+)$", result.stderr, re.MULTILINE))
    sources = list(files(bundled).values())
    readable = [path for path in sources if _pydicom_reads(path)]
    print(  # the figures of the run (pytest -s shows them)
        f"pydicom corpus: {len(sources)} files, {len(readable)} read by pydicom, "
        f"{len(outputs)} outputs, {len(skipped)} not DICOM, {len(failed)} failed"
    )
    assert len(outputs) + len(skipped) + len(failed) == len(sources), result.stderr
    assert result.returncode == (1 if failed else 0)
    for path in readable:
        assert path in outputs or str(path) in failed, path
    # Only files cut short are refused, each named with the element it is cut in.
    assert {Path(p).name for p in failed} == {"MR_truncated.dcm", "rtplan_truncated.dcm"}
    for path, reason in failed.items():
        assert re.fullmatch(r"file is truncated in \([0-9A-F]{4},[0-9A-F]{4}\)", reason), reason
        assert _cannot_be_read_fully(Path(path))
    for path in skipped:
        with pytest.raises(InvalidDicomError):
            dcmread(path)

    messages = result.stderr
    for name in sorted(map(str, sources), key=len, reverse=True):
        messages = messages.replace(name, "<path>")  # file names are not patient data
    for source, output in outputs.items():
        written = dcmread(output)
        if written.file_meta.get("MediaStorageSOPClassUID") == MEDIA_STORAGE_DIRECTORY:
            records = written.DirectoryRecordSequence
            assert _loads_as_file_set(output) == sum("ReferencedFileID" in r for r in records)
            continue
        _assert_no_source_identifier(source, output, written, messages)
    assert temporaries(tmp_path / "dst") == []


def _assert_no_source_identifier(
    source: Path, output: Path, written: Dataset, messages: str
) -> None:
    """*output* (read as *written*) is marked and holds none of *source*'s ids; nor do messages."""
    assert written.PatientIdentityRemoved == "YES"
    for meta, keyword in (
        ("MediaStorageSOPInstanceUID", "SOPInstanceUID"),
        ("MediaStorageSOPClassUID", "SOPClassUID"),
    ):
        if keyword in written:  # (UN_sequence.dcm has neither: its meta keeps its own)
            assert written.file_meta[meta].value == written[keyword].value, (source, meta)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # some sources are odd on purpose; outputs are not
        original = dcmread(source, force=True)
    data = _scanned_bytes(output)
    for keyword in ("PatientName", "PatientID", "PatientBirthDate"):
        value = _raw_value(original, keyword)
        if value is not None and len(value) >= 3:
            # Bounded, as verification looks: a short id such as "204" inside a
            # new UID's digits (random key, random digits) is not that id.
            assert not _occurs(data, value, _ALNUM), (source, keyword)
            assert value.decode("latin-1") not in messages
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        value = _raw_value(original, keyword)
        if value:
            assert not _occurs(data, value, b"0123456789."), (source, keyword)
        if keyword == "SOPInstanceUID" and value:
            assert str(written.SOPInstanceUID).startswith("2.25."), source


# -- Ctrl-C ------------------------------------------------------------------------


def test_ctrl_c_leaves_complete_outputs_and_resume_finishes(tmp_path: Path, key: Path) -> None:
    """SIGINT mid-run: exit 130, 'Aborted!', only complete outputs, no temporaries; resume ends."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    pixels = bytes(range(256)) * 8
    total = 300
    for i in range(total):
        write(synthetic(i, pixels), src / f"d{i // 50}" / f"{i:03d}.dcm")
    key_file = tmp_path / "key.csv"
    command = ["deidentify", "--workers", "2", "--key", key, "--key-file", key_file, src, dst]
    process = subprocess.Popen(
        coercion_command(*command),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:

        def first_output() -> bool:
            assert process.poll() is None, "finished before any output appeared"
            return any(dst.rglob("*.dcm"))

        wait_until(first_output, "a first output", timeout=60, interval=0.002)
        os.killpg(process.pid, signal.SIGINT)  # Ctrl-C reaches the whole process group
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130, err
    assert err.rstrip().endswith("Aborted!")
    assert temporaries(dst) == []
    done = files(dst)
    assert 0 < len(done) < total
    for path in done.values():
        assert dcmread(path).PixelData == pixels
    rows = key_rows(key_file)
    assert sorted(r["output"] for r in rows) == sorted(str(rel) for rel in done)

    mtimes = {rel: age(p) for rel, p in done.items()}
    result = coercion(
        "deidentify", "--key", key, "--key-file", key_file, "--resume", src, dst, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert f"{total - len(done)} written, {len(done)} already done" in result.stderr
    finished = files(dst)
    assert len(finished) == total
    assert {rel: finished[rel].stat().st_mtime_ns for rel in done} == mtimes
    assert all(dcmread(p).PixelData == pixels for p in finished.values())
    assert len(key_rows(key_file)) == total
    assert temporaries(dst) == []


def test_one_file_imports_only_what_deidentify_uses(tmp_path: Path, key: Path) -> None:
    """``coercion deidentify`` of one file loads no numpy, store, LDAP, network or worker pool."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    write(synthetic(0), src / "a.dcm")
    # PYTHONPROFILEIMPORTTIME (python -X importtime) lists every module imported on stderr.
    env = {"PYTHONPROFILEIMPORTTIME": "1"}
    result = coercion("deidentify", "--key", key, src, dst, env=env, check=True)
    imported = {
        line.rsplit("|", 1)[1].strip()
        for line in result.stderr.splitlines()
        if line.startswith("import time:")
    }
    assert "pydicom.dataset" in imported  # the listing is there
    # pydicom's pixel handlers try `import numpy`, which is refused (listed, but loads
    # nothing): numpy loaded would list its submodules.
    assert [name for name in imported if name.startswith("numpy.")] == []
    unused = ("sqlalchemy", "ldap3", "pynetdicom", "jsonschema")
    assert [name for name in imported if name.split(".")[0] in unused] == []
    assert "concurrent.futures.process" not in imported
    assert dcmread(dst / "a.dcm").PatientName != synthetic(0).PatientName
