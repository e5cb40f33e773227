"""Tag scripts on real objects: whitelist mode, Type 1 UIDs, curves and overlays, character
sets, UN-encoded attributes, how far commands reach, and @hash_acc@.

Objects are pydicom's bundled files and crafted character-set files; verification is on
wherever the command line runs.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileDataset
from pydicom.sequence import Sequence
from pydicom.tag import Tag

from coercion.dicom.part10 import encode_file, read_file
from coercion.engine import Dimse, EventContext, Role
from coercion.errors import ConfigError, RuleFailedError
from coercion.resources import default_ldif_dir
from coercion.script import parse_script
from coercion.script.language import REQUIRED
from tests.directories import store_in
from tests.helpers import as_read, coercion, make_dataset, script_action
from tests.integration.test_script_directory import rule, script_entry

pytestmark = pytest.mark.integration

TO_OTHER = EventContext(Dimse.C_STORE_RQ, Role.SCP, "CT01", "OTHER")
TO_TRIAL = EventContext(Dimse.C_STORE_RQ, Role.SCP, "CT01", "AZ_TRIAL")


def bundled(name: str) -> Path:
    """A file pydicom ships, never downloaded."""
    found = get_testdata_file(name, download=False)
    assert found is not None, name
    return Path(str(found))


def _written(ds: FileDataset) -> FileDataset:
    """*ds* written by the project's writer and read back by pydicom."""
    fd, name = tempfile.mkstemp()
    try:
        encode_file(ds).write_to(fd)
    finally:
        os.close(fd)
    try:
        return dcmread(name)
    finally:
        Path(name).unlink()


# -- whitelist mode -------------------------------------------------------------------------------


def test_whitelist_keeps_only_what_the_script_names_with_verification_on(tmp_path: Path) -> None:
    """mode whitelist: named attributes and what the object needs stay; verification passes."""
    config, source, out = tmp_path / "config", tmp_path / "in", tmp_path / "out"
    shutil.copytree(default_ldif_dir(), config)
    store_in(config, tmp_path / "data" / "store.db")
    body = {
        "general": {
            "mode": "whitelist",
            "(0008,0060)": "keep",
            "(0018,0050)": "keep",
            "(0010,0010)": "set(@fake_name@)",
        }
    }
    (config / "20-script.ldif").write_text(script_entry(body) + "\n" + rule(), encoding="utf-8")
    source.mkdir()
    for name in ("CT_small.dcm", "MR_small.dcm"):
        shutil.copy(bundled(name), source / name)
    args = ("deidentify", "--config-dir", config, "--key", tmp_path / "k.key", source, out)
    result = coercion(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for name in ("CT_small.dcm", "MR_small.dcm"):
        original, written = dcmread(source / name), dcmread(out / name)
        tags = {int(elem.tag) for elem in written}
        assert tags <= REQUIRED | {0x00080060, 0x00180050, 0x00100010}
        assert {0x00080016, 0x00080018, 0x7FE00010, 0x00280010} <= tags
        assert written.PixelData == original.PixelData
        assert written.SOPInstanceUID != original.SOPInstanceUID  # the preset's U still applies
        assert written.file_meta.MediaStorageSOPInstanceUID == written.SOPInstanceUID
        assert written.PatientName != original.PatientName
        assert "StudyDate" not in written and "PatientID" not in written


def test_mode_belongs_to_the_general_section() -> None:
    """mode in a project section, or another value, is refused when the script loads."""
    with pytest.raises(ConfigError, match="only the general section chooses the mode"):
        parse_script("s", {"p": {"mode": "whitelist"}})
    with pytest.raises(ConfigError, match="is not blacklist or whitelist"):
        parse_script("s", {"general": {"mode": "greylist"}})


# -- preset none, curves and overlays -------------------------------------------------------------


def test_preset_none_with_remove_unknown_tags_removes_overlays(tmp_path: Path) -> None:
    """Under preset none, remove_unknown_tags takes overlays the script does not name too."""
    source = bundled("examples_overlay.dcm")
    body = {"general": {"preset": "none", "remove_unknown_tags": "true", "(0010,0010)": "keep"}}
    ds = read_file(source)
    assert any(0x6000 <= int(tag) >> 16 <= 0x601E for tag in ds._dict)
    script_action(body, tmp_path).apply(ds, TO_OTHER)
    assert not any(0x6000 <= int(tag) >> 16 <= 0x601E for tag in ds._dict)
    assert "PixelData" in ds and "PatientName" in ds
    kept = {"general": {**body["general"], "remove_overlays": "false"}}
    again = read_file(source)
    script_action(kept, tmp_path).apply(again, TO_OTHER)
    assert any(0x6000 <= int(tag) >> 16 <= 0x601E for tag in again._dict)


# -- Type 1 UIDs ----------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["remove", "clear"])
@pytest.mark.parametrize("tag", ["(0008,0016)", "(0008,0018)"])
def test_removing_a_type1_uid_is_refused_at_load(tag: str, command: str) -> None:
    """A script that removes or clears SOP Class or SOP Instance UID does not load."""
    with pytest.raises(ConfigError, match=rf"\{tag[:5]}\{tag[5:-1]}\): {command}.*Type 1"):
        parse_script("s", {"general": {"preset": "none"}, "p": {tag: command}})
    with pytest.raises(ConfigError, match="Type 1"):
        parse_script("s", {"general": {"remove_safe_tags": "true", tag: "safe"}})


def test_a_new_sop_instance_uid_reaches_the_file_meta(tmp_path: Path) -> None:
    """set on SOP Instance UID writes the new UID in the data set and the file meta."""
    ds = read_file(bundled("CT_small.dcm"))
    body = {"general": {"preset": "none", "(0008,0018)": "set(1.2.826.0.1.3680043.99.15.1)"}}
    script_action(body, tmp_path).apply(ds, TO_OTHER)
    written = _written(ds)
    assert written.SOPInstanceUID == "1.2.826.0.1.3680043.99.15.1"
    assert written.file_meta.MediaStorageSOPInstanceUID == "1.2.826.0.1.3680043.99.15.1"


# -- character sets -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("charset", "name"),
    [
        ("ISO_IR 126", "Διονυσιος"),
        (["ISO 2022 IR 13", "ISO 2022 IR 87"], "ﾔﾏﾀﾞ^ﾀﾛｳ=山田^太郎"),
        ("ISO_IR 192", "Müller^中村"),
    ],
)
def test_removing_the_character_set_keeps_it_while_a_value_needs_it(
    tmp_path: Path, charset: str | list[str], name: str
) -> None:
    """remove on (0008,0005) keeps it while a Greek or Japanese value stays; the file reads back."""
    crafted = make_dataset(name)
    crafted.SpecificCharacterSet = charset
    ds = as_read(crafted)
    body = {"general": {"preset": "none", "(0008,0005)": "remove"}}
    script_action(body, tmp_path).apply(ds, TO_OTHER)
    written = _written(ds)
    assert written.SpecificCharacterSet == charset
    assert str(written.PatientName) == name
    ascii_only = as_read(make_dataset("DOE^JANE"))
    script_action(body, tmp_path).apply(ascii_only, TO_OTHER)
    assert "SpecificCharacterSet" not in _written(ascii_only)


def test_a_script_that_replaces_the_character_set_gets_its_own(tmp_path: Path) -> None:
    """set(ISO_IR 192) on (0008,0005) with a new UTF-8 name: both written, nothing restored."""
    crafted = make_dataset("Διονυσιος")
    crafted.SpecificCharacterSet = "ISO_IR 126"
    ds = as_read(crafted)
    body = {"general": {"preset": "none", "(0008,0005)": "set(ISO_IR 192)"}}
    body["general"]["(0010,0010)"] = "set(Müller^中村)"
    script_action(body, tmp_path).apply(ds, TO_OTHER)
    written = _written(ds)
    assert (written.SpecificCharacterSet, str(written.PatientName)) == ("ISO_IR 192", "Müller^中村")


@pytest.mark.parametrize(
    ("charset", "value"),
    [(None, "Müller"), (["ISO 2022 IR 13", "ISO 2022 IR 87"], "Διονυσιος")],
)
def test_non_ascii_text_the_object_cannot_declare_fails_the_rule(
    tmp_path: Path, charset: list[str] | None, value: str
) -> None:
    """set of non-ASCII text without a character set, or outside an ISO 2022 set, fails by tag."""
    crafted = make_dataset()
    del crafted.SpecificCharacterSet
    if charset is not None:
        crafted.SpecificCharacterSet = charset
    ds = as_read(crafted)
    body = {"general": {"preset": "none", "(0008,1030)": f"set({value})"}}
    with pytest.raises(RuleFailedError, match=r"\(0008,1030\).*Specific Character Set") as caught:
        script_action(body, tmp_path).apply(ds, TO_OTHER)
    assert value not in str(caught.value)


# -- UN-encoded standard attributes ---------------------------------------------------------------


def test_un_encoded_uids_get_new_uids_under_the_default_preset(tmp_path: Path) -> None:
    """rtdose_rle.dcm sends UIDs as UN: the default preset gives new UIDs, never empties them."""
    source = bundled("rtdose_rle.dcm")
    original = dcmread(source)
    ds = read_file(source)
    assert ds._dict[Tag(0x00080018)].VR == "UN"
    script_action({"general": {}}, tmp_path).apply(ds, TO_OTHER)
    written = _written(ds)
    for keyword in ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
        new = str(written[keyword].value)
        assert new.startswith("2.25.") and new != str(original[keyword].value)
        assert written[keyword].VR == "UI"
    assert written.file_meta.MediaStorageSOPInstanceUID == written.SOPInstanceUID
    assert written.SOPClassUID == original.SOPClassUID


# -- how far commands reach -----------------------------------------------------------------------


def _nested_object() -> Dataset:
    ds = make_dataset()
    icon = Dataset()
    icon.Rows, icon.Columns = 2, 2
    ds.IconImageSequence = Sequence([icon])
    ids = []
    for value in ("QZXOTHER1", "QZXOTHER2"):
        item = Dataset()
        item.PatientID = value
        ids.append(item)
    ds.OtherPatientIDsSequence = Sequence(ids)
    site = Dataset()
    site.InstitutionName = "QZXNESTED"
    ds.RequestAttributesSequence = Sequence([site])
    return ds


def test_writing_commands_stay_at_the_top_level(tmp_path: Path) -> None:
    """set on Rows, a fake MRN and a macro write at the top level; nested items keep theirs."""
    body = {
        "general": {
            "preset": "none",
            "(0028,0010)": "set(4)",
            "(0010,0020)": "set(@fake_mrn@)",
            "(0008,0080)": "set(@value(0008,1030)@)",
        }
    }
    ds = _nested_object()
    script_action(body, tmp_path).apply(ds, TO_OTHER)
    assert ds.Rows == 4 and ds.IconImageSequence[0].Rows == 2
    assert [item.PatientID for item in ds.OtherPatientIDsSequence] == ["QZXOTHER1", "QZXOTHER2"]
    assert ds.RequestAttributesSequence[0].InstitutionName == "QZXNESTED"
    assert ds.InstitutionName == ds.StudyDescription


def test_removing_commands_reach_every_depth_and_paths_write_inside(tmp_path: Path) -> None:
    """remove reaches nested items; a path key writes inside the items it names, each its own."""
    body = {
        "general": {
            "preset": "none",
            "(0008,0080)": "remove",
            "(0010,0020)": "set(@fake_mrn@)",
            "(0010,1002)/(0010,0020)": "set(X-@value@)",
        }
    }
    ds = _nested_object()
    script_action(body, tmp_path).apply(ds, TO_OTHER)
    assert "InstitutionName" not in ds.RequestAttributesSequence[0]
    assert [item.PatientID for item in ds.OtherPatientIDsSequence] == ["X-QZXOTHER1", "X-QZXOTHER2"]
    assert ds.PatientID not in ("PID-4711", "X-PID-4711")


def test_under_the_default_preset_nested_items_get_the_presets_command(tmp_path: Path) -> None:
    """A top-level set leaves nested occurrences to the preset's own command (D: a dummy)."""
    body = {"general": {"(0010,1002)": "keep", "(0010,0020)": "set(@fake_mrn@)"}}
    ds = _nested_object()
    script_action(body, tmp_path).apply(ds, TO_OTHER)
    nested = [item.PatientID for item in ds.OtherPatientIDsSequence]
    assert ds.PatientID not in nested
    assert not any(value.startswith("QZX") for value in nested)


def test_a_path_through_something_that_is_no_sequence_is_refused() -> None:
    """Each step of a path but the last must be a sequence."""
    with pytest.raises(ConfigError, match=r"\(0010,0010\) in a path is not a sequence"):
        parse_script("s", {"general": {"(0010,0010)/(0010,0020)": "keep"}})


# -- @hash_acc@ -----------------------------------------------------------------------------------


def test_hash_acc_is_a_keyed_hash_of_the_accession_number_per_project(tmp_path: Path) -> None:
    """@hash_acc@: 16 hex digits, the same per accession number, another in another project."""
    body = {"general": {"preset": "none", "(0008,0050)": "set(@hash_acc@)"}, "trial": {}}
    action = script_action(body, tmp_path)
    first, second, other = make_dataset(), make_dataset(), make_dataset()
    action.apply(first, TO_OTHER)
    action.apply(second, TO_OTHER)
    action.apply(other, TO_TRIAL)
    value = str(first.AccessionNumber)
    assert len(value) == 16 and all(c in "0123456789ABCDEF" for c in value)
    assert value == second.AccessionNumber != other.AccessionNumber
    assert value != "ACC-0815"
