"""Every failure of ``coercion serve`` gets a status, a log line and an audit line; it goes on.

The node runs as a user starts it (``coercion serve``, a subprocess). The full disk is a real
one: a 2 MiB tmpfs mounted on the node's data folder (the tests run as root) and filled up.
Failures no shipped rule can cause come from test-only URI schemes that a ``sitecustomize``
module on the node's PYTHONPATH registers (Python imports it when the node starts): a rule whose
action raises KeyError (its message quotes a value), and one whose action leaves a value the
encoder cannot write (a TypeError once the rules are done, when the object is written).
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, generate_uid
from pynetdicom import AE

from tests import helpers
from tests.helpers import (
    DEVICE,
    MPPS_CLASS,
    Served,
    config_dir,
    make_dataset,
    start_node,
    stored,
    storescu,
    wait_until,
)

pytestmark = pytest.mark.integration

WORKLIST_FIND = "1.2.840.10008.5.1.4.31"
SECRET_ID = "QZXFAILID42"  # a value: never in a log line, a status or the audit trail

PLUGIN = '''"""Test-only URI schemes for tests/integration/test_node_failures.py."""

from coercion.engine.registry import register_scheme


class Raises:
    def apply(self, ds, ctx):
        raise KeyError(str(ds.get("PatientID", "")))  # a foreign message quoting a value


class Unencodable:
    def apply(self, ds, ctx):
        ds.add_new(0x00091011, "LO", 12345)  # an int where text belongs: fails when written
        return []


register_scheme("test-keyerror", lambda spec, params, env: Raises())
register_scheme("test-unencodable", lambda spec, params, env: Unencodable())
'''

RULES = f"""dn: cn=boom-keyerror,{DEVICE}
objectClass: coercionRule
cn: boom-keyerror
coercionDIMSE: C_STORE_RQ
coercionDIMSE: C_FIND_RQ
coercionDIMSE: N_CREATE_RQ
dicomTransferRole: SCP
coercionCondition: SendingApplicationEntityTitle=BOOM_KEY
coercionURI: test-keyerror:

dn: cn=boom-encode,{DEVICE}
objectClass: coercionRule
cn: boom-encode
coercionDIMSE: C_STORE_RQ
dicomTransferRole: SCP
coercionCondition: SendingApplicationEntityTitle=BOOM_ENCODE
coercionURI: test-unencodable:

dn: cn=TRIAL1,{DEVICE}
objectClass: coercionPseudonymScope
cn: TRIAL1
coercionParam: id_template=T1-{{hash}}

dn: cn=trial1-return,{DEVICE}
objectClass: coercionRule
cn: trial1-return
coercionDIMSE: C_STORE_RQ
dicomTransferRole: SCP
coercionCondition: SendingApplicationEntityTitle=TRIAL1_SITE
coercionURI: reidentify:TRIAL1
"""


@pytest.fixture(scope="module")
def plugged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One node with the test schemes and the rules above (module-wide: it must keep serving)."""
    tmp_path = tmp_path_factory.mktemp("plugged")
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "sitecustomize.py").write_text(PLUGIN, encoding="utf-8")
    path = os.pathsep.join(p for p in (str(plugins), os.environ.get("PYTHONPATH", "")) if p)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(helpers, "DCMTK_ENV", {**helpers.DCMTK_ENV, "PYTHONPATH": path})
        node = start_node(tmp_path, 0, config_dir(tmp_path, extra=RULES))
    yield node
    node.process.terminate()
    node.process.wait(20)


def audit_lines(node: Served) -> list[dict[str, Any]]:
    """The node's audit trail, parsed."""
    return [
        json.loads(line)
        for path in sorted((node.data / "audit").glob("*.jsonl"))
        for line in path.read_text().splitlines()
    ]


def ct(index: int, patient_id: str = SECRET_ID) -> Dataset:
    """A small CT object with its own SOP Instance UID."""
    ds = make_dataset(patient_id=patient_id)
    ds.SOPInstanceUID = generate_uid(prefix="1.2.826.0.1.3680043.99.13.", entropy_srcs=[str(index)])
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ds


def associate(node: Served, calling: str, *contexts: str) -> Any:
    """An established association from *calling* to the node's COERCION."""
    ae = AE(ae_title=calling)
    for context in contexts or (CTImageStorage,):
        ae.add_requested_context(context)
    assoc = ae.associate("127.0.0.1", node.port, ae_title="COERCION")
    assert assoc.is_established
    return assoc


def store(node: Served, calling: str, *datasets: Dataset) -> list[Dataset]:
    """C-STORE each data set from *calling* on one association; the response statuses."""
    assoc = associate(node, calling)
    try:
        return [assoc.send_c_store(ds) for ds in datasets]
    finally:
        assoc.release()


def still_serving(node: Served, tmp_path: Path, index: int) -> None:
    """dcmtk's storescu from CT01 (no rule) stores an object: the node goes on."""
    path = tmp_path / f"after{index}.dcm"
    ct(1000 + index, "PID-OK").save_as(path, enforce_file_format=True)
    before = len(stored(node.data))
    storescu(node.port, path)
    assert len(stored(node.data)) == before + 1


def no_value_anywhere(node: Served) -> None:
    """The value the failing action quoted is in no log line and no audit line."""
    assert SECRET_ID not in node.text()
    assert all(SECRET_ID not in json.dumps(line) for line in audit_lines(node))


def test_rule_raising_keyerror_names_rule_and_kind_in_every_service(
    plugged: Served, tmp_path: Path
) -> None:
    """C-STORE 0xC001, C-FIND 0xC001, N-CREATE 0x0110: "rule boom-keyerror: unexpected KeyError"."""
    start, lines = len(plugged.text()), len(audit_lines(plugged))
    comment = "rule boom-keyerror: unexpected KeyError"
    [answer] = store(plugged, "BOOM_KEY", ct(1))
    assert (int(answer.Status), str(answer.ErrorComment)) == (0xC001, comment)
    assoc = associate(plugged, "BOOM_KEY", WORKLIST_FIND, MPPS_CLASS)
    try:
        query = Dataset()
        query.PatientID = SECRET_ID
        answers = [status for status, _identifier in assoc.send_c_find(query, WORKLIST_FIND)]
        assert [(int(s.Status), str(s.ErrorComment)) for s in answers] == [(0xC001, comment)]
        create = Dataset()
        create.PatientID = SECRET_ID
        create.PerformedProcedureStepStatus = "IN PROGRESS"
        status, _attributes = assoc.send_n_create(create, MPPS_CLASS, generate_uid())
        assert (int(status.Status), str(status.ErrorComment)) == (0x0110, comment)
    finally:
        assoc.release()
    log = plugged.text()[start:]
    assert log.count("failed at rule boom-keyerror: RuleFailedError from KeyError: ") == 3, log
    new = audit_lines(plugged)[lines:]
    assert [(a["status"], a["rule"], a["step"]) for a in new] == [
        ("0xC001", "boom-keyerror", "coerce"),
        ("0xC001", "boom-keyerror", "coerce query"),
        ("0x0110", "boom-keyerror", "coerce"),
    ]
    no_value_anywhere(plugged)
    still_serving(plugged, tmp_path, 1)


def test_unexpected_exception_after_the_rules_is_answered_logged_and_audited(
    plugged: Served, tmp_path: Path
) -> None:
    """A TypeError while writing: 0xC002 "unexpected TypeError", no partial file, then service."""
    start, lines = len(plugged.text()), len(audit_lines(plugged))
    before = stored(plugged.data)
    [answer] = store(plugged, "BOOM_ENCODE", ct(2))
    assert (int(answer.Status), str(answer.ErrorComment)) == (0xC002, "unexpected TypeError")
    log = plugged.text()[start:]
    assert "C-STORE from BOOM_ENCODE failed at write: TypeError at " in log, log
    assert " from coercion/" in log and "answered 0xC002" in log  # where, never a value
    [line] = audit_lines(plugged)[lines:]
    assert (line["status"], line["step"], line["error"]) == ("0xC002", "write", "TypeError")
    assert line["rules"] == [{"rule": "boom-encode", "changes": 0, "failure": None}]
    assert stored(plugged.data) == before
    assert not list((plugged.data / "objects").rglob("*.part"))
    no_value_anywhere(plugged)
    still_serving(plugged, tmp_path, 2)


def test_unknown_pseudonym_is_named_in_the_error_comment(plugged: Served, tmp_path: Path) -> None:
    """reidentify: refusing an object: "rule trial1-return: unknown pseudonym", logged, audited."""
    start, lines = len(plugged.text()), len(audit_lines(plugged))
    [answer] = store(plugged, "TRIAL1_SITE", ct(3))
    assert int(answer.Status) == 0xC001
    assert str(answer.ErrorComment) == "rule trial1-return: unknown pseudonym"
    assert "failed at rule trial1-return: RuleFailedError" in plugged.text()[start:]
    [line] = audit_lines(plugged)[lines:]
    assert (line["status"], line["rule"]) == ("0xC001", "trial1-return")
    no_value_anywhere(plugged)
    still_serving(plugged, tmp_path, 3)


def test_corrupt_mpps_record_fails_the_n_set_alone(plugged: Served, tmp_path: Path) -> None:
    """An MPPS record cut short on disk: N-SET 0x0110 logged and audited; N-CREATE goes on."""
    uid = generate_uid()
    assoc = associate(plugged, "CT01", MPPS_CLASS)
    try:
        create = Dataset()
        create.PerformedProcedureStepStatus = "IN PROGRESS"
        assert assoc.send_n_create(create, MPPS_CLASS, uid)[0].Status == 0x0000
        record = plugged.data / "mpps" / f"{uid}.dcm"
        record.write_bytes(record.read_bytes()[:100])  # cut short (a crash, a full disk)
        start, lines = len(plugged.text()), len(audit_lines(plugged))
        done = Dataset()
        done.PerformedProcedureStepStatus = "COMPLETED"
        status, _attributes = assoc.send_n_set(done, MPPS_CLASS, uid)
        assert int(status.Status) == 0x0110
        assert str(status.ErrorComment).startswith("unexpected "), status.ErrorComment
        assert assoc.send_n_create(create, MPPS_CLASS, generate_uid())[0].Status == 0x0000
    finally:
        assoc.release()
    assert "N-SET from CT01 failed at write: " in plugged.text()[start:]
    first = audit_lines(plugged)[lines]
    assert (first["dimse"], first["status"], first["step"]) == ("N_SET_RQ", "0x0110", "write")


# -- a full disk -------------------------------------------------------------------------------


def fill(folder: Path) -> Path:
    """A file that takes every byte left on *folder*'s file system (until ENOSPC)."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (1 << 16, 4096, 1):
            try:
                while True:
                    os.write(fd, bytes(size))
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)
    return filler


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs mounted where ``start_node(tmp_path, 0, ...)`` keeps its data."""
    mount = tmp_path / "data0"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, f"a tmpfs cannot be mounted (run the tests as root): {done}"
    try:
        yield mount
    finally:
        subprocess.run(["umount", "--lazy", str(mount)], check=False)


def test_full_disk_answers_a700_logs_each_object_and_the_audit_failure_once(
    small_disk: Path, tmp_path: Path
) -> None:
    """ENOSPC: 0xA700 "disk full (ENOSPC)" per object, one ERROR for the audit; then recovery."""
    node = start_node(tmp_path, 0, None)
    try:
        assert node.data == small_disk
        assert [int(s.Status) for s in store(node, "CT01", ct(10))] == [0x0000]
        filler = fill(small_disk)
        start = len(node.text())
        answers = store(node, "CT01", *(ct(11 + n) for n in range(40)))
        assert {(int(a.Status), str(a.ErrorComment)) for a in answers} == {
            (0xA700, "disk full (ENOSPC)")
        }
        log = node.text()[start:]
        assert log.count("failed at write: OSError: disk full (ENOSPC); answered 0xA700") == 40
        assert log.count("cannot write (ENOSPC); lines are lost") == 1, log
        audited = [a for a in audit_lines(node) if a["status"] == "0xA700"]
        assert all(a["step"] == "write" and a["error"] == "OSError" for a in audited)
        lost = 40 - len(audited)
        assert lost >= 1
        assert len(stored(node.data)) == 1
        assert not list((small_disk / "objects").rglob("*.part"))
        filler.unlink()  # space again: the node stores, and says how many lines were lost
        # The worker that lost the lines says so at its next audit line; the other worker
        # may take the next associations: store one object at a time until it has spoken.
        recovered: list[int] = []

        def said_so() -> bool:
            answers = store(node, "CT01", ct(100 + len(recovered)))
            recovered.extend(int(s.Status) for s in answers)
            return f"written again; {lost} lines were lost" in node.text()

        wait_until(said_so, "the lost audit lines counted", timeout=60, detail=node.text)
        assert recovered and set(recovered) == {0x0000}
        assert audit_lines(node)[-1]["status"] == "0x0000"
        assert len(stored(node.data)) == 1 + len(recovered)
    finally:
        node.process.terminate()
        node.process.wait(20)
