"""Output files: private, atomic, durable, and never a device replaced by a regular file.

Every file coercion writes may hold PHI (a pass-through copy holds all of it),
so files are created with mode 0600 and folders 0700, set explicitly with
``fchmod``/``chmod``: the process umask is neither read nor changed (changing
it from one thread races with the files other threads create).

:func:`atomic_output` writes a temporary file beside the target and renames
it over the target only on success. With ``sync`` (the default) the file is
fsynced before the rename and its folder after it, so that a success answered
to a peer survives a power cut; folder fsyncs asked for by several threads at
once are done once for all of them (a group commit). An existing target that
is not a regular file (``/dev/null``, a FIFO, a terminal) is written through,
never replaced; a symlink is followed. ``-`` is standard output.
"""

from __future__ import annotations

import errno
import os
import re
import stat
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from coercion.errors import OutputError, map_errors

__all__ = [
    "FILE_MODE",
    "FOLDER_MODE",
    "STALE_TEMPORARY",
    "atomic_output",
    "copy_descriptor",
    "copy_range",
    "create_private",
    "output_file",
    "private_folders",
    "publish",
    "publish_copy",
    "remove_stale_temporaries",
    "sync_folder",
    "temporary_file",
    "write_all",
]

#: The name of a temporary file while it is written (``.NAME.XXXXXXXX.part``, see atomic_output).
STALE_TEMPORARY = re.compile(r"^\..+\.[A-Za-z0-9_]+\.part$")

#: The mode of every file coercion creates: the owner reads and writes, nobody else.
FILE_MODE = 0o600
#: The mode of every folder coercion creates.
FOLDER_MODE = 0o700


def private_folders(path: Path) -> list[Path]:
    """Create *path* and its missing parents with mode 0700; return the folders created.

    An existing folder keeps its mode: only what this call creates is made private.
    """
    missing: list[Path] = []
    current = path
    while not current.is_dir():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    created: list[Path] = []
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=FOLDER_MODE)
        except FileExistsError:
            if not folder.is_dir():
                raise NotADirectoryError(
                    errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(folder)
                ) from None
            continue
        os.chmod(folder, FOLDER_MODE)  # mkdir's mode went through the umask
        created.append(folder)
    return created


@dataclass
class _Round:
    """The group-commit state of one folder: tickets issued, the last one synced."""

    issued: int = 0
    synced: int = 0
    busy: bool = False
    waiting: int = 0


class _FolderSync:
    """fsync of folders, shared by the threads that ask for the same folder at the same time.

    A thread takes a ticket; if a sync of the folder is running, it waits for it
    to end, then either finds its ticket covered by the sync that followed or
    runs the next sync itself, covering every ticket issued until it started.
    """

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._rounds: dict[str, _Round] = {}

    def sync(self, folder: Path) -> None:
        key = str(folder)
        with self._lock:
            state = self._rounds.setdefault(key, _Round())
            state.issued += 1
            ticket = state.issued
            state.waiting += 1
            try:
                while state.synced < ticket:
                    if not state.busy:
                        state.busy = True
                        covered = state.issued
                        break
                    self._lock.wait()
                else:
                    return
            finally:
                state.waiting -= 1
                self._forget_if_idle(key, state)
        synced = False
        try:
            _fsync_path(folder)
            synced = True
        finally:
            with self._lock:
                state.busy = False
                if synced:
                    state.synced = max(state.synced, covered)
                self._forget_if_idle(key, state)
                self._lock.notify_all()

    def _forget_if_idle(self, key: str, state: _Round) -> None:
        """Drop a folder's state once nobody waits on it (called with the lock held)."""
        idle = not state.waiting and not state.busy and state.synced == state.issued
        if idle and self._rounds.get(key) is state:
            del self._rounds[key]


def _fsync_path(path: Path, flags: int = os.O_DIRECTORY) -> None:
    """fsync the folder (or, with *flags* 0, the file) *path*."""
    fd = os.open(path, os.O_RDONLY | flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_FOLDERS = _FolderSync()


def sync_folder(folder: Path) -> None:
    """fsync *folder* (its new and renamed entries), once for all threads asking at once."""
    _FOLDERS.sync(folder)


def _through(path: Path) -> Path | None:
    """*path* followed through symlinks if it exists and is not a regular file, else None."""
    try:
        status = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return None if stat.S_ISREG(status.st_mode) else path


@contextmanager
def _written_through(path: Path) -> Iterator[int]:
    """A descriptor on an existing non-regular file (a device, a FIFO), written in place."""
    fd = os.open(path, os.O_WRONLY | os.O_NOCTTY)
    try:
        yield fd
    finally:
        os.close(fd)


@contextmanager
def atomic_output(path: Path, mode: int = FILE_MODE, *, sync: bool = True) -> Iterator[int]:
    """Yield a descriptor on a temporary file that becomes *path* only on success.

    On any error the temporary file is removed: *path* is either absent, its
    old content, or the complete new content, never a partial file. The file
    gets *mode* (0600 unless told otherwise), missing folders 0700. With *sync*
    the content and the rename are on disk when the block ends. *path* ``-``
    is standard output; an existing *path* that is not a regular file is
    written through, not replaced.
    """
    if str(path) == "-":
        sys.stdout.flush()
        yield sys.stdout.fileno()
        return
    if _through(path) is not None:
        with _written_through(path) as fd:
            yield fd
        return
    path = Path(os.path.realpath(path)) if path.is_symlink() else path
    created = private_folders(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        os.fchmod(fd, mode)
        yield fd
        if sync:
            os.fsync(fd)
        os.close(fd)
        fd = -1
        os.replace(tmp, path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        with suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if sync:
        _sync_folders(created, path)


def create_private(path: Path) -> int | None:
    """A descriptor on *path*, created new, empty and private (0600); None when it exists.

    For a file that must never be replaced once made (a key, a database): the
    caller makes the folder (:func:`private_folders`) and writes the content.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        return None
    try:
        os.fchmod(fd, FILE_MODE)  # os.open's mode went through the umask
    except BaseException:
        os.close(fd)
        raise
    return fd


@contextmanager
def output_file(
    path: Path,
    mode: int = FILE_MODE,
    *,
    sync: bool = True,
    what: str = "cannot write",
    hint: str = "",
) -> Iterator[int]:
    """:func:`atomic_output` for an output the user asked for: a failure is an OutputError.

    Its message names *path*, *what* failed and why (``out.csv: cannot write
    (No space left on device)``), then *hint*.
    """
    with (
        map_errors({OSError: OutputError}, f"{path}: {what}", hint=hint, chain=True),
        atomic_output(path, mode, sync=sync) as fd,
    ):
        yield fd


def _sync_folders(created: list[Path], path: Path) -> None:
    """fsync the folders that now hold new entries: those *created* and *path*'s own."""
    for folder in [*(f.parent for f in created), path.parent]:
        sync_folder(folder)


def temporary_file(folder: Path, name: str) -> tuple[int, Path]:
    """A new empty private (0600) file in *folder* (made 0700 if missing): its descriptor, path.

    It is named as :func:`atomic_output` names its temporary files
    (``.NAME.XXXXXXXX.part``), so that one a killed process left is removed at
    the next start (:func:`remove_stale_temporaries`). The caller removes it, or
    hands it to :func:`publish`.
    """
    private_folders(folder)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".part")
    try:
        os.fchmod(fd, FILE_MODE)
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    return fd, Path(tmp)


def publish(tmp: Path, path: Path, *, sync: bool = True) -> None:
    """Make the complete file *tmp* become *path*: renamed, so whole or not at all.

    The guarantees of :func:`atomic_output` without copying the content: with
    *sync* the content is fsynced before the rename and the folder after it;
    missing folders are made 0700; the file keeps its mode. An existing *path*
    that is not a regular file, or one on another file system, gets a copy
    (written through, or atomically). *tmp* is gone afterwards, also on error.
    """
    try:
        through = _through(path) is not None
        if not through:
            path = Path(os.path.realpath(path)) if path.is_symlink() else path
            created = private_folders(path.parent)
            if sync:
                _fsync_path(tmp, 0)
            try:
                os.replace(tmp, path)
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise
                through = True
            else:
                if sync:
                    _sync_folders(created, path)
        if through:
            with atomic_output(path, sync=sync) as fd:
                _copy_file(tmp, fd)
    finally:
        tmp.unlink(missing_ok=True)


def publish_copy(source: Path, path: Path, *, sync: bool = True) -> None:
    """Make *path* a whole copy of the complete file *source*, which stays where it is.

    A hard link where the file system allows (the file keeps its mode and no
    byte is copied), else a private copy; either way under a temporary name
    first (``.NAME.part``), renamed into place, so that *path* is whole or
    absent. With *sync* the rename and the folders made for it are on disk
    when this returns (*source* itself is expected to be, already).
    """
    created = private_folders(path.parent)
    temporary = path.with_name(f".{path.name}.part")
    try:
        os.link(source, temporary)
    except OSError:
        with atomic_output(temporary, sync=sync) as fd:
            _copy_file(source, fd)
    os.replace(temporary, path)
    if sync:
        _sync_folders(created, path)


def _copy_file(source: Path, fd: int) -> None:
    """Append the content of *source* to the descriptor *fd*."""
    with open(source, "rb") as handle:
        copy_descriptor(handle.fileno(), fd)


def copy_range(src: int, dst: int, offset: int, length: int) -> int:
    """Append *length* bytes of the file open as *src*, from *offset*, to *dst*.

    The kernel copies (``copy_file_range``) where it can, so the content never
    passes through Python; otherwise it goes in 1 MiB chunks. Returns the bytes
    copied: fewer than *length* when *src* ends first.
    """
    done = 0
    while done < length:
        try:
            copied = os.copy_file_range(src, dst, length - done, offset + done)
        except OSError:
            chunk = os.pread(src, min(length - done, 1 << 20), offset + done)
            copied = len(chunk)
            write_all(dst, chunk)
        if copied == 0:
            break
        done += copied
    return done


def copy_descriptor(src: int, dst: int) -> None:
    """Append everything in the file open as *src* (from its start) to *dst*."""
    copy_range(src, dst, 0, os.fstat(src).st_size)


def write_all(fd: int, data: bytes) -> None:
    """Write all of *data* to *fd* (``os.write`` may write less than asked)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Remove the temporary files a killed process left under *folder*; the paths removed.

    Only names :func:`atomic_output` gives (``.NAME.XXXXXXXX.part``) are
    touched, and only when no process is writing there (a run's start).
    """
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for path in folder.rglob(".*.part"):
        if path.is_file() and STALE_TEMPORARY.match(path.name):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed
