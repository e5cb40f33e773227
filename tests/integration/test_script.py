"""script:NAME on datasets, with the store on SQLite and on a real PostgreSQL.

Every command, option, preset and macro; nested sequences; values read before
changes; counters and fake values consistent across actions, processes and
projects; character sets.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from datetime import datetime
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from coercion.dicom.part10 import encode_file
from coercion.engine import Dimse, EventContext, Role
from coercion.errors import RuleFailedError
from coercion.script import parse_script
from coercion.script.action import log_assignments
from coercion.script.language import REQUIRED
from tests.helpers import as_read, make_dataset, script_action

pytestmark = pytest.mark.integration

MARKER = "QZXSCRIPT"
TO_PROJECT = EventContext(Dimse.C_STORE_RQ, Role.SCP, "CT01", "AZ_MYPROJECT")
TO_OTHER = EventContext(Dimse.C_STORE_RQ, Role.SCP, "CT01", "OTHER")
OBJECTS_PER_PROCESS = 1000


def _patient(patient_id: str, name: str = f"{MARKER}^JANE") -> Dataset:
    ds = make_dataset(name, patient_id)
    ds.AccessionNumber = f"ACC-{patient_id}"
    ds.StudyInstanceUID = f"1.2.826.0.1.3680043.99.5.{abs(hash(patient_id)) % 10**8}"
    return ds


def test_every_command(tmp_path: Path) -> None:
    """keep, safe, remove, clear, set and truncdate do what they say; the rest is the preset's."""
    body = {
        "general": {
            "(0008,0080)": "keep",
            "(0008,1030)": "safe",
            "(0008,0060)": "remove",
            "(0010,0040)": "clear",
            "(0010,0010)": "set(Anon^Patient)",
            "(0010,0030)": "truncdate",
            "(0008,0020)": "truncdate",
        }
    }
    action = script_action(body, tmp_path)
    ds = as_read(make_dataset())
    changes = action.apply(ds, TO_OTHER)
    out = dcmread(_written(ds, tmp_path))
    assert out.InstitutionName == "Saint Example Hospital"
    assert out.StudyDescription.startswith("CT head")
    assert "Modality" not in out
    assert out.PatientSex == ""
    assert out.PatientName == "Anon^Patient"
    assert (out.PatientBirthDate, out.StudyDate) == ("19700101", "20240101")
    assert out.AccessionNumber == ""  # the preset: Z
    assert out.SOPInstanceUID != make_dataset().SOPInstanceUID  # the preset: U
    letters = {(change.tag, change.action.value) for change in changes}
    assert (0x00080060, "X") in letters and (0x00100040, "Z") in letters
    assert (0x00100010, "D") in letters and (0x00080080, "K") in letters


def test_remove_safe_tags(tmp_path: Path) -> None:
    """remove_safe_tags turns safe into remove; keep stays."""
    body = {"general": {"remove_safe_tags": "true", "(0008,1030)": "safe", "(0008,0080)": "keep"}}
    ds = make_dataset()
    script_action(body, tmp_path).apply(ds, TO_OTHER)
    assert "StudyDescription" not in ds and ds.InstitutionName == "Saint Example Hospital"


def test_substitution_and_garbage_dates(tmp_path: Path) -> None:
    """A rewrite keeps the first three letters; a date that is no date is removed."""
    body = {"general": {"(0008,0080)": r"s/(\w{3}).*/$1??/", "(0008,0020)": "truncdate"}}
    ds = as_read(make_dataset())
    ds.StudyDate = "garbage"
    changes = script_action(body, tmp_path).apply(ds, TO_OTHER)
    assert ds.InstitutionName == "Sai??"
    assert "StudyDate" not in ds
    assert any(c.tag == 0x00080020 and c.action.value == "X" for c in changes)


def test_default_preset_private_curves_overlays_and_nesting(tmp_path: Path) -> None:
    """The default preset applies the Basic Profile at every depth and removes the rest."""
    ds = make_dataset()
    item = Dataset()
    item.PatientName = f"{MARKER}^NESTED"
    item.ReferencedSOPInstanceUID = "1.2.826.0.1.3680043.99.9.9"
    item.CodeMeaning = "kept"
    ds.ReferencedImageSequence = Sequence([item])
    ds.add_new(0x00090010, "LO", "ACME")
    ds.add_new(0x00091001, "LO", f"{MARKER} private")
    ds.add_new(0x50000010, "US", 1)
    ds.add_new(0x60003000, "OW", b"\x00\x00")
    ds.add_new(0x60000010, "US", 2)
    script_action({"general": {}}, tmp_path).apply(ds, TO_OTHER)
    nested = ds.ReferencedImageSequence[0]
    assert nested.PatientName == ""  # Z in the Basic Profile, inside the item too
    assert nested.ReferencedSOPInstanceUID.startswith("2.25.")
    assert nested.CodeMeaning == "kept"
    for tag in (0x00090010, 0x00091001, 0x50000010, 0x60003000, 0x60000010):
        assert tag not in ds
    assert ds.Rows == 2 and ds.PixelData  # attributes the table does not list stay


def test_options_keep_private_curves_overlays(tmp_path: Path) -> None:
    """With the options off, private tags, curves and overlays stay."""
    body = {
        "general": {
            "remove_unknown_tags": "false",
            "remove_curves": "false",
            "remove_overlays": "false",
        }
    }
    ds = make_dataset()
    ds.add_new(0x00090010, "LO", "ACME")
    ds.add_new(0x00091001, "LO", "private")
    ds.add_new(0x50000010, "US", 1)
    ds.add_new(0x60003000, "OW", b"\x00\x00")
    script_action(body, tmp_path).apply(ds, TO_OTHER)
    for tag in (0x00090010, 0x00091001, 0x50000010, 0x60003000):
        assert tag in ds


def test_kept_private_element_keeps_its_creator(tmp_path: Path) -> None:
    """A private element named keep stays with its creator; other private blocks go."""
    body = {"general": {"(0009,1001)": "keep"}}
    ds = make_dataset()
    ds.add_new(0x00090010, "LO", "ACME")
    ds.add_new(0x00090011, "LO", "OTHER")
    ds.add_new(0x00091001, "LO", "kept")
    ds.add_new(0x00091101, "LO", "gone")
    script_action(body, tmp_path).apply(ds, TO_OTHER)
    assert ds[0x00091001].value == "kept" and ds[0x00090010].value == "ACME"
    assert 0x00090011 not in ds and 0x00091101 not in ds


def test_removing_commands_reach_every_depth_writing_ones_the_top_only(tmp_path: Path) -> None:
    """remove reaches nested items; set writes at the top level only, and where a path says."""
    body = {
        "general": {
            "preset": "none",
            "(0008,0104)": "set(nested)",
            "(0008,0100)": "remove",
            "(0010,1000)": "set(added)",
            "(0040,A730)/(0040,A043)/(0008,0104)": "set(by path)",
        }
    }
    ds = make_dataset()
    inner = Dataset()
    inner.CodeValue = "C1"
    inner.CodeMeaning = "meaning"
    outer = Dataset()
    outer.ConceptNameCodeSequence = Sequence([inner])
    ds.ContentSequence = Sequence([outer])
    script_action(body, tmp_path).apply(ds, TO_OTHER)
    deep = ds.ContentSequence[0].ConceptNameCodeSequence[0]
    assert deep.CodeMeaning == "by path" and "CodeValue" not in deep
    assert ds.OtherPatientIDs == "added"
    assert "OtherPatientIDs" not in deep and "OtherPatientIDs" not in ds.ContentSequence[0]
    assert ds.CodeMeaning == "nested"  # absent at the top level: added there


def test_values_are_read_before_any_change(tmp_path: Path) -> None:
    """@value@ macros read the values as they arrived, whatever the order of commands."""
    body = {
        "general": {
            "preset": "none",
            "(0010,0010)": "set(P-@value(0010,0020)@)",
            "(0010,0020)": "set(I-@value(0010,0010)@)",
            "(0008,0080)": "set([@value@])",
        }
    }
    ds = make_dataset("ROE^RICHARD", "PID-9")
    inner = Dataset()
    inner.CodeMeaning = "x"
    ds.ProcedureCodeSequence = Sequence([inner])
    body["general"]["(0008,1032)/(0008,0104)"] = "set(@value(0010,0020)@)"
    script_action(body, tmp_path).apply(ds, TO_OTHER)
    assert ds.PatientName == "P-PID-9"
    assert ds.PatientID == "I-ROE^RICHARD"
    assert ds.InstitutionName == "[Saint Example Hospital]"
    assert ds.ProcedureCodeSequence[0].CodeMeaning == "PID-9"  # nearest enclosing dataset


def test_non_number_for_a_number_vr_fails_the_rule(tmp_path: Path) -> None:
    """set of text into US fails the object, naming the tag, not the value."""
    body = {"general": {"preset": "none", "(0028,0010)": "set(@value(0010,0020)@)"}}
    ds = make_dataset()
    with pytest.raises(RuleFailedError, match=r"\(0028,0010\).*not a number") as caught:
        script_action(body, tmp_path).apply(ds, TO_OTHER)
    assert "PID-4711" not in str(caught.value)
    ok = {"general": {"preset": "none", "(0028,0010)": "set(512)"}}
    script_action(ok, tmp_path).apply(ds, TO_OTHER)
    assert ds.Rows == 512


def test_project_and_process_macros(tmp_path: Path) -> None:
    """Project name, owner and prefix come from the project; date and time from the clock."""
    body = {
        "general": {"preset": "none", "name": "General", "(0010,4000)": "set(@project_name@)"},
        "myproject": {
            "name": "My Project",
            "owner": "Lab",
            "prefix": "MP",
            "(0008,0080)": "set(@project_owner@/@project_prefix@)",
            "(0008,1030)": "set(@process_date@ @process_time@)",
        },
    }
    action = script_action(body, tmp_path)
    action.runner("myproject").resources.now = lambda: datetime(2026, 3, 4, 5, 6, 7, 890000)
    ds = make_dataset()
    action.apply(ds, TO_PROJECT)
    assert ds.PatientComments == "My Project"
    assert ds.InstitutionName == "Lab/MP"
    assert ds.StudyDescription == "03042026 050607890"
    other = make_dataset()
    action.apply(other, TO_OTHER)
    assert other.PatientComments == "General" and other.InstitutionName == "Saint Example Hospital"


def test_project_parameter_overrides_the_called_ae_title(tmp_path: Path) -> None:
    """project=SECTION picks the section whatever the called AE title."""
    body = {"general": {"preset": "none"}, "a": {"(0008,0080)": "set(A)"}}
    ds = make_dataset()
    script_action(body, tmp_path, project="a").apply(ds, TO_OTHER)
    assert ds.InstitutionName == "A"


FAKE_BODY: dict[str, Any] = {
    "general": {
        "preset": "none",
        "(0010,0010)": "set(@fake_name@)",
        "(0010,1000)": "set(@fake_mrn@)",
        "(0008,0050)": "set(@fake_acc@)",
        "(0020,000D)": "set(@random_uid@)",
    },
    "myproject": {},
}


def test_fake_values_consistent_per_patient_and_study(store_url: str) -> None:
    """The same patient gets the same fake name and MRN in every study; studies their own acc."""
    first, second = script_action(FAKE_BODY, store_url), script_action(FAKE_BODY, store_url)
    a1, a2, b1 = _patient("P-A"), _patient("P-A"), _patient("P-B")
    a2.StudyInstanceUID = "1.2.826.0.1.3680043.99.5.777"
    a2.AccessionNumber = "ACC-OTHER"
    uid_a1 = a1.StudyInstanceUID
    first.apply(a1, TO_OTHER)
    second.apply(a2, TO_OTHER)  # another action, as another process or node would have
    first.apply(b1, TO_OTHER)
    assert a1.PatientName == a2.PatientName != b1.PatientName
    assert a1.OtherPatientIDs == a2.OtherPatientIDs != b1.OtherPatientIDs
    assert len(str(a1.OtherPatientIDs)) == 8 and str(a1.OtherPatientIDs).isdigit()
    assert a1.AccessionNumber != a2.AccessionNumber
    again = _patient("P-A")
    again.StudyInstanceUID = uid_a1
    second.apply(again, TO_OTHER)
    assert again.AccessionNumber == a1.AccessionNumber
    assert again.StudyInstanceUID == a1.StudyInstanceUID != uid_a1
    assert MARKER not in str(a1.PatientName)


def test_fake_values_differ_per_project(store_url: str) -> None:
    """Each project numbers its own patients and derives its own UIDs."""
    action = script_action(FAKE_BODY, store_url)
    general, project = _patient("P-X"), _patient("P-X")
    for name in ("P-1", "P-2"):
        action.apply(_patient(name), TO_PROJECT)
    action.apply(general, TO_OTHER)
    action.apply(project, TO_PROJECT)
    assert general.OtherPatientIDs == "00000001"
    assert project.OtherPatientIDs == "00000003"
    assert general.StudyInstanceUID != project.StudyInstanceUID


def test_counters_width_step_and_one_per_attribute(store_url: str) -> None:
    """001 counts 001, 002 per distinct value; 0010 counts in tens; attributes count apart."""
    body = {
        "general": {
            "preset": "none",
            "(0010,0020)": "SUBJ-__COUNTER-001__",
            "(0008,0050)": "set(A__COUNTER-0010__)",
        }
    }
    action = script_action(body, store_url)
    outputs = []
    for patient in ("P-1", "P-2", "P-1", "P-3"):
        ds = _patient(patient)
        action.apply(ds, TO_OTHER)
        outputs.append((ds.PatientID, ds.AccessionNumber))
    assert [o[0] for o in outputs] == ["SUBJ-001", "SUBJ-002", "SUBJ-001", "SUBJ-003"]
    assert [o[1] for o in outputs] == ["A0010", "A0020", "A0010", "A0030"]


def _run_many(url: str, prefix: str, barrier: Barrier, out: Any) -> None:
    """Worker: OBJECTS_PER_PROCESS objects of distinct patients through one counter."""
    body = {"general": {"(0010,0020)": "SUBJ-__COUNTER-1__"}}
    action = script_action(body, url)
    barrier.wait(timeout=60)
    numbers = []
    for index in range(OBJECTS_PER_PROCESS):
        ds = make_dataset("X^Y", f"{prefix}-{index}")
        action.apply(ds, TO_OTHER)
        numbers.append(int(str(ds.PatientID).removeprefix("SUBJ-")))
    action.env.close()
    out.put(numbers)


def test_two_processes_share_one_counter(store_url: str) -> None:
    """Two processes x 1000 objects through script: on one counter give exactly 1..2000."""
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2)
    queue = context.Queue()
    workers = [
        context.Process(target=_run_many, args=(store_url, prefix, barrier, queue))
        for prefix in ("A", "B")
    ]
    for worker in workers:
        worker.start()
    results = [queue.get(timeout=240) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    numbers = sorted(results[0] + results[1])
    assert numbers == list(range(1, 2 * OBJECTS_PER_PROCESS + 1))


def test_print_assignment_logs_tags_and_commands_only(caplog: pytest.LogCaptureFixture) -> None:
    """print_assignment logs tags and command names, never a parameter."""
    body = {
        "general": {"print_assignment": "true", "(0010,0010)": f"set({MARKER})"},
        "p": {"(0008,0080)": f"s/{MARKER}/x/"},
    }
    with caplog.at_level(logging.INFO, logger="coercion.script"):
        log_assignments(parse_script("s", body))
    text = caplog.text
    assert "(0010,0010) set [general]" in text
    assert "(0008,0080) rewrite [project p]" in text
    assert MARKER not in text


@pytest.mark.parametrize(
    ("charset", "value"),
    [
        ("ISO_IR 100", "Müller^Jürgen"),
        ("ISO_IR 192", "Müller^Jürgen 中村"),
        ("\\ISO 2022 IR 87", "ﾔﾏﾀﾞ^ﾀﾛｳ=山田^太郎"),
    ],
)
def test_set_values_in_the_objects_character_set(tmp_path: Path, charset: str, value: str) -> None:
    """A set value is written in the object's character set and reads back the same."""
    body = {"general": {"preset": "none", "(0010,0010)": f"set({value})"}}
    ds = make_dataset()
    ds.SpecificCharacterSet = charset.split("\\") if "\\" in charset else charset
    if "2022" in charset:
        ds.SpecificCharacterSet = ["ISO 2022 IR 13", "ISO 2022 IR 87"]
        value = "ﾔﾏﾀﾞ^ﾀﾛｳ=山田^太郎"
        body["general"]["(0010,0010)"] = f"set({value})"
    read = as_read(ds)
    script_action(body, tmp_path).apply(read, TO_OTHER)
    assert str(dcmread(_written(read, tmp_path)).PatientName) == value


def test_value_outside_the_character_set_fails_clearly(tmp_path: Path) -> None:
    """A value the object's single-byte character set cannot hold fails the rule by tag."""
    body = {"general": {"preset": "none", "(0010,0010)": "set(山田)"}}
    read = as_read(make_dataset())
    with pytest.raises(RuleFailedError, match=r"\(0010,0010\).*Specific Character Set"):
        script_action(body, tmp_path).apply(read, TO_OTHER)


def test_preset_none_whitelist(tmp_path: Path) -> None:
    """Under preset none with remove_unknown_tags, only what the script names (or needs) stays."""
    body = {
        "general": {
            "preset": "none",
            "remove_unknown_tags": "true",
            "(0008,0016)": "keep",
            "(0008,0018)": "keep",
            "(0010,0020)": "set(X)",
        }
    }
    ds = make_dataset()
    script_action(body, tmp_path).apply(ds, TO_OTHER)
    named = {0x00080016, 0x00080018, 0x00100020}
    needed = REQUIRED & {int(elem.tag) for elem in make_dataset()}
    assert {int(elem.tag) for elem in ds} == named | needed


def _written(ds: Dataset, tmp_path: Path) -> Path:
    """Write *ds* with the project's writer; return the file."""
    path = tmp_path / "out.dcm"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        encode_file(ds).write_to(fd)  # type: ignore[arg-type]
    finally:
        os.close(fd)
    return path


def test_preset_dummies_and_uids_are_keyed_per_project(tmp_path: Path) -> None:
    """The same object gets other dummy tokens and UIDs in another project."""
    action = script_action({"general": {}, "myproject": {}}, tmp_path)
    general, project = make_dataset(), make_dataset()
    again = make_dataset()
    for ds in (general, project, again):
        ds.StructureSetLabel = "QZX PLAN"  # D in the Basic Profile: a keyed token
    action.apply(general, TO_OTHER)
    action.apply(project, TO_PROJECT)
    action.apply(again, TO_PROJECT)
    assert str(general.PatientID).startswith("ANON")  # Patient ID is D in the Basic Profile
    assert general.PatientID != project.PatientID and project.PatientID == again.PatientID
    assert general.SOPInstanceUID != project.SOPInstanceUID == again.SOPInstanceUID
    assert str(general.StructureSetLabel).startswith("ANON")
    assert general.StructureSetLabel != project.StructureSetLabel == again.StructureSetLabel
