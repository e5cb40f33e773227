"""Output files: private whatever the umask, durable (fsync, grouped), devices written through."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from coercion.dicom import outputs
from coercion.dicom.outputs import (
    atomic_output,
    create_private,
    private_folders,
    publish_copy,
    sync_folder,
)
from tests.helpers import wait_until


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_files_and_folders_are_private_under_umask_000(tmp_path: Path, loose_umask: None) -> None:
    """A file is created 0600 and the folders made for it 0700, even under umask 000."""
    path = tmp_path / "study" / "series" / "object.dcm"
    with atomic_output(path) as fd:
        os.write(fd, b"PHI")
    assert mode(path) == 0o600
    assert mode(path.parent) == 0o700
    assert mode(path.parent.parent) == 0o700


def test_the_umask_is_never_touched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Writing never calls os.umask (setting it from one thread races with the others)."""

    def forbidden(_mask: int) -> int:
        raise AssertionError("os.umask called")

    monkeypatch.setattr(os, "umask", forbidden)
    with atomic_output(tmp_path / "a" / "out.dcm") as fd:
        os.write(fd, b"x")
    assert (tmp_path / "a" / "out.dcm").read_bytes() == b"x"


def test_existing_folders_keep_their_mode(tmp_path: Path) -> None:
    """Only folders this call creates are made 0700; an existing one is left as it is."""
    tmp_path.chmod(0o755)
    created = private_folders(tmp_path / "new" / "deeper")
    assert created == [tmp_path / "new", tmp_path / "new" / "deeper"]
    assert mode(tmp_path) == 0o755


def test_the_file_and_its_folder_are_fsynced(tmp_path: Path, fsynced: list[str]) -> None:
    """With sync (the default) the content is fsynced, then the folder holding the new name."""
    path = tmp_path / "out.dcm"
    with atomic_output(path) as fd:
        os.write(fd, b"durable")
    assert len(fsynced) == 2
    assert Path(fsynced[0]).name.startswith(".out.dcm.")  # the temporary, before the rename
    assert fsynced[1] == str(tmp_path)


def test_new_folders_are_fsynced_in_their_parents(tmp_path: Path, fsynced: list[str]) -> None:
    """A folder created for the file is made durable too: its parent is fsynced."""
    with atomic_output(tmp_path / "a" / "b" / "out.dcm") as fd:
        os.write(fd, b"x")
    assert fsynced[1:] == [str(tmp_path), str(tmp_path / "a"), str(tmp_path / "a" / "b")]


def test_sync_false_does_not_fsync(tmp_path: Path, fsynced: list[str]) -> None:
    """sync=False (coercionSyncWrites: FALSE) writes and renames without any fsync."""
    with atomic_output(tmp_path / "out.dcm", sync=False) as fd:
        os.write(fd, b"fast")
    assert fsynced == []
    assert (tmp_path / "out.dcm").read_bytes() == b"fast"


def test_concurrent_folder_syncs_are_grouped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Threads asking for the same folder while one fsync runs share the next fsync."""
    release = threading.Event()
    calls: list[str] = []

    def slow_fsync(path: Path) -> None:
        calls.append(str(path))
        if len(calls) == 1:
            assert release.wait(20)

    monkeypatch.setattr(outputs, "_fsync_path", slow_fsync)
    threads = [threading.Thread(target=sync_folder, args=(tmp_path,)) for _ in range(8)]
    for thread in threads:
        thread.start()
    rounds = outputs._FOLDERS._rounds

    def all_asked() -> bool:
        state = rounds.get(str(tmp_path))
        return state is not None and state.issued == 8

    try:
        wait_until(all_asked, "all 8 threads to ask for the folder", timeout=20, interval=0.005)
    finally:
        release.set()
    for thread in threads:
        thread.join(20)
    assert not any(thread.is_alive() for thread in threads)
    assert calls == [str(tmp_path)] * 2  # the first, then one for the seven that waited
    assert rounds == {}  # nothing kept once no one waits


def test_a_fifo_is_written_through_not_replaced(tmp_path: Path) -> None:
    """An existing FIFO receives the content and stays a FIFO."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()), daemon=True)
    reader.start()
    try:
        with atomic_output(fifo) as fd:
            os.write(fd, b"through the pipe")
    finally:
        reader.join(10)
        if reader.is_alive():  # nothing was written into the FIFO: let the reader go
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            reader.join(10)
    assert received == [b"through the pipe"]
    assert stat.S_ISFIFO(fifo.lstat().st_mode)


def test_a_symlink_to_a_device_is_written_through(tmp_path: Path) -> None:
    """A symlink to a character device stays a symlink; the device stays a device."""
    link = tmp_path / "null"
    link.symlink_to("/dev/null")
    with atomic_output(link) as fd:
        os.write(fd, b"discarded")
    assert link.is_symlink()
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    assert [p.name for p in tmp_path.iterdir()] == ["null"]


def test_a_symlink_to_a_file_replaces_the_target(tmp_path: Path) -> None:
    """A symlink to a regular file keeps being a symlink; the file it names gets the content."""
    target = tmp_path / "real.csv"
    target.write_bytes(b"old")
    link = tmp_path / "link.csv"
    link.symlink_to(target)
    with atomic_output(link) as fd:
        os.write(fd, b"new")
    assert link.is_symlink()
    assert target.read_bytes() == b"new"


def test_dash_is_standard_output(capfd: pytest.CaptureFixture[str]) -> None:
    """The path - writes to standard output, and creates no file named -."""
    with atomic_output(Path("-")) as fd:
        os.write(fd, b"to stdout\n")
    assert capfd.readouterr().out == "to stdout\n"
    assert not Path("-").exists()


def test_a_temporary_file_is_private_and_named_to_be_cleaned_up(
    tmp_path: Path, loose_umask: None
) -> None:
    """temporary_file: 0600 in a new 0700 folder, named as remove_stale_temporaries finds."""
    fd, path = outputs.temporary_file(tmp_path / "incoming", "received")
    os.close(fd)
    assert mode(path) == 0o600
    assert mode(path.parent) == 0o700
    assert outputs.STALE_TEMPORARY.match(path.name)
    assert outputs.remove_stale_temporaries(tmp_path) == [path]


def test_publish_renames_the_file_and_syncs_it_and_its_folders(
    tmp_path: Path, fsynced: list[str]
) -> None:
    """publish: the same file (inode) at its place, content fsynced before, folders after."""
    fd, tmp = outputs.temporary_file(tmp_path / "incoming", "received")
    os.write(fd, b"large object")
    os.close(fd)
    inode = tmp.stat().st_ino
    target = tmp_path / "objects" / "study" / "object.dcm"
    outputs.publish(tmp, target)
    assert target.read_bytes() == b"large object"
    assert target.stat().st_ino == inode  # renamed, not copied
    assert mode(target) == 0o600
    assert mode(target.parent) == 0o700
    assert not tmp.exists()
    assert Path(fsynced[0]).name.startswith(".received.")
    assert fsynced[1:] == [str(tmp_path), str(tmp_path / "objects"), str(target.parent)]


def test_publish_without_sync_replaces_an_existing_file(tmp_path: Path, fsynced: list[str]) -> None:
    """publish(sync=False) replaces a previous copy whole, without any fsync."""
    target = tmp_path / "object.dcm"
    target.write_bytes(b"old")
    fd, tmp = outputs.temporary_file(tmp_path, "received")
    os.write(fd, b"new")
    os.close(fd)
    outputs.publish(tmp, target, sync=False)
    assert target.read_bytes() == b"new"
    assert fsynced == []


def test_publish_writes_through_a_fifo_and_removes_the_temporary(tmp_path: Path) -> None:
    """A FIFO at the target is written through (a copy), not replaced; the temporary goes."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    fd, tmp = outputs.temporary_file(tmp_path / "incoming", "received")
    os.write(fd, b"x" * 100_000)
    os.close(fd)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    outputs.publish(tmp, fifo)
    reader.join(10)
    assert got == [b"x" * 100_000]
    assert stat.S_ISFIFO(fifo.lstat().st_mode)
    assert not tmp.exists()


def test_publish_into_a_missing_place_fails_and_removes_the_temporary(tmp_path: Path) -> None:
    """A target whose folder cannot be made: the error is raised, the temporary removed."""
    (tmp_path / "file").write_bytes(b"")
    fd, tmp = outputs.temporary_file(tmp_path / "incoming", "received")
    os.close(fd)
    with pytest.raises(NotADirectoryError):
        outputs.publish(tmp, tmp_path / "file" / "object.dcm")
    assert not tmp.exists()


def test_copy_descriptor_copies_everything_from_the_start(tmp_path: Path) -> None:
    """copy_descriptor copies the whole source (whatever its position) after what dst holds."""
    source = tmp_path / "source"
    data = os.urandom(3_000_000)
    source.write_bytes(data)
    out = tmp_path / "out"
    with source.open("rb") as src, out.open("wb") as dst:
        src.seek(1000)
        dst.write(b"head")
        dst.flush()
        outputs.copy_descriptor(src.fileno(), dst.fileno())
    assert out.read_bytes() == b"head" + data


def test_create_private_makes_a_new_private_file_once(tmp_path: Path, loose_umask: None) -> None:
    """A new file is 0600 whatever the umask; an existing one is left alone (None)."""
    path = tmp_path / "secret.key"
    fd = create_private(path)
    assert fd is not None
    os.write(fd, b"first")
    os.close(fd)
    assert mode(path) == 0o600
    assert create_private(path) is None
    assert path.read_bytes() == b"first"


def test_publish_copy_links_and_keeps_the_source(tmp_path: Path, fsynced: list[str]) -> None:
    """The target is the source's inode (no copy), the source stays, new folders are synced."""
    source = tmp_path / "stored.dcm"
    source.write_bytes(b"object")
    target = tmp_path / "queue" / "peer" / "entry.dcm"
    publish_copy(source, target)
    assert target.read_bytes() == b"object" and source.exists()
    assert os.path.samefile(source, target)
    assert [p.name for p in target.parent.iterdir()] == ["entry.dcm"]  # no temporary left
    assert str(tmp_path / "queue") in fsynced and str(target.parent) in fsynced


def test_publish_copy_copies_where_no_link_can_be_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without hard links (another file system), a private copy is renamed into place."""
    source = tmp_path / "stored.dcm"
    source.write_bytes(b"object")

    def refuse(*_args: object) -> None:
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", refuse)
    target = tmp_path / "queue" / "entry.dcm"
    publish_copy(source, target, sync=False)
    assert target.read_bytes() == b"object"
    assert not os.path.samefile(source, target)
    assert mode(target) == 0o600
