"""Real-world input through scripts and the node: attributes received as UN, file meta in step."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE

from coercion.dicom.outputs import atomic_output
from coercion.dicom.part10 import encode_file, read_file
from coercion.engine import ActionEnv, Dimse, EventContext, Role, build_action
from coercion.script import parse_script
from tests.helpers import SECRET, Start, make_dataset, stored

pytestmark = pytest.mark.integration


def bundled(name: str) -> Path:
    """A file pydicom ships, never downloaded."""
    found = get_testdata_file(name, download=False)
    assert found is not None, name
    return Path(str(found))


def test_default_preset_remaps_un_encoded_uids(tmp_path: Path) -> None:
    """rtdose_rle.dcm's UN-encoded instance UIDs get new UIDs (VR UI), the meta follows."""
    found = bundled("rtdose_rle.dcm")
    original = dcmread(found)
    script = parse_script("s", {"general": {}})
    env = ActionEnv(SECRET, store_url=f"sqlite:///{tmp_path / 's.db'}", scripts={"s": script})
    try:
        ds = read_file(found)
        build_action("script:s", {}, env).apply(
            ds, EventContext(Dimse.C_STORE_RQ, Role.SCP, "CT01", "OTHER")
        )
    finally:
        env.close()
    with atomic_output(tmp_path / "out.dcm") as fd:
        encode_file(ds).write_to(fd)
    out = dcmread(tmp_path / "out.dcm")
    for keyword in ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
        assert out.get_item(keyword).VR == "UI", keyword
        assert out[keyword].value.startswith("2.25."), keyword
        assert out[keyword].value != original[keyword].value, keyword
    assert out.file_meta.MediaStorageSOPInstanceUID == out.SOPInstanceUID
    assert str(out.PatientID).startswith("ANON")  # D in the Basic Profile, not two zero bytes


def un_encoded(ds: Dataset) -> Dataset:
    """*ds* with its Study/Series UIDs, name and id as UN, as a relaying system may send them."""
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "PatientName", "PatientID"):
        value = str(ds[keyword].value).encode("ascii")
        pad = b"\x00" if keyword.endswith("UID") else b" "
        ds[keyword] = DataElement(keyword, "UN", value + pad * (len(value) % 2))
    return ds


def send(ds: Dataset, port: int) -> int:
    """C-STORE *ds* from CT01 to the node's RESEARCH AE (explicit VR little endian)."""
    ae = AE(ae_title="CT01")
    ae.add_requested_context(ds.SOPClassUID, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", port, ae_title="RESEARCH")
    assert assoc.is_established
    try:
        status = assoc.send_c_store(ds)
    finally:
        assoc.release()
    return int(status.Status)


@pytest.mark.parametrize("un", [True, False], ids=["un-encoded", "explicit"])
def test_node_stores_a_de_identified_object_with_its_meta_in_step(serve: Start, un: bool) -> None:
    """C-STORE to a deidentify rule: (UN-encoded) UIDs remapped as UI; meta = written UIDs."""
    node = serve()
    original = make_dataset()
    assert send(un_encoded(make_dataset()) if un else make_dataset(), node.port) == 0
    [output] = stored(node.data)
    written = dcmread(output)
    for keyword in ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
        assert written.get_item(keyword).VR == "UI", keyword
        assert written[keyword].value.startswith("2.25."), keyword
        assert written[keyword].value != original[keyword].value, keyword
    assert written.PatientID not in ("", original.PatientID)
    assert written.file_meta.MediaStorageSOPInstanceUID == written.SOPInstanceUID
    assert written.file_meta.MediaStorageSOPClassUID == written.SOPClassUID
    assert output.name == f"{written.SOPInstanceUID}.dcm"
