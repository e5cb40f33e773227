"""``coercion serve --workers 2``: two processes on one port, one node.

Concurrent storescu processes store through both workers; every object is
stored once, a destination's queue has one sender, store counters stay exact
across the processes, a killed worker is restarted, and SIGTERM (or the
supervisor's death) stops them all.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE

from tests.helpers import (
    DEVICE,
    MPPS_CLASS,
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
    storescu_at_once,
)
from tests.integration.test_script_node import patient_file, rule, script_config

pytestmark = pytest.mark.integration

UID_ROOT = "1.2.826.0.1.3680043.99.9"
SENDERS = 8


def write_batches(folder: Path, batches: int, total: int) -> list[list[Path]]:
    """*total* small CT objects (distinct SOP Instance UIDs) in *batches* lists, written."""
    written: list[list[Path]] = []
    for batch in range(batches):
        paths = []
        for index in range(total // batches + (batch < total % batches)):
            ds = make_dataset(patient_id=f"QZXWORKERS-{batch}")
            ds.SOPInstanceUID = f"{UID_ROOT}.{batch}.{index}"
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            path = folder / f"batch{batch}" / f"{index:04d}.dcm"
            path.parent.mkdir(parents=True, exist_ok=True)
            ds.save_as(path, enforce_file_format=True)
            paths.append(path)
        written.append(paths)
    return written


def audit_lines(node: Served) -> list[dict[str, Any]]:
    """Every line of the node's audit trail, parsed (a partial line fails the test)."""
    lines = []
    for path in sorted((node.data / "audit").glob("*.jsonl")):
        lines += [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    return lines


def worker_pids(node: Served) -> dict[int, int]:
    """Worker number -> pid of its latest start, from the node's log."""
    found = re.findall(r"worker (\d+) \(pid (\d+)\) serving", node.text())
    return {int(index): int(pid) for index, pid in found}


def running(pid: int) -> bool:
    """Whether process *pid* exists and is not a zombie."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "State:\tZ" not in status


def wait_for(condition: Callable[[], bool], seconds: float, what: Callable[[], str]) -> None:
    """Wait until *condition* holds; fail with *what* after *seconds*."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what()
        time.sleep(0.05)


def test_concurrent_associations_are_stored_once_by_both_workers_and_sigterm_stops_all(
    serve: Start, tmp_path: Path
) -> None:
    """8 storescu at once, 500 objects: each stored once, both workers served, SIGTERM ends all."""
    node = serve(None, "--workers", "2")
    pids = worker_pids(node)
    assert sorted(pids) == [1, 2], node.text()
    batches = write_batches(tmp_path / "in", SENDERS, 500)
    storescu_at_once(node.port, "RESEARCH", batches)  # through the deidentify: rule

    outputs = stored(node.data)
    assert len(outputs) == 500, node.text()
    assert len({dcmread(p).SOPInstanceUID for p in outputs}) == 500
    assert all(dcmread(p).PatientIdentityRemoved == "YES" for p in outputs)
    stores = [line for line in audit_lines(node) if line["dimse"] == "C_STORE_RQ"]
    assert len(stores) == 500 and {line["status"] for line in stores} == {"0x0000"}
    assert {line["worker"] for line in stores} == {1, 2}  # both took associations

    node.process.send_signal(signal.SIGTERM)
    assert node.process.wait(60) == 0, node.text()
    assert "stopped" in node.text()
    assert not any(running(pid) for pid in pids.values())


def test_forwarding_with_two_workers_has_one_sender_each_object_once_in_order(
    serve: Start, tmp_path: Path
) -> None:
    """Objects stored by both workers reach the destination once each, in each sender's order."""
    port = free_port()
    config = config_dir(
        tmp_path, remote_device("archive", "ARCHIVE", port) + forward_rule("ARCHIVE")
    )
    node = serve(config, "--workers", "2")
    batches = write_batches(tmp_path / "in", SENDERS, SENDERS * 12)
    storescu_at_once(node.port, "COERCION", batches)
    received = receive_at_archive(port, SENDERS * 12)

    uids = [str(ds.SOPInstanceUID) for ds in received]
    assert len(uids) == SENDERS * 12 and len(set(uids)) == len(uids), node.text()
    for batch in batches:  # each association's objects arrive in the order they were sent
        sent = [str(dcmread(p).SOPInstanceUID) for p in batch]
        assert [uid for uid in uids if uid in set(sent)] == sent
    queue = node.data / "queue" / "ARCHIVE"

    def forwards() -> list[dict[str, Any]]:
        return [line for line in audit_lines(node) if line["role"] == "SCU"]

    # Each forward is audited and taken off the queue once the destination's answer is back.
    wait_for(
        lambda: len(forwards()) == SENDERS * 12 and not list(queue.glob("*.dcm")),
        30,
        node.text,
    )
    lines = audit_lines(node)
    arrivals = [line for line in lines if line["role"] == "SCP" and line["dimse"] == "C_STORE_RQ"]
    assert {line["worker"] for line in arrivals} == {1, 2}
    assert len({line["worker"] for line in forwards()}) == 1  # one sender for ARCHIVE


def test_script_counters_are_exact_across_workers(serve: Start, tmp_path: Path) -> None:
    """Every patient arrives on 8 associations at once over 2 workers: one SUBJ number each."""
    config = script_config(tmp_path, rule("numbered", "SCP", f"dicomAETitle=AZ_TRIAL,{DEVICE}"))
    node = serve(config, "--workers", "2")
    patients = 20
    batches = [
        [
            patient_file(tmp_path / "in" / str(n), f"{p:03d}.dcm", f"P{p}", p, n)
            for p in range(patients)
        ]
        for n in range(SENDERS)
    ]
    storescu_at_once(node.port, "AZ_TRIAL", batches)

    outputs = [dcmread(p) for p in stored(node.data)]
    assert len(outputs) == patients * SENDERS, node.text()
    by_study: dict[str, set[str]] = {}
    for ds in outputs:
        by_study.setdefault(str(ds.StudyInstanceUID), set()).add(str(ds.PatientID))
    assert len(by_study) == patients
    assert all(len(ids) == 1 for ids in by_study.values())  # one number per patient
    numbers = sorted(next(iter(ids)) for ids in by_study.values())
    assert numbers == [f"SUBJ-{n:03d}" for n in range(1, patients + 1)]  # no gap, none twice
    stores = [line for line in audit_lines(node) if line["dimse"] == "C_STORE_RQ"]
    assert {line["worker"] for line in stores} == {1, 2}


def test_a_killed_worker_is_restarted_and_the_node_keeps_storing(
    serve: Start, tmp_path: Path
) -> None:
    """kill -9 of a worker: logged, started again; storing goes on; killing the parent ends all."""
    node = serve(None, "--workers", "2")
    first = worker_pids(node)
    os.kill(first[1], signal.SIGKILL)
    wait_for(
        lambda: worker_pids(node).get(1, first[1]) != first[1],
        60,
        node.text,
    )
    assert f"worker 1 (pid {first[1]}) exited unexpectedly (killed by SIGKILL)" in node.text()
    batches = write_batches(tmp_path / "in", 4, 20)
    storescu_at_once(node.port, "COERCION", batches)
    assert len(stored(node.data)) == 20

    pids = worker_pids(node)
    node.process.kill()  # no clean shutdown of the supervisor: the workers still stop
    node.process.wait(10)
    wait_for(lambda: not any(running(pid) for pid in pids.values()), 60, node.text)
    assert dcmtk("echoscu", "-aec", "COERCION", "127.0.0.1", node.port).returncode != 0


def lock_holder(path: Path) -> int | None:
    """The pid holding an flock on *path*, from /proc/locks (None when nobody holds one)."""
    inode = path.stat().st_ino
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if "FLOCK" in fields and fields[-3].rsplit(":", 1)[-1] == str(inode):
            return int(fields[-4])
    return None


def test_a_sender_whose_worker_dies_is_taken_over_and_nothing_is_lost(
    serve: Start, tmp_path: Path
) -> None:
    """The worker sending a queue is killed: another one sends it, every object once."""
    port = free_port()  # nothing listens yet: the objects stay queued
    config = config_dir(
        tmp_path, remote_device("archive", "ARCHIVE", port) + forward_rule("ARCHIVE")
    )
    node = serve(config, "--workers", "2")
    batches = write_batches(tmp_path / "in", 2, 6)
    storescu_at_once(node.port, "COERCION", batches)
    lock = node.data / "queue" / "ARCHIVE" / ".sender.lock"
    wait_for(lambda: lock.exists() and lock_holder(lock) is not None, 30, node.text)
    holder = lock_holder(lock)
    assert holder in worker_pids(node).values()
    os.kill(holder or 0, signal.SIGKILL)
    wait_for(lambda: lock_holder(lock) not in (None, holder), 30, node.text)  # taken over
    received = receive_at_archive(port, 6)
    uids = sorted(str(ds.SOPInstanceUID) for ds in received)
    assert uids == sorted(str(dcmread(p).SOPInstanceUID) for b in batches for p in b)
    wait_for(lambda: not list(lock.parent.glob("*.dcm")), 30, node.text)


def test_an_mpps_update_waits_while_another_process_updates_the_records(
    serve: Start, tmp_path: Path
) -> None:
    """Records are read, merged and written under DATA/mpps/.lock: an N-SET waits for it."""
    node = serve(None, "--workers", "2")
    ae = AE(ae_title="RESEARCH_MR1")
    ae.add_requested_context(MPPS_CLASS)
    uid = generate_uid()
    created = Dataset()
    created.PerformedProcedureStepStatus = "IN PROGRESS"
    assoc = ae.associate("127.0.0.1", node.port, ae_title="COERCION")
    assert assoc.is_established
    try:
        assert assoc.send_n_create(created, MPPS_CLASS, uid)[0].Status == 0x0000
    finally:
        assoc.release()
    answers: list[int] = []

    def complete() -> None:
        change = Dataset()
        change.PerformedProcedureStepStatus = "COMPLETED"
        second = ae.associate("127.0.0.1", node.port, ae_title="COERCION")
        try:
            answers.append(int(second.send_n_set(change, MPPS_CLASS, uid)[0].Status))
        finally:
            second.release()

    fd = os.open(node.data / "mpps" / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # as a worker merging into a record holds it
        setter = threading.Thread(target=complete, daemon=True)
        setter.start()
        setter.join(1.5)  # the behaviour under test: it does not finish while the lock is held
        assert setter.is_alive() and not answers, node.text()
    finally:
        os.close(fd)
    setter.join(30)
    assert answers == [0x0000], node.text()
    record = dcmread(node.data / "mpps" / f"{uid}.dcm")
    assert record.PerformedProcedureStepStatus == "COMPLETED"
