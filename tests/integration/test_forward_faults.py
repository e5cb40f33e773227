"""Forwarding under faults: refusals, warnings, slow and dead parts, kill -9, thousands of objects.

Destinations are a pynetdicom storage SCP whose answers the test chooses, or
dcmtk's ``storescp``. The node runs as a user starts it (a subprocess), except
where a test shortens the DIMSE timeout or kills a sender thread: there it
runs in this process, still reached by dcmtk's ``storescu``.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread, dcmwrite
from pydicom.data import get_testdata_file
from pydicom.uid import CTImageStorage
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, evt

from coercion.directory.sources import EmbeddedDirectory
from coercion.directory.watch import ConfigurationWatcher
from coercion.engine import ActionEnv
from coercion.net import adapt, forward
from coercion.net.node import Node, NodeSettings
from tests.helpers import (
    DCMTK_ENV,
    SECRET,
    Start,
    config_dir,
    dcmtk,
    forward_rule,
    free_port,
    make_dataset,
    remote_device,
    storescu,
    tool,
    wait_until,
)

pytestmark = pytest.mark.integration

UID_ROOT = "1.2.826.0.1.3680043.99.8"
CANARY_NAME = "QZXCANARY^PHIMARKER"
#: Forward everything the COERCION AE stores to ARCHIVE.
FORWARD_RULE = forward_rule("ARCHIVE")


def write_objects(folder: Path, count: int, tag: str, modality: str = "CT") -> list[str]:
    """*count* small CT objects (PHI canary in the name) in *folder*; their SOP Instance UIDs."""
    folder.mkdir(parents=True, exist_ok=True)
    uids = []
    for index in range(count):
        ds = make_dataset(patient=CANARY_NAME)
        ds.Modality = modality
        ds.SOPInstanceUID = f"{UID_ROOT}.{tag}.{index}"
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        dcmwrite(folder / f"{index:05d}.dcm", ds, enforce_file_format=True)
        uids.append(ds.SOPInstanceUID)
    return uids


def queued(data: Path) -> list[Path]:
    """The objects still queued for ARCHIVE."""
    return sorted((data / "queue" / "ARCHIVE").glob("*.dcm"))


def failed(data: Path) -> dict[str, str]:
    """Objects set aside for ARCHIVE: SOP Instance UID -> the text of the reason file."""
    folder = data / "queue" / "ARCHIVE" / "failed"
    return {
        str(dcmread(path, stop_before_pixels=True).SOPInstanceUID): Path(
            f"{path}.reason"
        ).read_text(encoding="utf-8")
        for path in sorted(folder.glob("*.dcm"))
    }


class Destination:
    """A CT storage SCP named ARCHIVE: answers each object with the status the test chose."""

    def __init__(self, statuses: dict[str, int] | None = None, slow: str = "") -> None:
        self.statuses = statuses or {}
        self.slow = slow
        self.received: list[str] = []
        self.release = threading.Event()
        ae = AE(ae_title="ARCHIVE")
        ae.add_supported_context(CTImageStorage, ALL_TRANSFER_SYNTAXES)
        handlers: list[Any] = [(evt.EVT_C_STORE, self._on_store)]
        self.port = free_port()
        server: Any = ae.start_server(("127.0.0.1", self.port), block=False, evt_handlers=handlers)
        self.server = server

    def _on_store(self, event: Any) -> int:
        uid = str(event.request.AffectedSOPInstanceUID)
        self.received.append(uid)
        if uid == self.slow:
            self.release.wait(3.0)  # longer than the node's DIMSE timeout in the test
        return self.statuses.get(uid, 0x0000)

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()


@pytest.fixture
def destination() -> Iterator[Callable[..., Destination]]:
    """``destination(statuses=None, slow="")`` starts an ARCHIVE SCP; all stopped afterwards."""
    started: list[Destination] = []

    def start(statuses: dict[str, int] | None = None, slow: str = "") -> Destination:
        started.append(Destination(statuses, slow))
        return started[-1]

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def in_process(tmp_path: Path) -> Iterator[Callable[[int], Node]]:
    """``in_process(port)`` starts a node in this process forwarding to ARCHIVE at *port*."""
    nodes: list[Node] = []

    def start(port: int) -> Node:
        extra = remote_device("archive", "ARCHIVE", port) + FORWARD_RULE
        watcher = ConfigurationWatcher(
            EmbeddedDirectory(config_dir(tmp_path, extra=extra)), ActionEnv(SECRET), "coercion"
        )
        node = Node(watcher, NodeSettings(port=0, data=tmp_path / "data", secret=SECRET))
        nodes.append(node)
        return node

    yield start
    for node in nodes:
        node.stop()


# -- per-object failures -------------------------------------------------------------------------


def test_refused_context_and_missing_sop_class_are_set_aside_and_the_queue_goes_on(
    serve: Start, tmp_path: Path, destination: Callable[..., Destination]
) -> None:
    """No accepted context or no SOP Class UID: the object goes to failed/, the queue goes on.

    No rule can leave an object without SOP Class UID (a script that removes it is refused
    at load), so the queue entry without one is put in the queue folder as a foreign file.
    """
    archive = destination()
    config = config_dir(
        tmp_path, extra=remote_device("archive", "ARCHIVE", archive.port) + FORWARD_RULE
    )
    node = serve(config)
    mr = Path(str(get_testdata_file("MR_small.dcm", download=False)))
    [stored_no_class] = write_objects(tmp_path / "sc", 1, "1.1", modality="SC")
    foreign = dcmread(tmp_path / "sc" / "00000.dcm")
    del foreign.SOPClassUID
    del foreign.file_meta.MediaStorageSOPClassUID
    queue = node.data / "queue" / "ARCHIVE"
    queue.mkdir(parents=True, exist_ok=True)
    dcmwrite(queue / f"COERCION--{0:020d}-00000000.dcm", foreign)
    storescu(node.port, mr)  # first: the two that cannot go
    good = write_objects(tmp_path / "ct", 5, "2")
    storescu(node.port, tmp_path / "ct")
    wait_until(  # the sender survived both
        lambda: len(archive.received) == 5 and not queued(node.data),
        "5 objects at ARCHIVE and an empty queue",
        timeout=30,
        detail=node.text,
    )
    assert sorted(archive.received) == good  # storescu sends a folder in its own order
    reasons = failed(node.data)
    assert set(reasons) == {str(dcmread(mr).SOPInstanceUID), stored_no_class}
    assert reasons[stored_no_class] == "ARCHIVE: no SOP Class UID in the stored object\n"
    assert reasons[str(dcmread(mr).SOPInstanceUID)].startswith("ARCHIVE: ValueError while sending")
    text = "".join(reasons.values()) + node.text()
    assert CANARY_NAME not in text and UID_ROOT not in text  # never a value


def test_warning_statuses_count_as_delivered_and_failures_are_set_aside(
    serve: Start, tmp_path: Path, destination: Callable[..., Destination]
) -> None:
    """Warnings (0x0001, 0x0107, 0x0116, 0xBxxx) dequeue the object; failures go to failed/."""
    uids = write_objects(tmp_path / "in", 8, "3")
    answers = [0x0001, 0x0107, 0x0116, 0xB000, 0xB007, 0xBFFF, 0xA700, 0xC123]
    archive = destination(dict(zip(uids, answers, strict=True)))
    node = serve(
        config_dir(tmp_path, extra=remote_device("archive", "ARCHIVE", archive.port) + FORWARD_RULE)
    )
    storescu(node.port, tmp_path / "in")
    wait_until(
        lambda: len(archive.received) == 8 and not queued(node.data),
        "8 objects at ARCHIVE and an empty queue",
        timeout=30,
        detail=node.text,
    )
    reasons = failed(node.data)
    assert sorted(reasons) == sorted(uids[6:])  # only the two failures
    assert reasons[uids[6]] == "ARCHIVE: refused with status 0xA700 (Failure)\n"
    assert reasons[uids[7]] == "ARCHIVE: refused with status 0xC123 (Failure)\n"
    assert sorted(archive.received) == uids  # each sent once: a warning is not retried


def test_a_destination_slower_than_the_dimse_timeout_holds_the_queue_for_bounded_tries(
    tmp_path: Path,
    destination: Callable[..., Destination],
    in_process: Callable[[int], Node],
) -> None:
    """An object never answered in time is tried max_attempts times, set aside; the rest go."""
    [slow] = write_objects(tmp_path / "slow", 1, "4.1")
    rest = write_objects(tmp_path / "rest", 19, "4.2")
    archive = destination(slow=slow)
    node = in_process(archive.port)
    node.forwarder.dimse_timeout = 1.0
    _host, port = node.start()
    started = time.monotonic()
    storescu(port, tmp_path / "slow")  # the head of the queue
    storescu(port, tmp_path / "rest")
    wait_until(
        lambda: len(archive.received) == 22 and not queued(node.settings.data),
        "22 objects at ARCHIVE and an empty queue",
        timeout=60,
    )
    assert time.monotonic() - started < 30  # three 1 s timeouts and 1 + 2 s of backoff
    assert archive.received[:3] == [slow] * node.forwarder.max_attempts
    assert sorted(archive.received[3:]) == sorted(rest)  # the 19 behind it, once each
    assert failed(node.settings.data) == {slow: "ARCHIVE: no answer within 1 s, 3 attempts\n"}


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_dead_sender_is_noticed_and_restarted(
    tmp_path: Path,
    destination: Callable[..., Destination],
    in_process: Callable[[int], Node],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A sender thread that dies is replaced; what it had queued is delivered."""
    deaths: list[str] = []
    prepare = forward._Sender._prepare

    def die_once(self: Any, batch: list[Path], host: str) -> Any:
        if not deaths:
            deaths.append(self.name)
            raise SystemExit  # ends the thread: nothing in the sender catches it
        return prepare(self, batch, host)

    monkeypatch.setattr(forward._Sender, "_prepare", die_once)
    monkeypatch.setattr(forward, "_WATCH_INTERVAL", 0.2)
    uids = write_objects(tmp_path / "in", 1, "5")
    archive = destination()
    node = in_process(archive.port)
    _host, port = node.start()
    with caplog.at_level(logging.ERROR, logger="coercion.net.forward"):
        storescu(port, tmp_path / "in")
        wait_until(  # delivered, then taken off the queue once the destination has answered
            lambda: archive.received == uids and not queued(node.settings.data),
            "every object at ARCHIVE and the queue empty",
            timeout=20,
            detail=lambda: caplog.text,
        )
    assert deaths == ["forward-ARCHIVE"]
    assert "forwarding to ARCHIVE: the sender had stopped; restarted" in caplog.text


# -- kill -9 -------------------------------------------------------------------------------------

KILLED_WRITER = """
import os, signal, sys
from pathlib import Path
from coercion.dicom.outputs import atomic_output
with atomic_output(Path(sys.argv[1])) as fd:
    os.write(fd, b"half an object")
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_temporary_files_a_kill_9_left_are_removed_at_start(serve: Start, tmp_path: Path) -> None:
    """The .NAME.XXXX.part files a kill -9 left during writes go at the next start; no others."""
    data = tmp_path / "shared-data"
    targets = [
        data / "objects" / "1.2.3" / "4.5.6" / "7.8.9.dcm",
        data / "mpps" / "1.2.3.dcm",
        data / "queue" / "ARCHIVE" / "CT01--00000000000000000001-0badcafe.dcm",
    ]
    for target in targets:
        killed = subprocess.run(
            [sys.executable, "-c", KILLED_WRITER, str(target)], env=DCMTK_ENV, check=False
        )
        assert killed.returncode == -signal.SIGKILL
    linked = data / "queue" / "ARCHIVE" / ".CT01--00000000000000000002-0badcafe.dcm.part"
    linked.write_bytes(b"a queue entry killed between its link and its rename")
    left = sorted(data.rglob(".*.part"))
    assert len(left) == 4 and not any(t.exists() for t in targets)
    ours_not = [data / "objects" / "keep.part", data / "objects" / ".keep.part"]
    for path in ours_not:
        path.write_bytes(b"not a temporary file of ours")
    node = serve(None, "--data", str(data))
    assert not any(path.exists() for path in left)
    assert all(path.exists() for path in ours_not)
    assert "removed 4 temporary files an interrupted run left" in node.text()


# -- the requestor race, against dcmtk's storescp ------------------------------------------------


@pytest.fixture
def storescp(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """dcmtk's storescp (unique file names: a duplicate is a second file); its port and folder."""
    out = tmp_path / "storescp"
    out.mkdir()
    port = free_port()
    process = subprocess.Popen(
        [tool("storescp"), "+uf", "-od", str(out), str(port)],
        env=DCMTK_ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(
            lambda: dcmtk("echoscu", "127.0.0.1", port).returncode == 0,
            f"storescp on port {port} to answer C-ECHO",
        )
        yield port, out
    finally:
        process.terminate()
        process.wait(10)


def received_uids(folder: Path) -> list[str]:
    """The SOP Instance UIDs of the files storescp wrote, one per file."""
    return [
        str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)
        for path in folder.iterdir()
        if path.is_file()
    ]


def test_2000_c_stores_over_the_event_driven_loops_to_storescp_none_lost(
    storescp: tuple[int, Path],
) -> None:
    """A requestor's loop never takes a C-STORE response its send_c_store waits for."""
    assert adapt.install()
    port, out = storescp
    ds = make_dataset()
    ae = AE(ae_title="COERCION")
    ae.dimse_timeout = 2  # a response taken by the wrong thread shows as a 2 s timeout
    ae.add_requested_context(CTImageStorage, str(ds.file_meta.TransferSyntaxUID))
    answered = unanswered = 0
    started = time.monotonic()
    for batch in range(32):
        assoc = ae.associate(
            "127.0.0.1", port, ae_title="ARCHIVE", evt_handlers=adapt.requestor_handlers()
        )
        assert assoc.is_established
        try:
            for index in range(64):
                ds.SOPInstanceUID = f"{UID_ROOT}.6.{batch}.{index}"
                status = assoc.send_c_store(ds)
                if getattr(status, "Status", None) == 0x0000:
                    answered += 1
                else:
                    unanswered += 1
                    break  # the association was aborted
        finally:
            if assoc.is_established:
                assoc.release()
    elapsed = time.monotonic() - started
    assert (answered, unanswered) == (2048, 0), f"{elapsed:.1f} s"
    uids = received_uids(out)
    assert len(uids) == len(set(uids)) == 2048


def test_2000_objects_forwarded_to_storescp_without_stall_or_duplicate(
    serve: Start, tmp_path: Path, storescp: tuple[int, Path]
) -> None:
    """Through the node to storescp: every object once, no 60 s DIMSE-timeout stall."""
    port, out = storescp
    node = serve(
        config_dir(tmp_path, extra=remote_device("archive", "ARCHIVE", port) + FORWARD_RULE)
    )
    uids = write_objects(tmp_path / "in", 2000, "7")
    started = time.monotonic()
    storescu(node.port, tmp_path / "in")
    wait_until(
        lambda: not queued(node.data) and len(list(out.iterdir())) >= 2000,
        "2000 objects at storescp and an empty queue",
        timeout=85,
        detail=node.text,
    )
    elapsed = time.monotonic() - started
    assert "no answer from ARCHIVE" not in node.text()  # a stall: 60 s, then a second copy
    assert elapsed < 60, f"{elapsed:.1f} s"
    received = received_uids(out)
    assert sorted(received) == sorted(uids)  # each once: no duplicate, none lost
    assert "unexpected" not in node.text()


def test_a_requestor_association_left_idle_still_times_out() -> None:
    """The requestor's loop still watches the network timeout (and so release and abort)."""
    assert adapt.install()
    acceptor = AE(ae_title="ARCHIVE")
    acceptor.add_supported_context(CTImageStorage)
    server: Any = acceptor.start_server(("127.0.0.1", 0), block=False)
    try:
        requestor = AE(ae_title="COERCION")
        requestor.network_timeout = 0.3
        requestor.add_requested_context(CTImageStorage)
        assoc = requestor.associate("127.0.0.1", int(server.server_address[1]), ae_title="ARCHIVE")
        assert assoc.is_established
        wait_until(lambda: not assoc.is_established, "the association to end", timeout=30)
        assert assoc.is_released or assoc.is_aborted
    finally:
        server.shutdown()
