"""Load test: concurrent storescu associations, de-identification, forwarding to a failing archive.

Not a timed benchmark: it checks that under load and a destination fault
nothing is lost or sent twice, and reports what happened. Per run (one run per
``--associations`` value, default 8 then 32):

* a fresh ``coercion -v serve`` (the shipped configuration, plus a known device
  ARCHIVE and a ``coercionForwardRule`` under the RESEARCH AE forwarding what it
  stores, plus ``coercionSyncWrites: FALSE`` with ``--no-sync``) with its own
  data folder under ``benchmarks/.work/load``;
* dcmtk's ``storescp +uf`` (unique file names: an object received twice is two
  files) as ARCHIVE;
* N concurrent ``storescu -v +sd -aec RESEARCH`` processes, each sending one
  N-th of the objects (default 5,000 small CT objects with made-up PHI, from
  ``bench_network.small_dataset``) over one association; the ``deidentify:``
  rule of the RESEARCH AE runs on each before it is stored;
* the fault: once a third of the objects are stored, ``storescp`` is killed
  (SIGKILL) and started again ``--outage`` seconds later on the same port and
  output folder; the node's forwarder has to retry and deliver everything.

Printed per run: objects sent (Success responses counted in the storescu logs, and the
storescu exit statuses), stored (files under DATA/objects), forwarded (distinct SOP
Instance UIDs storescp received), failed (objects in DATA/queue/ARCHIVE/failed plus
non-success storescu responses), duplicates (storescp files minus distinct UIDs), lost
(stored UIDs never received), identified (received objects whose Patient ID is still the
one sent), partial (storescp files that are not whole: cut by the kill), the time until
every storescu exited (with the files storescp had by then) and until the queue was
empty, the node's retry and set-aside log lines, and its peak RSS (VmHWM of
``/proc/PID/status``, read before it is stopped) and peak thread count, summed over the
node's processes (``coercion serve`` and its workers). A run that shows
loss, duplicates or failures is printed with MISS; the exit status is 1 only when a run
could not be carried out (a server does not start, a wait exceeds ``--limit``). Every
wait is bounded and no process is left running on any exit path.

Usage::

    python benchmarks/bench_load.py [--objects 5000] [--associations 8 32] [--no-sync]
        [--outage 5] [--limit 600] [--data DIR] [--work DIR] [--src DIR] [--dcmtk-bin DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from pydicom import dcmread, dcmwrite
from pydicom.dataset import Dataset

from bench_forward import DEVICE, extra_ldif
from bench_network import (
    BENCH_KEY_HEX,
    CALLING_AE,
    HOST,
    BenchError,
    Server,
    child_env,
    find_dcmtk,
    free_ports,
    small_dataset,
    stored_files,
)
from coercion.resources import default_ldif_dir

BENCH_DIR = Path(__file__).resolve().parent
SOURCE = BENCH_DIR.parent / "src"
CALLED_AE = "RESEARCH"
MARKER_NAME = ".load_data.json"
GENERATOR_VERSION = 1
POLL = 0.2
#: The forward rule of bench_forward.py sits under COERCION; here it is RESEARCH's.
RULE_FROM = (f"cn=forward-all,dicomAETitle=COERCION,{DEVICE}", "cn: forward-all")
RULE_TO = (f"cn=forward-research,dicomAETitle=RESEARCH,{DEVICE}", "cn: forward-research")
SYNC_ANCHOR = "coercionPollInterval: 2\n"
RESPONSE = re.compile(rb"Received Store Response \(([^)]*)\)")
RETRY = re.compile(r"forwarding to ARCHIVE failed")
SET_ASIDE = re.compile(r"forwarding to ARCHIVE: .* set aside")
NO_ANSWER = re.compile(r"no answer from ARCHIVE")
LOG_LEVEL = re.compile(r"\b(WARNING|ERROR|CRITICAL)\b")


# -- data ---------------------------------------------------------------------------------------


def ensure_objects(root: Path, count: int) -> Path:
    """Write *count* small CT objects to ``root/all`` unless the marker says they are there."""
    folder = root / "all"
    marker = root / MARKER_NAME
    wanted = {"generator_version": GENERATOR_VERSION, "objects": count}
    try:
        if json.loads(marker.read_text()) == wanted:
            return folder
    except (OSError, ValueError):
        pass
    marker.unlink(missing_ok=True)
    shutil.rmtree(root, ignore_errors=True)
    folder.mkdir(parents=True)
    for index in range(count):
        dcmwrite(
            folder / f"IM{index:06d}.dcm", small_dataset(index, count), enforce_file_format=True
        )
    marker.write_text(json.dumps(wanted) + "\n")
    print(f"data: wrote {count} objects to {folder}")
    return folder


def split(source: Path, shares: int) -> list[Path]:
    """Hard-link the files of *source* round-robin into *shares* folders; return them."""
    root = source.parent / f"split-{shares}"
    shutil.rmtree(root, ignore_errors=True)
    folders = [root / f"{share:02d}" for share in range(shares)]
    for folder in folders:
        folder.mkdir(parents=True)
    for index, file in enumerate(sorted(source.iterdir())):
        os.link(file, folders[index % shares] / file.name)
    return folders


# -- configuration ------------------------------------------------------------------------------


def write_config(config: Path, port: int, sync: bool) -> None:
    """The shipped LDIF folder plus ARCHIVE at 127.0.0.1:*port*, RESEARCH's forward rule."""
    shutil.copytree(default_ldif_dir(), config)
    extra = extra_ldif(port)
    for old, new in zip(RULE_FROM, RULE_TO, strict=True):
        if old not in extra:
            raise BenchError(f"bench_forward.extra_ldif: no {old!r}; update bench_load.py")
        extra = extra.replace(old, new)
    (config / "20-extra.ldif").write_text(extra, encoding="utf-8")
    if not sync:
        default = config / "10-default-config.ldif"
        text = default.read_text(encoding="utf-8")
        if text.count(SYNC_ANCHOR) != 1:
            raise BenchError(f"{default}: no {SYNC_ANCHOR.strip()!r} line to add the setting to")
        default.write_text(text.replace(SYNC_ANCHOR, SYNC_ANCHOR + "coercionSyncWrites: FALSE\n"))


# -- one run ------------------------------------------------------------------------------------


@dataclass
class Senders:
    """The storescu processes of a run and their logs."""

    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)

    def running(self) -> bool:
        """Whether any storescu is still running."""
        return any(p.poll() is None for p in self.processes)

    def stop(self) -> None:
        """Kill the storescu processes still running."""
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait()

    def responses(self) -> tuple[int, int]:
        """Success and other C-STORE responses, counted in the logs."""
        success = other = 0
        for log in self.logs:
            for status in RESPONSE.findall(log.read_bytes()):
                if status == b"Success":
                    success += 1
                else:
                    other += 1
        return success, other


@dataclass
class Outcome:
    """What one run measured."""

    associations: int
    sent: int = 0
    refused: int = 0
    exits: list[int] = field(default_factory=list)
    stored: int = 0
    received: int = 0
    forwarded: int = 0
    partial: int = 0
    failed: int = 0
    lost: int = 0
    identified: int = 0
    store_seconds: float = 0.0
    #: Files storescp had received when every storescu had exited.
    early: int = 0
    drain_seconds: float = 0.0
    killed_at: int = 0
    outage: float = 0.0
    retries: int = 0
    set_aside: int = 0
    no_answer: int = 0
    log_problems: int = 0
    peak_rss_kb: int = 0
    peak_threads: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def duplicates(self) -> int:
        """Whole storescp files beyond one per distinct SOP Instance UID."""
        return self.received - self.partial - self.forwarded

    @property
    def clean(self) -> bool:
        """No loss, no duplicate, no failure, every association sent all its objects."""
        problems = self.refused + self.failed + self.lost + self.duplicates + self.identified
        return not problems and not any(self.exits)


def proc_status(pid: int) -> dict[str, str]:
    """The fields of ``/proc/PID/status`` (empty when the process is gone)."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return {}
    return dict(line.split(":", 1) for line in lines if ":" in line)


def kilobytes(value: str) -> int:
    """``'  123 kB'`` -> 123."""
    return int(value.split(maxsplit=1)[0]) if value.strip() else 0


def wait_for(
    what: str, condition: Callable[[], bool], args: argparse.Namespace, tick: Callable[[], None]
) -> None:
    """Call *tick* and poll *condition* every 0.2 s for up to ``--limit`` seconds, else fail."""
    deadline = time.monotonic() + args.limit
    while True:
        tick()
        if condition():
            return
        if time.monotonic() > deadline:
            raise BenchError(f"{what}: not within {args.limit:.0f} s")
        time.sleep(POLL)


def count_queue(queue: Path) -> int:
    """Objects waiting in the ARCHIVE queue."""
    return sum(1 for _ in queue.glob("*.dcm")) if queue.is_dir() else 0


def whole(path: Path) -> Dataset | None:
    """The object in *path* when it is whole, None when it is cut short or unreadable."""
    try:
        ds = dcmread(path)
        pixels = int(ds.Rows) * int(ds.Columns) * int(ds.BitsAllocated) // 8
        str(ds.SOPInstanceUID)  # read now: a cut file may fail here
    except Exception:  # a file cut by the kill: whatever pydicom makes of it
        return None
    return ds if len(ds.PixelData) == pixels else None


def tally(outcome: Outcome, data: Path, out: Path, patient_ids: set[str]) -> None:
    """Count stored, received, forwarded, partial, lost, identified and failed objects."""
    stored = stored_files(data / "objects")
    outcome.stored = len(stored)
    stored_uids = {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in stored}
    files = [p for p in out.iterdir() if p.is_file()]
    outcome.received = len(files)
    received: set[str] = set()
    for path in files:
        ds = whole(path)
        if ds is None:
            outcome.partial += 1
            continue
        received.add(str(ds.SOPInstanceUID))
        if str(ds.get("PatientID", "")) in patient_ids:
            outcome.identified += 1
    outcome.forwarded = len(received)
    outcome.lost = len(stored_uids - received)
    failed = data / "queue" / "ARCHIVE" / "failed"
    outcome.failed += sum(1 for _ in failed.glob("*.dcm")) if failed.is_dir() else 0


def read_log(outcome: Outcome, log: Path) -> None:
    """Count the node's retry, set-aside and no-answer lines and its warnings and errors."""
    text = log.read_text(errors="replace")
    outcome.retries = len(RETRY.findall(text))
    outcome.set_aside = len(SET_ASIDE.findall(text))
    outcome.no_answer = len(NO_ANSWER.findall(text))
    outcome.log_problems = sum(1 for line in text.splitlines() if LOG_LEVEL.search(line))


@dataclass
class Run:
    """The processes and folders of one run."""

    work: Path
    node: Server
    archive: Server
    senders: Senders = field(default_factory=Senders)

    @property
    def data(self) -> Path:
        """The node's data folder."""
        return self.work / "data"


def prepare(args: argparse.Namespace, shares: int) -> Run:
    """A fresh work folder (key, configuration) and the two servers, not started yet."""
    work: Path = args.work / f"n{shares}{'' if args.sync else '-nosync'}"
    shutil.rmtree(work, ignore_errors=True)
    (work / "logs").mkdir(parents=True)
    key = work / "bench.key"
    key.write_text(BENCH_KEY_HEX + "\n")
    key.chmod(0o600)
    node_port, archive_port = free_ports(2)
    write_config(work / "config", archive_port, args.sync)
    out = work / "storescp"
    storescp = [str(args.dcmtk / "storescp"), "-aet", "ARCHIVE", "+uf", "-od", str(out)]
    archive_log = work / "logs" / "storescp.log"
    archive = Server(
        "storescp", "ARCHIVE", [*storescp, str(archive_port)], out, archive_port, archive_log,
        args.dcmtk,
    )  # fmt: skip
    serve = [sys.executable, "-m", "coercion", "-v", "serve", "--host", HOST]
    serve += ["--port", str(node_port), "--data", str(work / "data"), "--key", str(key)]
    serve += ["--config-dir", str(work / "config")]
    node = Server(
        "coercion serve", CALLED_AE, serve, work / "data" / "objects", node_port,
        work / "logs" / "serve.log", args.dcmtk,
    )  # fmt: skip
    return Run(work, node, archive)


def start_senders(run: Run, folders: list[Path]) -> None:
    """One ``storescu -v +sd`` per folder, all at once, each logging to its own file."""
    for index, folder in enumerate(folders):
        log = run.work / "logs" / f"storescu-{index:02d}.log"
        argv = [str(run.node.dcmtk / "storescu"), "-v", "+sd", "-aec", CALLED_AE]
        argv += ["-aet", CALLING_AE, HOST, str(run.node.port), str(folder)]
        with log.open("wb") as handle:
            run.senders.processes.append(
                subprocess.Popen(argv, stdout=handle, stderr=subprocess.STDOUT, env=child_env())
            )
        run.senders.logs.append(log)


def drive(args: argparse.Namespace, run: Run, folders: list[Path], outcome: Outcome) -> None:
    """Send, kill storescp at a third stored, start it again, wait for storescu and the queue."""
    node, archive, senders = run.node, run.archive, run.senders
    assert node.process is not None
    pid = node.process.pid
    total = sum(len(list(f.iterdir())) for f in folders)
    begin = time.perf_counter()

    def sample() -> None:
        threads = sum(int(proc_status(p).get("Threads", "0")) for p in node_pids(pid))
        outcome.peak_threads = max(outcome.peak_threads, threads)
        if not outcome.store_seconds and not senders.running():
            outcome.store_seconds = time.perf_counter() - begin
            outcome.early = sum(1 for _ in archive.out.iterdir())

    start_senders(run, folders)
    third = total // 3

    def stored() -> int:
        return len(stored_files(node.out))

    wait_for("a third stored", lambda: stored() >= third or not senders.running(), args, sample)
    outcome.killed_at = stored()
    archive.signal(signal.SIGKILL)
    archive.stop()
    down = time.perf_counter()
    back = down + args.outage  # the outage itself: a fixed time, on purpose
    wait_for("the outage", lambda: time.perf_counter() >= back, args, sample)
    archive.start()
    outcome.outage = time.perf_counter() - down
    wait_for("every storescu exited", lambda: bool(outcome.store_seconds), args, sample)
    outcome.exits = [p.returncode for p in senders.processes]
    outcome.sent, outcome.refused = senders.responses()
    queue = run.data / "queue" / "ARCHIVE"
    wait_for("the queue drained", lambda: count_queue(queue) == 0, args, sample)
    outcome.drain_seconds = time.perf_counter() - begin
    outcome.peak_rss_kb = sum(kilobytes(proc_status(p).get("VmHWM", "")) for p in node_pids(pid))


def node_pids(pid: int) -> list[int]:
    """The node's processes: ``coercion serve`` (*pid*) and its workers."""
    children = Path(f"/proc/{pid}/task/{pid}/children")
    try:
        return [pid, *(int(child) for child in children.read_text().split())]
    except OSError:
        return [pid]


def one_run(args: argparse.Namespace, folders: list[Path], patient_ids: set[str]) -> Outcome:
    """Start the node and storescp, drive the run, stop everything, count what arrived where."""
    run = prepare(args, len(folders))
    outcome = Outcome(len(folders))
    with ExitStack() as stack:
        stack.callback(run.archive.stop)
        stack.callback(run.node.stop)
        stack.callback(run.senders.stop)
        run.archive.start()
        run.node.start()
        drive(args, run, folders, outcome)
    outcome.failed = outcome.refused
    tally(outcome, run.data, run.archive.out, patient_ids)
    read_log(outcome, run.node.log)
    return outcome


# -- report -------------------------------------------------------------------------------------


def report(outcome: Outcome, total: int) -> None:
    """Print one run's figures."""
    exits = sorted(set(outcome.exits))
    print(f"\n{outcome.associations} associations, {total} objects to {CALLED_AE}:")
    print(
        f"  sent       {outcome.sent:>6}  (Success responses; other responses: "
        f"{outcome.refused}; storescu exit statuses: {exits})"
    )
    print(f"  stored     {outcome.stored:>6}  (files under DATA/objects)")
    print(f"  forwarded  {outcome.forwarded:>6}  (distinct SOP Instance UIDs at storescp)")
    print(f"  failed     {outcome.failed:>6}  (queue/ARCHIVE/failed + storescu non-success)")
    print(f"  duplicates {outcome.duplicates:>6}  (whole storescp files minus distinct UIDs)")
    print(f"  lost       {outcome.lost:>6}  (stored UIDs storescp never received)")
    print(f"  identified {outcome.identified:>6}  (received with the Patient ID sent)")
    print(f"  partial    {outcome.partial:>6}  (storescp files cut short by the kill)")
    print(
        f"  storescp killed at {outcome.killed_at} stored, back after {outcome.outage:.1f} s; "
        f"node log: {outcome.retries} retries, {outcome.no_answer} no-answer, "
        f"{outcome.set_aside} set aside, {outcome.log_problems} WARNING/ERROR lines"
    )
    print(
        f"  all stored after {outcome.store_seconds:.1f} s "
        f"({total / outcome.store_seconds:.0f} obj/s; {outcome.early} forwarded by then), "
        f"queue drained after "
        f"{outcome.drain_seconds:.1f} s"
    )
    print(
        f"  node peak RSS {outcome.peak_rss_kb / 1024:.0f} MiB (VmHWM), "
        f"peak threads {outcome.peak_threads}"
    )
    for note in outcome.notes:
        print(f"  note: {note}")
    print(f"  nothing lost, duplicated or failed: {'PASS' if outcome.clean else 'MISS'}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--objects", type=int, default=5000, help="objects per run")
    parser.add_argument(
        "--associations", type=int, nargs="+", default=[8, 32], help="concurrent storescu per run"
    )
    parser.add_argument(
        "--no-sync", dest="sync", action="store_false", help="coercionSyncWrites: FALSE"
    )
    parser.add_argument("--outage", type=float, default=5.0, help="seconds storescp stays down")
    parser.add_argument("--limit", type=float, default=600.0, help="seconds any one wait may take")
    parser.add_argument("--data", type=Path, default=BENCH_DIR / ".data" / "load")
    parser.add_argument("--work", type=Path, default=BENCH_DIR / ".work" / "load")
    parser.add_argument("--src", type=Path, default=SOURCE, help="coercion source tree to run")
    parser.add_argument("--dcmtk-bin", type=Path, help="folder of dcmtk's tools (default: PATH)")
    args = parser.parse_args(argv)
    if args.objects < 3 or min(args.associations) < 1:
        parser.error("--objects must be at least 3 and --associations at least 1")
    return args


def run(args: argparse.Namespace) -> int:
    """Every run in turn; 1 when one could not be carried out."""
    args.src, args.work = args.src.resolve(), args.work.resolve()
    args.dcmtk = find_dcmtk(args.dcmtk_bin)
    os.environ["PYTHONPATH"] = str(args.src)  # child_env() copies it for the node
    source = ensure_objects(args.data.resolve() / str(args.objects), args.objects)
    patient_ids = {str(dcmread(p, stop_before_pixels=True).PatientID) for p in source.iterdir()}
    sync = "on" if args.sync else "off (coercionSyncWrites: FALSE)"
    print(f"load test: {args.objects} objects, node from {args.src}, sync writes {sync}")
    for shares in args.associations:
        outcome = one_run(args, split(source, shares), patient_ids)
        report(outcome, args.objects)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: the exit status is 1 when a run failed, 0 otherwise (MISS included)."""
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))
    try:
        return run(args)
    except BenchError as exc:
        print(f"FAILED: {exc}")
        return 1
    except KeyboardInterrupt:
        print("Aborted!")
        return 130


if __name__ == "__main__":
    sys.exit(main())
