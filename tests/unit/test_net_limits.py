"""coercion.net.limits and the spooled data set of coercion.net.receive, in-process."""

from __future__ import annotations

import mmap
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from io import BytesIO
from pathlib import Path

import pytest

from coercion.net import incoming
from coercion.net.limits import AssociationCounter, NetworkLimits, from_settings
from coercion.net.receive import SpooledDataSet
from coercion.net.workers import ExclusiveLock, LockSlots


@contextmanager
def running(count: int) -> Iterator[list[threading.Thread]]:
    """*count* live threads standing in for associations; ended on exit."""
    stop = threading.Event()
    threads = [threading.Thread(target=stop.wait) for _ in range(count)]
    for thread in threads:
        thread.start()
    try:
        yield threads
    finally:
        stop.set()
        for thread in threads:
            thread.join()


def test_settings_become_limits_with_defaults_for_the_rest() -> None:
    """Integers from the directory become seconds (float) and counts (int); the rest default."""
    limits = from_settings({"coercionNetworkTimeout": 5, "coercionMaxAssociations": "9"})
    assert limits.network_timeout == 5.0
    assert isinstance(limits.network_timeout, float)
    assert limits.max_associations == 9
    assert limits.request_timeout == NetworkLimits().request_timeout == 10


def test_counter_refuses_per_address_then_in_total(caplog: pytest.LogCaptureFixture) -> None:
    """Two per address and three in total: the third from one address and the fourth refused."""
    limits = NetworkLimits(max_associations=3, max_associations_per_host=2)
    counter = AssociationCounter()
    with running(5) as threads:
        assert counter.admit(threads[0], "10.0.0.1", limits) == ""
        assert counter.admit(threads[1], "10.0.0.1", limits) == ""
        assert counter.admit(threads[2], "10.0.0.1", limits) == "coercionMaxAssociationsPerHost"
        assert counter.admit(threads[2], "10.0.0.2", limits) == ""
        assert counter.admit(threads[3], "10.0.0.3", limits) == "coercionMaxAssociations"
        assert counter.running() == 3
    assert counter.running() == 0  # ended threads no longer count
    with running(1) as threads:
        assert counter.admit(threads[0], "10.0.0.1", limits) == ""
    assert "association from 10.0.0.3 refused: 3 associations running" in caplog.text


def test_counters_sharing_a_slots_folder_count_together(tmp_path: Path) -> None:
    """Two counters on one folder (two workers): the limits hold for both together."""
    limits = NetworkLimits(max_associations=3, max_associations_per_host=2)
    first, second = (AssociationCounter(tmp_path / "slots") for _ in range(2))
    with running(5) as threads:
        assert first.admit(threads[0], "10.0.0.1", limits) == ""
        assert second.admit(threads[1], "10.0.0.1", limits) == ""
        assert first.admit(threads[2], "10.0.0.1", limits) == "coercionMaxAssociationsPerHost"
        assert first.admit(threads[2], "10.0.0.2", limits) == ""
        assert second.admit(threads[3], "10.0.0.3", limits) == "coercionMaxAssociations"
    # Ended threads give their slots back (a thread per association waits for its end).
    deadline = time.monotonic() + 10
    while LockSlots(tmp_path / "slots").taken("all", 3) and time.monotonic() < deadline:
        time.sleep(0.01)
    with running(3) as threads:
        assert [second.admit(t, "10.0.0.1", limits) for t in threads] == [
            "",
            "",
            "coercionMaxAssociationsPerHost",
        ]


def test_exclusive_lock_has_one_holder_until_released(tmp_path: Path) -> None:
    """A second lock on the same file is refused until the first is released."""
    first, second = ExclusiveLock(tmp_path / "lock"), ExclusiveLock(tmp_path / "lock")
    assert first.acquire() and first.held
    assert not second.acquire() and not second.held
    first.release()
    assert second.acquire()
    second.release()


def test_spooled_data_set_reads_back_and_copies_in_chunks(tmp_path: Path) -> None:
    """Bytes written to a spooled data set come back whole from getvalue() and copy_to()."""
    data = os.urandom(700_000)
    spooled = SpooledDataSet(tmp_path / "incoming")
    for start in range(0, len(data), 65536):
        spooled.write(data[start : start + 65536])
    assert spooled.tell() == len(data)
    assert spooled.getvalue() == data
    assert spooled.getbuffer().nbytes == 0  # nothing held in memory
    out = tmp_path / "copy"
    fd = os.open(out, os.O_WRONLY | os.O_CREAT)
    try:
        spooled.copy_to(fd)
    finally:
        os.close(fd)
    assert out.read_bytes() == data
    assert spooled.tell() == len(data)  # writing can go on where it was
    spooled.close()
    assert list((tmp_path / "incoming").iterdir()) == []  # an unnamed temporary file


def test_spooled_data_set_maps_without_reading(tmp_path: Path) -> None:
    """mapped() gives the spooled bytes as a read-only map (b"" when empty); size() its length."""
    spooled = SpooledDataSet(tmp_path)
    with spooled.mapped() as empty:
        assert empty == b""
    data = os.urandom(300_000)
    spooled.write(data)
    assert incoming.size(spooled) == len(data)
    assert incoming.size(BytesIO(b"12345")) == 5
    with spooled.mapped() as view:
        assert isinstance(view, mmap.mmap)
        assert view[:] == data
    spooled.close()


def test_slot_files_nobody_holds_are_removed_and_held_ones_kept(tmp_path: Path) -> None:
    """At start the slot files of earlier runs go; one held (an association running) stays."""
    slots = LockSlots(tmp_path / "slots")
    held = slots.take("host-10.0.0.1", 2)
    for address in ("10.0.0.2", "10.0.0.3"):  # taken and given back: files left behind
        fd = slots.take(f"host-{address}", 2)
        assert fd is not None
        os.close(fd)
    assert held is not None
    try:
        assert slots.remove_free() == 2
        assert [p.name for p in (tmp_path / "slots").iterdir()] == ["host-10.0.0.1.0"]
        assert slots.taken("host-10.0.0.1", 1) == 1  # still counted
    finally:
        os.close(held)
    assert slots.remove_free() == 1 and not list((tmp_path / "slots").iterdir())
