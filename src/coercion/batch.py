"""De-identify folders: find DICOM files by content, mirror the tree, keep a key file.

:func:`plan` turns sources and a destination into tasks and refuses layouts
that could touch the sources. :func:`run` processes the tasks on a pool of
worker processes; each output is written atomically, so an interrupted run
leaves complete outputs only and ``resume`` picks up where it stopped.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import re
import signal
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydicom.dataset import Dataset

from coercion.dicom.elements import joined_text
from coercion.dicom.outputs import atomic_output, remove_stale_temporaries
from coercion.dicom.part10 import read_file, sniff
from coercion.directory import DEFAULT_DEVICE
from coercion.engine import (
    ActionEnv,
    Dimse,
    Engine,
    EventContext,
    Role,
    Rule,
    RuleSet,
    build_action,
)
from coercion.engine.pipeline import Coerced, apply_rules, prepare
from coercion.errors import (
    CoercionError,
    ConfigError,
    OutputError,
    RuleFailedError,
)
from coercion.locations import Location, exists, join, put, readable, walk
from coercion.profile import CompiledProfile, Deidentifier, Option, compile_profile
from coercion.profile.dicomdir import is_directory, write_directory_file
from coercion.profile.keys import DEFAULT_KEY_SCOPE, KeyScope, deidentify_scope
from coercion.profile.uids import UIDRemapper
from coercion.profile.verify import Retention

if TYPE_CHECKING:
    from coercion.directory.ldifio import Entry

__all__ = [
    "KEY_FILE_COLUMNS",
    "BatchSettings",
    "FileResult",
    "Results",
    "Summary",
    "Task",
    "Worker",
    "chunks",
    "plan",
    "run",
    "write_key_file",
]

log = logging.getLogger(__name__)

KEY_FILE_COLUMNS = (
    "source",
    "output",
    "original_patient_id",
    "new_patient_id",
    "original_patient_name",
    "new_patient_name",
    "original_study_instance_uid",
    "new_study_instance_uid",
    "original_series_instance_uid",
    "new_series_instance_uid",
    "original_sop_instance_uid",
    "new_sop_instance_uid",
)
#: The key file's attributes, original and new: PatientID, PatientName, StudyInstanceUID,
#: SeriesInstanceUID and SOPInstanceUID (tags: read once per object, before and after).
_KEY_TAGS = (0x00100020, 0x00100010, 0x0020000D, 0x0020000E, 0x00080018)
_SAFE_COMPONENT = re.compile(r"[^A-Za-z0-9._-]")
#: The status of a DICOMDIR set aside until the files it references are written.
DIRECTORY = "directory"
#: Where a DICOMDIR goes under ``--rename``: the root of the renamed tree, one for all.
DICOMDIR = "DICOMDIR"
_CHUNK_FILES = 32
_CHUNK_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class Task:
    """One source file (a path or a URL) and where its output goes (relative to the destination)."""

    source: Location
    relative: Path
    size: int


@dataclass(frozen=True)
class BatchSettings:
    """What every worker needs: the options, the secret and the output layout."""

    options: frozenset[Option]
    secret: bytes
    destination: Location
    rename: bool = False
    resume: bool = False
    verify: bool = True
    #: Run the objects through the rules of these directory entries instead of ``options``.
    directory: list[Entry] | None = None
    directory_origin: str = ""
    device: str = DEFAULT_DEVICE
    calling_ae: str = ""
    called_ae: str = ""
    #: Apply this one URI (with the directory's scopes) instead of the directory's rules.
    uri: str | None = None
    #: The key scope of ``options`` (``deidentify/<key_scope>``), as a rule's ``key=``.
    key_scope: str = DEFAULT_KEY_SCOPE
    #: The pseudonym store of every rule (a cluster's workers share one); "": the directory's.
    store_url: str = ""
    #: fsspec options (endpoint, credentials) for sources and destinations given as URLs.
    storage_options: dict[str, Any] = field(default_factory=dict)


@dataclass
class FileResult:
    """The outcome of one file; ``status`` is written, resumed, skipped or failed."""

    source: Location
    status: str
    output: Path | None = None
    reason: str = ""
    key_row: tuple[str, ...] | None = None
    counts: dict[str, int] = field(default_factory=dict)


@dataclass
class Summary:
    """Totals of a batch run."""

    results: list[FileResult] = field(default_factory=list)
    interrupted: bool = False

    def count(self, status: str) -> int:
        """How many files ended with *status*."""
        return sum(1 for r in self.results if r.status == status)

    @property
    def failed(self) -> list[FileResult]:
        """The files that could not be de-identified."""
        return [r for r in self.results if r.status == "failed"]


# -- planning --------------------------------------------------------------------


def _inside(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def _walk(root: Path) -> Iterator[tuple[Path, int]]:
    """The regular files under *root* and their sizes, symbolic links left out.

    A folder's files come first, by name, then its subfolders, by name; a
    folder that cannot be listed is passed over (as :func:`os.walk` does).
    The listing's own file types and sizes are used: no call per file.
    """
    try:
        with os.scandir(root) as listing:
            entries = sorted(listing, key=lambda entry: entry.name)
    except OSError:
        return
    folders = []
    for entry in entries:
        try:
            if entry.is_file(follow_symlinks=False):
                yield Path(entry.path), entry.stat(follow_symlinks=False).st_size
            elif entry.is_dir(follow_symlinks=False):
                folders.append(entry)
        except OSError:
            continue  # gone since it was listed
    for folder in folders:
        yield from _walk(Path(folder.path))


def _url_inside(child: str, parent: str) -> bool:
    child, parent = child.rstrip("/"), parent.rstrip("/")
    return child == parent or child.startswith(parent + "/")


def _plan_url(
    root: str, prefix: Path, destination: Location, options: dict[str, Any]
) -> list[Task]:
    """The tasks of the URL *root* (fsspec), refused when it overlaps *destination*."""
    if isinstance(destination, str) and (
        _url_inside(destination, root) or _url_inside(root, destination)
    ):
        raise ConfigError(
            f"{destination}: destination overlaps source {root}; choose a folder outside it"
        )
    return [
        Task(url, prefix / Path(*relative.parts), size)
        for url, relative, size in walk(root, options)
    ]


def plan(
    sources: Iterable[Location], destination: Location, options: dict[str, Any] | None = None
) -> list[Task]:
    """List the files under *sources*, each with its path relative to *destination*.

    One source folder is mirrored into *destination* itself; several sources
    are mirrored each under its own name. Raises :class:`ConfigError` when the
    destination lies inside a source (or a source inside the destination), or
    when a source is missing. Sources and destination may be fsspec URLs
    (*options* for their file system).
    """
    roots = [s if isinstance(s, str) else Path(s) for s in sources]
    dst = destination.resolve() if isinstance(destination, Path) else None
    names: set[str] = set()
    tasks: list[Task] = []
    for root in roots:
        if isinstance(root, str):
            name = root.rstrip("/").rpartition("/")[2]
            if len(roots) > 1:
                if name in names:
                    raise ConfigError(f"{root}: two sources are named {name!r}; rename one")
                names.add(name)
            prefix = Path() if len(roots) == 1 else Path(name)
            tasks.extend(_plan_url(root, prefix, destination, options or {}))
            continue
        if not root.exists():
            raise ConfigError(f"{root}: no such file or folder")
        resolved = root.resolve()
        if dst is not None and (_inside(dst, resolved) or _inside(resolved, dst)):
            raise ConfigError(
                f"{destination}: destination overlaps source {root}; choose a folder outside it"
            )
        prefix = Path() if len(roots) == 1 else Path(resolved.name)
        if len(roots) > 1:
            if resolved.name in names:
                raise ConfigError(f"{root}: two sources are named {resolved.name!r}; rename one")
            names.add(resolved.name)
        if root.is_file():
            tasks.append(Task(root, prefix / root.name, root.stat().st_size))
            continue
        for path, size in _walk(root):
            tasks.append(Task(path, prefix / path.relative_to(root), size))
    return tasks


def chunks(tasks: list[Task]) -> Iterator[list[Task]]:
    """*tasks* in runs of up to 32 files or 64 MiB: one unit of work for a process."""
    chunk: list[Task] = []
    size = 0
    for task in tasks:
        chunk.append(task)
        size += task.size
        if len(chunk) >= _CHUNK_FILES or size >= _CHUNK_BYTES:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


# -- the worker ----------------------------------------------------------------------


class Worker:
    """Per-process state: the compiled profile and the keyed de-identifier.

    :meth:`process` is the work on one file, the same in a local process pool
    and on a cluster's worker (:mod:`coercion.cluster`).
    """

    def __init__(self, settings: BatchSettings) -> None:
        self.settings = settings
        self.profile: CompiledProfile = compile_profile(settings.options)
        self.deidentifier = Deidentifier(
            self.profile, settings.secret, deidentify_scope(settings.key_scope)
        )
        self.engine: Engine | None = None
        if settings.directory is not None:
            from coercion.directory.config import build_configuration

            env = ActionEnv(settings.secret, store_override=settings.store_url)
            configuration = build_configuration(
                settings.directory, settings.directory_origin, env, settings.device
            )
            rules = configuration.rules
            if settings.uri is not None:
                rules = RuleSet([command_line_rule(settings.uri, env)])
            self.engine = Engine(rules)

    def _coerce(self, ds: Dataset) -> Coerced:
        """Apply the rules or the options; say what the de-identification keeps (to verify)."""
        if self.engine is None:
            record = self.deidentifier.apply(ds)
            return Coerced(ds, True, self.profile, counts=dict(record.counts))
        ctx = EventContext(
            Dimse.C_STORE_RQ,
            Role.SCP,
            self.settings.calling_ae,
            self.settings.called_ae,
            sop_class_uid=joined_text(ds, "SOPClassUID"),
        )
        return apply_rules(self.engine, ctx)(ds)

    def process(self, task: Task) -> FileResult:
        """De-identify one file (written, resumed, skipped or failed; never raises)."""
        try:
            with readable(task.source, self.settings.storage_options) as local:
                if sniff(local) is None:
                    return FileResult(task.source, "skipped", reason="not a DICOM file")
                return self._process(task, local)
        except RuleFailedError as exc:  # the file, the rule and the kind of failure: no value
            what = f"rule {exc.rule}: {exc.kind}" if exc.rule else str(exc)
            return FileResult(task.source, "failed", reason=f"{task.source}: {what}")
        except CoercionError as exc:
            return FileResult(task.source, "failed", reason=str(exc))
        except Exception as exc:  # any other failure names the file, never a value
            log.debug("unexpected error", exc_info=True)
            return FileResult(
                task.source, "failed", reason=f"{task.source}: {exc.__class__.__name__}"
            )

    def _process(self, task: Task, local: Path) -> FileResult:
        ds = read_file(local, name=str(task.source), sniffed=True)  # process() has sniffed it
        if is_directory(ds):
            # Its records copy the files it references: rebuilt once they are written.
            relative = Path(DICOMDIR) if self.settings.rename else task.relative
            return FileResult(task.source, DIRECTORY, relative)
        originals = [joined_text(ds, tag) for tag in _KEY_TAGS]
        prepared = prepare(
            ds, self._coerce, verify=self.settings.verify, name=str(task.source), source=local
        )
        ds, counts = prepared.dataset, prepared.coerced.counts
        relative = self._output_path(ds, task)
        output = join(self.settings.destination, relative)
        key_row = (
            str(task.source),
            str(relative),
            *(
                v
                for pair in zip(originals, (joined_text(ds, t) for t in _KEY_TAGS), strict=True)
                for v in pair
            ),
        )
        if self.settings.resume and exists(output, self.settings.storage_options):
            return FileResult(task.source, "resumed", relative, key_row=key_row)
        encoded = prepared.encode()  # whether or not a rule changed it
        prepared.verify(encoded)
        put(encoded, output, self.settings.storage_options)
        return FileResult(task.source, "written", relative, key_row=key_row, counts=counts)

    def _output_path(self, ds: Dataset, task: Task) -> Path:
        if not self.settings.rename:
            return task.relative
        parts = [
            joined_text(ds, k) or "UNKNOWN"
            for k in ("PatientID", "StudyInstanceUID", "SeriesInstanceUID")
        ]
        leaf = task.relative.name  # the source's own name
        name = (joined_text(ds, "SOPInstanceUID") or leaf) + ".dcm"
        return Path(*map(_path_component, [*parts, name]))


def command_line_rule(uri: str, env: ActionEnv) -> Rule:
    """A rule for *uri* on every object of a batch (C_STORE_RQ, SCP); ConfigError when bad."""
    try:
        action = build_action(uri, {}, env)
    except ValueError as exc:
        raise ConfigError(f"{uri}: {exc}") from None
    return Rule(
        name=uri,
        dn="(command line)",
        uri=uri,
        action=action,
        dimse=frozenset({Dimse.C_STORE_RQ}),
        role=Role.SCP,
    )


def _path_component(value: str) -> str:
    """*value* as one file name that stays where it is put.

    Anything but letters, digits, ``.``, ``_`` and ``-`` becomes ``_``, and so does a
    leading dot: ``..`` (a value received as Study UID, kept under RetainUIDsOption)
    must not climb out of DST, nor a name look like a hidden or temporary file.
    """
    safe = _SAFE_COMPONENT.sub("_", value)
    return "_" + safe[1:] if safe.startswith(".") else safe


_WORKER: Worker | None = None


def _init_worker(settings: BatchSettings) -> None:
    global _WORKER  # noqa: PLW0603 - one per worker process
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    _WORKER = Worker(settings)


def _run_chunk(chunk: list[Task]) -> list[FileResult]:
    assert _WORKER is not None
    return [_WORKER.process(task) for task in chunk]


# -- the run -------------------------------------------------------------------------


def remove_partial_outputs(destination: Location) -> None:
    """Remove the temporary files a killed run left (``.NAME.XXXX.part``, never renamed)."""
    if isinstance(destination, str):
        return  # an object store's upload is whole or absent
    for path in remove_stale_temporaries(destination):
        log.info("removed a partial output left by an interrupted run: %s", path)


class Results:
    """The results of a run as they come in, for the summary, the caller and the DICOMDIRs."""

    def __init__(self, on_result: Callable[[FileResult], None] | None = None) -> None:
        self.summary = Summary()
        self.directories: list[FileResult] = []
        self.on_result = on_result

    def note(self, result: FileResult) -> None:
        """Record *result* (a DICOMDIR is set aside until the files it references are written)."""
        if result.status == DIRECTORY:
            self.directories.append(result)
            return
        self.summary.results.append(result)  # recorded before anything else can interrupt
        _log_result(result)
        if self.on_result is not None:
            self.on_result(result)

    def finish(self, settings: BatchSettings) -> Summary:
        """Write the DICOMDIRs set aside and return the summary."""
        return _finish(self.summary, self.directories, settings, self.note)


def run(
    tasks: list[Task],
    settings: BatchSettings,
    workers: int = 0,
    on_result: Callable[[FileResult], None] | None = None,
) -> Summary:
    """Process *tasks*; call *on_result* for each file as it finishes.

    ``workers`` 0 means one process per core; 1 runs in this process. On
    Ctrl-C the files in flight are finished, the rest are left for
    ``resume``, and the summary is marked interrupted.
    """
    results = Results(on_result)
    summary, note = results.summary, results.note
    workers = workers or os.cpu_count() or 1
    if settings.resume:
        remove_partial_outputs(settings.destination)

    if workers == 1 or len(tasks) <= 1:
        worker = Worker(settings)
        try:
            for task in tasks:
                note(worker.process(task))
        except KeyboardInterrupt:
            summary.interrupted = True
        return results.finish(settings)
    # Imported here: one file, or one worker, needs no pool (and starts faster without).
    from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
    from multiprocessing import get_context

    executor = ProcessPoolExecutor(
        max_workers=workers,
        mp_context=get_context("fork"),
        initializer=_init_worker,
        initargs=(settings,),
    )
    submitted: list[Future[list[FileResult]]] = []
    recorded: dict[Future[list[FileResult]], int] = {}

    def drain(future: Future[list[FileResult]]) -> None:
        """Note the results of *future* not noted yet (an interrupt may come mid-way)."""
        results = future.result()
        while recorded.get(future, 0) < len(results):
            index = recorded.get(future, 0)
            recorded[future] = index + 1
            note(results[index])

    pending: set[Future[list[FileResult]]] = set()
    try:
        for chunk in chunks(tasks):
            future = executor.submit(_run_chunk, chunk)
            submitted.append(future)
            pending.add(future)
            if len(pending) >= workers * 4:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for finished in done:
                    drain(finished)
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for finished in done:
                drain(finished)
    except KeyboardInterrupt:
        summary.interrupted = True
        executor.shutdown(wait=True, cancel_futures=True)
        for future in submitted:
            if future.done() and not future.cancelled():
                drain(future)
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
    return results.finish(settings)


def _log_result(result: FileResult) -> None:
    if result.status == "failed":
        log.info("failed: %s", result.reason)
    elif result.status == "skipped":
        log.info("skipped %s: %s", result.source, result.reason)


def _finish(
    summary: Summary,
    directories: list[FileResult],
    settings: BatchSettings,
    note: Callable[[FileResult], None],
) -> Summary:
    """Write the DICOMDIRs set aside, now that the files they reference are done."""
    if summary.interrupted or not directories:
        return summary  # left for resume, with the files still to do; or none to write
    if isinstance(settings.destination, str) or any(isinstance(r.source, str) for r in directories):
        for result in directories:  # it references files by their paths on a local disk
            note(
                FileResult(
                    result.source,
                    "failed",
                    reason=f"{result.source}: a DICOMDIR is "
                    "rebuilt between local folders only; de-identify this file set locally",
                )
            )
        return summary
    destination = settings.destination
    assert isinstance(destination, Path)
    outputs = {
        r.source.resolve(): destination / r.output
        for r in summary.results
        if r.status in ("written", "resumed")
        and r.output is not None
        and isinstance(r.source, Path)
    }
    groups: dict[Path, list[FileResult]] = {}
    for result in directories:
        assert result.output is not None
        groups.setdefault(result.output, []).append(result)
    try:
        for relative, results in groups.items():
            sources = [r.source for r in results if isinstance(r.source, Path)]
            try:
                status = write_directory_file(
                    destination / relative,
                    sources,
                    outputs,
                    uid=_file_set_uid(settings),
                    resume=settings.resume,
                    retention=_directory_retention(settings),
                )
            except CoercionError as exc:
                for source in sources:
                    note(FileResult(source, "failed", reason=str(exc)))
                continue
            except Exception as exc:  # as for any file: named, never a value
                log.debug("unexpected error", exc_info=True)
                for source in sources:
                    note(FileResult(source, "failed", reason=f"{source}: {exc.__class__.__name__}"))
                continue
            for result in results:
                note(FileResult(result.source, status, relative, key_row=_directory_row(result)))
    except KeyboardInterrupt:
        summary.interrupted = True  # the DICOMDIRs not written are left for resume
    return summary


def _file_set_uid(settings: BatchSettings) -> Callable[[str], str]:
    """The new File-set UID of a source's: kept under RetainUIDsOption, else keyed as U."""
    if settings.directory is None and Option.RetainUIDsOption in settings.options:
        return str
    return UIDRemapper(KeyScope(settings.secret, deidentify_scope(settings.key_scope)).uid).remap


def _directory_retention(settings: BatchSettings) -> Retention | None:
    """What a DICOMDIR's records are verified against (the options); None: not verified.

    Under directory rules, what each rule keeps is known per object only: the
    records, made from outputs verified under their rules, are not checked again.
    """
    if not settings.verify or settings.directory is not None:
        return None
    return compile_profile(settings.options)


def _directory_row(result: FileResult) -> tuple[str, ...]:
    """The key file row of a DICOMDIR: its source and output, no patient of its own."""
    return (str(result.source), str(result.output), *[""] * (len(KEY_FILE_COLUMNS) - 2))


def write_key_file(path: Path, results: Iterable[FileResult]) -> int:
    """Write the key file (CSV, mode 0600, atomically); return the number of rows."""
    rows = sorted(r.key_row for r in results if r.key_row is not None)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(KEY_FILE_COLUMNS)
    writer.writerows(rows)
    try:
        with atomic_output(path, mode=0o600) as fd, open(fd, "wb", closefd=False) as handle:
            handle.write(buffer.getvalue().encode("utf-8"))
    except OSError as exc:
        raise OutputError(f"{path}: cannot write key file ({exc.strerror})") from exc
    return len(rows)
