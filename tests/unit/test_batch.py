"""Folder de-identification: planning, the worker pool, interruption, verification, key file."""

from __future__ import annotations

import csv
import stat
from collections import Counter
from pathlib import Path

import pytest
from pydicom import dcmread, dcmwrite
from pydicom.dataset import Dataset
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian

from coercion import batch
from coercion.errors import ConfigError
from coercion.profile import Option, compile_profile
from tests.helpers import SECRET, make_dataset


def synthetic(index: int) -> Dataset:
    """Synthetic object number *index*: its own patient, study and instance."""
    ds = make_dataset(patient=f"BATCHOWSKA^ANNA{index}", patient_id=f"PID-{index:05d}")
    ds.StudyInstanceUID = f"1.2.826.0.1.3680043.99.3.{index // 10}"
    ds.SeriesInstanceUID = f"1.2.826.0.1.3680043.99.4.{index // 5}"
    ds.SOPInstanceUID = f"1.2.826.0.1.3680043.99.5.{index}"
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ds


def write(ds: Dataset, path: Path) -> Path:
    """Write *ds* as a Part 10 file (folders created) and return *path*."""
    path.parent.mkdir(parents=True, exist_ok=True)
    dcmwrite(path, ds, enforce_file_format=True)
    return path


def settings(
    destination: Path, *, resume: bool = False, verify: bool = True
) -> batch.BatchSettings:
    """Batch settings with the Basic Profile and the fixed test secret."""
    return batch.BatchSettings(frozenset(), SECRET, destination, resume=resume, verify=verify)


def outputs(root: Path) -> set[Path]:
    """Every file under *root*, relative to it."""
    return {p.relative_to(root) for p in root.rglob("*") if p.is_file()}


# -- plan --------------------------------------------------------------------------


def test_plan_lists_nested_files_relative_to_the_source(tmp_path: Path) -> None:
    """One source folder is walked recursively; each task keeps its path below the source."""
    src = tmp_path / "src"
    write(synthetic(1), src / "a" / "b" / "c" / "one.dcm")
    write(synthetic(2), src / "two.dcm")
    (src / "a" / "notes.txt").write_text("hello")
    tasks = batch.plan([src], tmp_path / "dst")
    assert {t.relative for t in tasks} == {
        Path("a/b/c/one.dcm"),
        Path("two.dcm"),
        Path("a/notes.txt"),
    }
    assert all(t.size == Path(t.source).stat().st_size for t in tasks)


def test_plan_mirrors_several_sources_under_their_names(tmp_path: Path) -> None:
    """Several sources are each mirrored under their own folder name."""
    write(synthetic(1), tmp_path / "left" / "x.dcm")
    write(synthetic(2), tmp_path / "right" / "x.dcm")
    tasks = batch.plan([tmp_path / "left", tmp_path / "right"], tmp_path / "dst")
    assert {t.relative for t in tasks} == {Path("left/x.dcm"), Path("right/x.dcm")}


def test_plan_refuses_two_sources_with_the_same_name(tmp_path: Path) -> None:
    """Two sources named alike would collide in the destination: ConfigError."""
    write(synthetic(1), tmp_path / "a" / "scans" / "x.dcm")
    write(synthetic(2), tmp_path / "b" / "scans" / "x.dcm")
    with pytest.raises(ConfigError, match="scans"):
        batch.plan([tmp_path / "a" / "scans", tmp_path / "b" / "scans"], tmp_path / "dst")


@pytest.mark.parametrize(
    "destination",
    ["src/out", "src", "src/deep/er/out", "src/../src/out"],
    ids=["inside", "same", "deep", "dotdot"],
)
def test_plan_refuses_destination_inside_source(tmp_path: Path, destination: str) -> None:
    """A destination inside (or equal to) a source is refused with exit code 2."""
    src = tmp_path / "src"
    write(synthetic(1), src / "x.dcm")
    with pytest.raises(ConfigError) as caught:
        batch.plan([src], tmp_path / destination)
    assert "overlaps" in str(caught.value)
    assert caught.value.exit_code == 2


def test_plan_refuses_source_inside_destination(tmp_path: Path) -> None:
    """A source inside the destination is refused too."""
    src = tmp_path / "dst" / "src"
    write(synthetic(1), src / "x.dcm")
    with pytest.raises(ConfigError, match="overlaps"):
        batch.plan([src], tmp_path / "dst")


def test_plan_refuses_destination_reached_through_a_symlink(tmp_path: Path) -> None:
    """A destination that is a symlink into the source is refused like the real path."""
    src = tmp_path / "src"
    write(synthetic(1), src / "x.dcm")
    (src / "out").mkdir()
    (tmp_path / "link").symlink_to(src / "out")
    with pytest.raises(ConfigError, match="overlaps"):
        batch.plan([src], tmp_path / "link")


def test_plan_refuses_a_missing_source(tmp_path: Path) -> None:
    """A source that does not exist is a ConfigError naming it."""
    with pytest.raises(ConfigError) as caught:
        batch.plan([tmp_path / "absent"], tmp_path / "dst")
    assert str(tmp_path / "absent") in str(caught.value)


# -- run ---------------------------------------------------------------------------


def test_run_writes_deidentified_outputs(tmp_path: Path) -> None:
    """Each DICOM file is written de-identified; the text file is skipped."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    for i in range(3):
        write(synthetic(i), src / f"s{i}" / f"{i}.dcm")
    (src / "readme.dcm").write_text("not dicom\n")
    summary = batch.run(batch.plan([src], dst), settings(dst), workers=1)
    assert summary.count("written") == 3
    assert summary.count("skipped") == 1
    assert outputs(dst) == {Path(f"s{i}/{i}.dcm") for i in range(3)}
    for i in range(3):
        ds = dcmread(dst / f"s{i}" / f"{i}.dcm")
        assert ds.PatientID != synthetic(i).PatientID
        assert ds.SOPInstanceUID != synthetic(i).SOPInstanceUID
        assert ds.PatientIdentityRemoved == "YES"


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")  # what a hostile file holds
def test_rename_keeps_received_dot_dot_values_inside_the_destination(tmp_path: Path) -> None:
    """--rename with kept UIDs of '..' and '.x': every output stays under DST, none hidden."""
    src, dst = tmp_path / "src", tmp_path / "work" / "dst"
    ds = synthetic(1)
    ds.StudyInstanceUID = ".."
    ds.SeriesInstanceUID = ".."
    ds.SOPInstanceUID = ".hidden.part"
    write(ds, src / "1.dcm")
    options = batch.BatchSettings(
        frozenset({Option.RetainUIDsOption}), SECRET, dst, rename=True, verify=True
    )
    summary = batch.run(batch.plan([src], dst), options, workers=1)
    assert summary.count("written") == 1
    written = [p for p in (tmp_path / "work").rglob("*") if p.is_file()]
    assert len(written) == 1
    relative = written[0].relative_to(dst)  # raises when the output climbed out of DST
    assert all(not part.startswith(".") for part in relative.parts)
    assert dcmread(written[0]).StudyInstanceUID == ".."


def test_run_reports_each_result_once(tmp_path: Path) -> None:
    """on_result is called exactly once per file, across worker processes."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    for i in range(70):
        write(synthetic(i), src / f"{i:03d}.dcm")
    seen: list[Path | str] = []
    summary = batch.run(batch.plan([src], dst), settings(dst), 2, lambda r: seen.append(r.source))
    assert sorted(map(str, seen)) == sorted(str(p) for p in src.iterdir())
    assert len(summary.results) == 70
    assert summary.count("written") == 70


@pytest.fixture(scope="module")
def many_sources(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """320 small synthetic files: ten chunks of work for the pool."""
    src = tmp_path_factory.mktemp("many") / "src"
    for i in range(320):
        write(synthetic(i), src / f"d{i // 40}" / f"{i:03d}.dcm")
    return src


class _InterruptAfter:
    """An on_result callback that raises KeyboardInterrupt (Ctrl-C) once, at result *n*."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.calls = 0

    def __call__(self, _result: batch.FileResult) -> None:
        self.calls += 1
        if self.calls == self.n:
            raise KeyboardInterrupt


@pytest.mark.parametrize("at", [10, 100], ids=["while-submitting", "while-draining"])
def test_interrupted_run_accounts_for_every_output_once(
    tmp_path: Path, many_sources: Path, at: int
) -> None:
    """After Ctrl-C the summary lists each written output exactly once, and only those."""
    dst = tmp_path / "dst"
    summary = batch.run(batch.plan([many_sources], dst), settings(dst), 2, _InterruptAfter(at))
    assert summary.interrupted
    sources = Counter(r.source for r in summary.results)
    assert [s for s, n in sources.items() if n > 1] == []
    written = {r.output for r in summary.results if r.status == "written"}
    assert written == outputs(dst)
    rows = batch.write_key_file(tmp_path / "key.csv", summary.results)
    assert rows == len(outputs(dst))


def test_truncated_pixel_data_fails_and_others_are_written(tmp_path: Path) -> None:
    """A file cut inside its pixel data fails with its path; the others are written."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    write(synthetic(1), src / "good.dcm")
    data = write(synthetic(2), tmp_path / "whole.dcm").read_bytes()
    (src / "bad.dcm").write_bytes(data[:-3])
    summary = batch.run(batch.plan([src], dst), settings(dst), workers=1)
    [failed] = summary.failed
    assert failed.source == src / "bad.dcm"
    assert str(src / "bad.dcm") in failed.reason and "truncated" in failed.reason
    assert outputs(dst) == {Path("good.dcm")}


def test_file_cut_inside_a_header_value_is_reported_failed(tmp_path: Path) -> None:
    """A file cut in the middle of an element value is failed, not written as if complete."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    ds = synthetic(3)
    data = write(ds, tmp_path / "whole.dcm").read_bytes()
    cut = data.find(str(ds.PatientName).encode()) + 5
    src.mkdir()
    (src / "cut.dcm").write_bytes(data[:cut])
    summary = batch.run(batch.plan([src], dst), settings(dst), workers=1)
    assert [r.status for r in summary.results] == ["failed"]
    assert outputs(dst) == set()


def _with_name_in_model(syntax: str) -> Dataset:
    """A synthetic object whose ManufacturerModelName (not in Table E.1-1) names the patient."""
    ds = synthetic(4)
    ds.ManufacturerModelName = "Scanner of Anna4 Batchowska"
    assert compile_profile().action_for(0x00081090) is None  # kept by the profile
    ds.file_meta.TransferSyntaxUID = UID(syntax)
    return ds


@pytest.mark.parametrize(
    "syntax", [ExplicitVRLittleEndian, DeflatedExplicitVRLittleEndian], ids=["explicit", "deflated"]
)
def test_verification_fails_a_leak_in_any_transfer_syntax(tmp_path: Path, syntax: str) -> None:
    """A patient name left in a kept attribute fails the file, deflated or not; nothing written."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    write(_with_name_in_model(syntax), src / "leaky.dcm")
    summary = batch.run(batch.plan([src], dst), settings(dst), workers=1)
    [failed] = summary.failed
    assert "PatientName" in failed.reason
    assert "Anna4" not in failed.reason and "BATCHOWSKA" not in failed.reason
    assert outputs(dst) == set()


def test_no_verify_writes_the_leaky_file(tmp_path: Path) -> None:
    """With verification off the same file is written (the name stays where it was)."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    write(_with_name_in_model(ExplicitVRLittleEndian), src / "leaky.dcm")
    summary = batch.run(batch.plan([src], dst), settings(dst, verify=False), workers=1)
    assert summary.count("written") == 1
    assert "Anna4" in dcmread(dst / "leaky.dcm").ManufacturerModelName


def test_resume_skips_existing_outputs_but_keeps_their_key_rows(tmp_path: Path) -> None:
    """With resume an existing output is left alone and still yields its key row."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    write(synthetic(1), src / "a.dcm")
    write(synthetic(2), src / "b.dcm")
    dst.mkdir()
    (dst / "a.dcm").write_bytes(b"placeholder")
    summary = batch.run(batch.plan([src], dst), settings(dst, resume=True), workers=1)
    by_name = {Path(r.source).name: r for r in summary.results}
    assert by_name["a.dcm"].status == "resumed"
    assert by_name["a.dcm"].key_row is not None
    assert (dst / "a.dcm").read_bytes() == b"placeholder"
    assert by_name["b.dcm"].status == "written"


# -- key file ----------------------------------------------------------------------


def test_key_file_has_header_rows_and_mode_0600(tmp_path: Path) -> None:
    """The key file is CSV with the header and one row per output, readable by the owner only."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    for i in range(3):
        write(synthetic(i), src / f"{i}.dcm")
    (src / "skip.txt").write_text("text")
    summary = batch.run(batch.plan([src], dst), settings(dst), workers=1)
    key = tmp_path / "key.csv"
    assert batch.write_key_file(key, summary.results) == 3
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    with key.open(newline="") as handle:
        rows = list(csv.reader(handle))
    assert tuple(rows[0]) == batch.KEY_FILE_COLUMNS
    table = [dict(zip(rows[0], row, strict=True)) for row in rows[1:]]
    assert len(table) == 3
    for row in table:
        index = int(Path(row["source"]).stem)
        written = dcmread(dst / row["output"])
        assert row["original_patient_id"] == synthetic(index).PatientID
        assert row["new_patient_id"] == written.PatientID
        assert row["original_sop_instance_uid"] == synthetic(index).SOPInstanceUID
        assert row["new_sop_instance_uid"] == written.SOPInstanceUID
        assert row["new_study_instance_uid"] == written.StudyInstanceUID
