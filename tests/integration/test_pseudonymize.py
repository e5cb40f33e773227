"""``pseudonymize:SCOPE`` through ``coercion deidentify --rules``: one patient, one record."""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
from pathlib import Path

import pytest
from pydicom import dcmread, dcmwrite
from pydicom.dataset import Dataset

from coercion.profile.keys import load_or_create_secret
from coercion.resources import default_ldif_dir
from coercion.store import PseudonymStore, ScopeSettings
from tests.directories import store_in
from tests.helpers import coercion, coercion_command, make_dataset, wait_until
from tests.postgres import fresh_database

pytestmark = pytest.mark.integration

DEVICE = "dicomDeviceName=coercion,cn=Devices,cn=DICOM Configuration,dc=coercion,dc=local"
SCOPE = f"""dn: cn=TRIAL_A,{DEVICE}
objectClass: coercionPseudonymScope
cn: TRIAL_A
coercionParam: id_template=TA-{{hash}}
coercionParam: date_offset_range=-400..-10

dn: cn=pseudonymize-trial-a,{DEVICE}
objectClass: coercionRule
cn: pseudonymize-trial-a
coercionDIMSE: C_STORE_RQ
dicomTransferRole: SCP
coercionCondition: ReceivingApplicationEntityTitle=TRIAL_A
coercionURI: pseudonymize:TRIAL_A
coercionParam: options=RetainDeviceIdentityOption
"""


def study(folder: Path, index: int, date: str) -> list[Dataset]:
    """Two instances of one study of patient QZXPSEUDO, with a reference between them."""
    written = []
    for n in range(2):
        ds = make_dataset(patient="QZXPSEUDO^PATIENT", patient_id="QZXPID-9")
        ds.StudyInstanceUID = f"1.2.826.0.1.3680043.99.88.{index}"
        ds.SeriesInstanceUID = f"1.2.826.0.1.3680043.99.88.{index}.1"
        ds.SOPInstanceUID = f"1.2.826.0.1.3680043.99.88.{index}.1.{n}"
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = date
        ds.StudyTime = "233000"  # times near midnight: a shift may cross it
        ds.SeriesTime = "235959.999"
        ds.ContentTime = "0005"
        ds.AcquisitionTime = "120000"  # no AcquisitionDate: moves alone
        ds.AcquisitionDateTime = f"{date}234500.5+0100"
        ds.AccessionNumber = f"QZXACC{index}"
        ref = Dataset()
        ref.ReferencedSOPClassUID = ds.SOPClassUID
        ref.ReferencedSOPInstanceUID = f"1.2.826.0.1.3680043.99.88.{index}.1.0"
        ds.SourceImageSequence = [ref]
        path = folder / f"study{index}" / f"{n}.dcm"
        path.parent.mkdir(parents=True, exist_ok=True)
        dcmwrite(path, ds, enforce_file_format=True)
        written.append(ds)
    return written


class Trial:
    """The trial's configuration (a scope, a pseudonymize rule) and its store, on one backend."""

    def __init__(self, tmp_path: Path, store_url: str) -> None:
        self.tmp_path = tmp_path
        self.store_url = store_url
        self.config = tmp_path / "config"
        shutil.copytree(default_ldif_dir(), self.config)
        (self.config / "20-trial.ldif").write_text(SCOPE, encoding="utf-8")
        store_in(self.config, store_url)

    def run(
        self, source: Path, out: Path, called: str = "TRIAL_A"
    ) -> subprocess.CompletedProcess[str]:
        """``coercion deidentify`` through the rules, received on *called*."""
        return coercion(
            "deidentify",
            "--config-dir",
            self.config,
            "--called",
            called,
            "--calling",
            "CT01",
            "--key",
            self.tmp_path / "secret.key",
            source,
            out,
            cwd=self.tmp_path,
        )

    def store(self) -> PseudonymStore:
        return PseudonymStore(self.store_url, load_or_create_secret(self.tmp_path / "secret.key"))


@pytest.fixture(params=["sqlite", "postgresql"])
def trial(request: pytest.FixtureRequest, tmp_path: Path) -> Trial:
    if request.param == "sqlite":
        return Trial(tmp_path, f"sqlite:///{tmp_path / 'data' / 'store.db'}")
    return Trial(tmp_path, fresh_database(request.getfixturevalue("postgres")))


def test_two_studies_at_different_times_make_one_record(tmp_path: Path, trial: Trial) -> None:
    first = study(tmp_path / "in1", 1, "20240301")
    second = study(tmp_path / "in2", 2, "20240815")
    for index, source in ((1, tmp_path / "in1"), (2, tmp_path / "in2")):
        result = trial.run(source, tmp_path / f"out{index}")
        assert result.returncode == 0, result.stderr
    outputs = {
        index: [dcmread(p) for p in sorted((tmp_path / f"out{index}").rglob("*.dcm"))]
        for index in (1, 2)
    }
    pseudonyms = {str(ds.PatientID) for files in outputs.values() for ds in files}
    assert len(pseudonyms) == 1 and pseudonyms.pop().startswith("TA-")
    # One date offset for the patient: the interval between the studies survives.
    d1 = dt.date.fromisoformat(
        f"{outputs[1][0].StudyDate[:4]}-{outputs[1][0].StudyDate[4:6]}-{outputs[1][0].StudyDate[6:]}"
    )
    d2 = dt.date.fromisoformat(
        f"{outputs[2][0].StudyDate[:4]}-{outputs[2][0].StudyDate[4:6]}-{outputs[2][0].StudyDate[6:]}"
    )
    assert (d2 - d1).days == (dt.date(2024, 8, 15) - dt.date(2024, 3, 1)).days
    assert 10 <= (dt.date(2024, 3, 1) - d1).days <= 401  # 400 days and a part of a day
    # Times move with their dates: the interval from StudyDate/Time to AcquisitionDateTime stays.
    first_out = outputs[1][0]
    study_moment = dt.datetime.strptime(first_out.StudyDate + first_out.StudyTime, "%Y%m%d%H%M%S")
    acquired = dt.datetime.strptime(first_out.AcquisitionDateTime[:14], "%Y%m%d%H%M%S")
    assert acquired - study_moment == dt.timedelta(minutes=15)
    assert first_out.AcquisitionDateTime.endswith(".5+0100")
    # UIDs through the scope's map, references included, recorded for the way back.
    store = trial.store()
    try:
        scope = store.scope("TRIAL_A", ScopeSettings(id_template="TA-{hash}"))
        for index, originals in ((1, first), (2, second)):
            out = outputs[index]
            assert {scope.original_uid(ds.SOPInstanceUID) for ds in out} == {
                ds.SOPInstanceUID for ds in originals
            }
            assert out[1].SourceImageSequence[0].ReferencedSOPInstanceUID == out[0].SOPInstanceUID
            study_record = scope.original_study(out[0].StudyInstanceUID)
            assert study_record is not None
            assert study_record["AccessionNumber"] == f"QZXACC{index}"
        [row] = list(scope.export())
        assert row["PatientID"] == "QZXPID-9" and row["PatientName"] == "QZXPSEUDO^PATIENT"
    finally:
        store.close()
    for files in outputs.values():
        for ds in files:
            assert "QZXPSEUDO" not in str(ds.PatientName)
            assert ds.PatientIdentityRemoved == "YES"


def test_unknown_scope_is_refused_when_rules_load(tmp_path: Path) -> None:
    config = tmp_path / "config"
    shutil.copytree(default_ldif_dir(), config)
    (config / "20-trial.ldif").write_text(
        SCOPE.replace("coercionURI: pseudonymize:TRIAL_A", "coercionURI: pseudonymize:TRIAL_B"),
        encoding="utf-8",
    )
    result = coercion("config", "validate", "--config-dir", config)
    assert result.returncode == 2
    assert "cn=pseudonymize-trial-a" in result.stderr
    assert "no scope 'TRIAL_B'" in result.stderr.replace("\n", "")


RETURN_RULE = f"""
dn: cn=reidentify-trial-a,{DEVICE}
objectClass: coercionRule
cn: reidentify-trial-a
coercionDIMSE: C_STORE_RQ
dicomTransferRole: SCP
coercionCondition: ReceivingApplicationEntityTitle=RETURN
coercionURI: reidentify:TRIAL_A
"""


def test_results_come_back_into_the_original_record(tmp_path: Path, trial: Trial) -> None:
    originals = study(tmp_path / "in1", 1, "20240301")
    assert trial.run(tmp_path / "in1", tmp_path / "out1").returncode == 0
    (tmp_path / "config" / "21-return.ldif").write_text(RETURN_RULE, encoding="utf-8")
    pseudonymous = [dcmread(p) for p in sorted((tmp_path / "out1").rglob("*.dcm"))]
    # A new object made downstream from the pseudonymised data: an SR-like object with its own
    # instance UID, in the pseudonymous study, referencing the pseudonymous images.
    derived = make_dataset(
        patient=str(pseudonymous[0].PatientName), patient_id=str(pseudonymous[0].PatientID)
    )
    derived.StudyInstanceUID = pseudonymous[0].StudyInstanceUID
    derived.SeriesInstanceUID = "1.2.826.0.1.3680043.99.89.1"
    derived.SOPInstanceUID = "1.2.826.0.1.3680043.99.89.1.1"
    derived.file_meta.MediaStorageSOPInstanceUID = derived.SOPInstanceUID
    derived.StudyDate = pseudonymous[0].StudyDate
    derived.AccessionNumber = ""
    derived.LongitudinalTemporalInformationModified = "MODIFIED"
    refs = []
    for ds in pseudonymous:
        ref = Dataset()
        ref.ReferencedSOPClassUID = ds.SOPClassUID
        ref.ReferencedSOPInstanceUID = ds.SOPInstanceUID
        refs.append(ref)
    item = Dataset()
    item.ReferencedSOPSequence = refs
    derived.CurrentRequestedProcedureEvidenceSequence = [item]
    back_in = tmp_path / "back"
    back_in.mkdir()
    dcmwrite(back_in / "sr.dcm", derived, enforce_file_format=True)
    result = trial.run(back_in, tmp_path / "back-out", called="RETURN")
    assert result.returncode == 0, result.stderr
    [back] = [dcmread(p) for p in (tmp_path / "back-out").rglob("*.dcm")]
    assert back.PatientID == "QZXPID-9" and back.PatientName == "QZXPSEUDO^PATIENT"
    assert back.StudyInstanceUID == originals[0].StudyInstanceUID
    assert back.AccessionNumber == "QZXACC1" and back.StudyDate == "20240301"
    assert back.SOPInstanceUID == derived.SOPInstanceUID  # its own new instance UID stays
    references = {
        r.ReferencedSOPInstanceUID
        for r in back.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSOPSequence
    }
    assert references == {ds.SOPInstanceUID for ds in originals}
    assert back.PatientIdentityRemoved == "NO"


def test_an_unknown_pseudonym_is_refused(tmp_path: Path, trial: Trial) -> None:
    study(tmp_path / "in1", 1, "20240301")
    assert trial.run(tmp_path / "in1", tmp_path / "out1").returncode == 0
    (tmp_path / "config" / "21-return.ldif").write_text(RETURN_RULE, encoding="utf-8")
    stranger = tmp_path / "stranger"
    stranger.mkdir()
    dcmwrite(stranger / "x.dcm", make_dataset(patient_id="TA-NOTKNOWN"), enforce_file_format=True)
    result = trial.run(stranger, tmp_path / "stranger-out", called="RETURN")
    assert result.returncode == 1
    assert f"{stranger / 'x.dcm'}: rule reidentify-trial-a: unknown pseudonym" in result.stderr
    assert not list((tmp_path / "stranger-out").rglob("*.dcm"))


def test_reidentify_command_round_trip(tmp_path: Path, trial: Trial) -> None:
    originals = study(tmp_path / "in1", 1, "20240301")
    assert trial.run(tmp_path / "in1", tmp_path / "out1").returncode == 0
    common = ["--config-dir", tmp_path / "config", "--key", tmp_path / "secret.key"]
    result = coercion(
        "reidentify", "TRIAL_A", tmp_path / "out1", tmp_path / "back", *common, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    back = {ds.SOPInstanceUID: ds for ds in map(dcmread, (tmp_path / "back").rglob("*.dcm"))}
    assert set(back) == {ds.SOPInstanceUID for ds in originals}
    pseudonymous = {
        ds.SOPInstanceUID: ds for ds in map(dcmread, (tmp_path / "out1").rglob("*.dcm"))
    }
    temporal = (
        "StudyDate",
        "StudyTime",
        "SeriesDate",
        "SeriesTime",
        "ContentDate",
        "ContentTime",
        "AcquisitionTime",
        "AcquisitionDateTime",
    )
    assert all(
        ds.SeriesTime != originals[0].SeriesTime and ds.SeriesDate != originals[0].SeriesDate
        for ds in pseudonymous.values()
    )
    for ds in originals:
        restored = back[ds.SOPInstanceUID]
        assert restored.PatientID == ds.PatientID
        assert restored.StudyInstanceUID == ds.StudyInstanceUID
        # Dates and times come back exactly, the study's from its record, the rest by the offset.
        assert [restored[k].value for k in temporal] == [ds[k].value for k in temporal]
    wrong = coercion(
        "reidentify", "TRIAL_X", tmp_path / "out1", tmp_path / "back2", *common, cwd=tmp_path
    )
    assert wrong.returncode == 2 and "no scope 'TRIAL_X'" in wrong.stderr.replace("\n", "")


def test_kill_9_mid_batch_then_resume_gives_the_same_outputs(tmp_path: Path, trial: Trial) -> None:
    source = tmp_path / "many"
    for index in range(60):
        study(source / f"s{index}", 100 + index, "20240301")
    clean = trial.run(source, tmp_path / "clean")
    assert clean.returncode == 0, clean.stderr
    config = tmp_path / "config"
    args = ["deidentify", "--config-dir", config, "--called", "TRIAL_A", "--calling", "CT01"]
    args += ["--key", tmp_path / "secret.key", "--workers", "1"]
    out = tmp_path / "killed"
    process = subprocess.Popen(
        coercion_command(*args, source, out),
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(
            lambda: len(list(out.rglob("*.dcm"))) >= 20,
            "20 outputs before the kill",
            timeout=60,
            interval=0.02,
        )
    finally:
        process.kill()  # kill -9: no chance to clean up
        process.wait(10)
    partial = len(list(out.rglob("*.dcm")))
    assert 0 < partial < 120, partial
    # What a kill in the middle of a write leaves: a temporary file never renamed.
    stale = next(out.rglob("*.dcm")).with_name(".0.dcm.k9x_1.part")
    stale.write_bytes(b"half a file")
    resumed = coercion(*args, "--resume", source, out, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    produced = {p.relative_to(out): p.read_bytes() for p in out.rglob("*.dcm")}
    expected = {
        p.relative_to(tmp_path / "clean"): p.read_bytes()
        for p in (tmp_path / "clean").rglob("*.dcm")
    }
    assert produced == expected  # nothing lost, nothing different
    assert not [p for p in out.rglob("*") if p.name.endswith(".part")]
    store = trial.store()
    try:
        stats = store.stats()["TRIAL_A"]
    finally:
        store.close()
    assert stats["patients"] == 1 and stats["studies"] == 60  # nothing duplicated
