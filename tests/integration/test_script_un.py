"""Tag scripts on attributes received as UN: the default preset acts on their dictionary VR."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file

from coercion.engine import ActionEnv, Dimse, EventContext, Role, build_action
from coercion.part10 import atomic_output, encode_file, read_file
from coercion.script import parse_script
from tests.helpers import SECRET

pytestmark = pytest.mark.integration


def test_default_preset_remaps_un_encoded_uids(tmp_path: Path) -> None:
    """rtdose_rle.dcm's UN-encoded instance UIDs get new UIDs (VR UI), the meta follows."""
    found = get_testdata_file("rtdose_rle.dcm", download=False)
    assert found is not None
    original = dcmread(found)
    env = ActionEnv(SECRET, store_url=f"sqlite:///{tmp_path / 's.db'}")
    try:
        env.scripts["s"] = parse_script("s", {"general": {}})
        ds = read_file(Path(str(found)))
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
