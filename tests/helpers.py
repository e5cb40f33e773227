"""Synthetic test data and the helpers the test modules share.

Besides data: tag-script actions (``script_action``), running the command
line (``coercion`` in a subprocess, ``coercion_in_process`` in this one),
waiting on a condition (``wait_until``; tests never sleep a fixed time to wait
for something), a free port, and what the network tests need to drive
``coercion serve`` (dcmtk's clients, a configuration folder, a storage SCP
standing in for a destination, an MPPS reporter).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, evt

from coercion.cli.main import main
from coercion.dicom.part10 import read_bytes
from coercion.engine import ActionEnv, build_action
from coercion.resources import default_ldif_dir
from coercion.script import parse_script
from coercion.script.action import ScriptAction

SECRET = bytes(range(32))
#: Modality Performed Procedure Step, the SOP class of N-CREATE and N-SET.
MPPS_CLASS = "1.2.840.10008.3.1.2.3.3"
#: dcmtk keeps Nagle's algorithm on unless told (about 40 ms per DIMSE exchange).
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}
BASE = "dc=coercion,dc=local"
DEVICE = f"dicomDeviceName=coercion,cn=Devices,cn=DICOM Configuration,{BASE}"


def make_dataset(patient: str = "DOE^JANE^Q", patient_id: str = "PID-4711") -> Dataset:
    """A small synthetic CT object with identifying values at the top level."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = "1.2.826.0.1.3680043.99.1.1.1"
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.99.1.2"
    ds.SeriesInstanceUID = "1.2.826.0.1.3680043.99.1.3"
    ds.FrameOfReferenceUID = "1.2.826.0.1.3680043.99.1.4"
    ds.PatientName = patient
    ds.PatientID = patient_id
    ds.PatientBirthDate = "19700213"
    ds.PatientSex = "F"
    ds.AccessionNumber = "ACC-0815"
    ds.StudyDate = "20240301"
    ds.StudyTime = "101500"
    ds.SeriesDate = "20240301"
    ds.AcquisitionDateTime = "20240301102000.000000"
    ds.Modality = "CT"
    ds.InstitutionName = "Saint Example Hospital"
    ds.StudyDescription = f"CT head for {patient.split('^', 1)[0]}"
    ds.Rows = 2
    ds.Columns = 2
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = b"\x01\x00\x02\x00\x03\x00\x04\x00"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def as_read(ds: Dataset) -> FileDataset:
    """*ds* as the lean reader reads it from a file (raw elements)."""
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return read_bytes(buffer.getvalue(), "test")


#: The action environments ``script_action`` opened; tests/conftest.py closes them after each test.
OPEN_ENVS: list[ActionEnv] = []


def script_action(body: dict[str, Any], store: str | Path, **params: str) -> ScriptAction:
    """The action ``script:s`` of the tag script *body*, with *params*.

    *store* is the pseudonym store's URL, or a folder to keep a SQLite store in.
    """
    url = f"sqlite:///{store / 's.db'}" if isinstance(store, Path) else store
    env = ActionEnv(SECRET, store_url=url, scripts={"s": parse_script("s", body)})
    OPEN_ENVS.append(env)
    action = build_action("script:s", params, env)
    assert isinstance(action, ScriptAction)
    return action


def coercion_command(*args: object) -> list[str]:
    """The command line of ``python -m coercion ARGS``, for a process run in the background."""
    return [sys.executable, "-m", "coercion", *map(str, args)]


def coercion(
    *args: object,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    input: str | None = None,
    check: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m coercion ARGS`` as a user would, with a wide terminal (tables not cut).

    *env* adds to (or overrides) our environment; *input* is its stdin. With
    *check* a non-zero exit status fails the test, with the command's stderr.
    """
    result = subprocess.run(
        coercion_command(*args),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "COLUMNS": "250", **(env or {})},
        cwd=cwd,
        input=input,
    )
    assert not check or result.returncode == 0, result.stderr
    return result


def coercion_in_process(*args: object, check: bool = False) -> subprocess.CompletedProcess[str]:
    """Run ``coercion ARGS`` through ``main()`` in this process, its stdout and stderr captured.

    For tests that monkeypatch the process or run the command many times (a
    subprocess costs a second of imports). The exit status is click's, as in a
    subprocess; with *check* a non-zero one fails the test, with stderr.
    """
    out, err = io.StringIO(), io.StringIO()
    status = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main([*map(str, args)])
        except SystemExit as exc:
            status = 0 if exc.code is None else exc.code if isinstance(exc.code, int) else 1
    assert not check or status == 0, err.getvalue()
    command = ["coercion", *map(str, args)]
    return subprocess.CompletedProcess(command, status, out.getvalue(), err.getvalue())


Result = TypeVar("Result")


class WaitTimeoutError(AssertionError):
    """A condition ``wait_until`` waited for did not hold in time."""


def wait_until(
    condition: Callable[[], Result],
    what: str,
    timeout: float = 30.0,
    detail: Callable[[], str] | None = None,
    interval: float = 0.01,
) -> Result:
    """Poll *condition* until it returns a true value, and return that value.

    After *timeout* seconds the test fails (WaitTimeoutError) naming *what* was
    awaited, followed by ``detail()`` (a server's log, say) when given. An
    exception from *condition* ends the wait at once.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            message = f"waited {timeout} s for {what}"
            raise WaitTimeoutError(f"{message}\n{detail()}" if detail is not None else message)
        time.sleep(interval)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# -- the node and its peers, for the network tests ------------------------------------------


def config_dir(tmp_path: Path, extra: str = "", restrict: bool = False) -> Path:
    """A copy of the default configuration folder, with *extra* LDIF entries in 20-extra.ldif."""
    folder = tmp_path / "config"
    shutil.copytree(default_ldif_dir(), folder)
    if restrict:
        path = folder / "10-default-config.ldif"
        text = path.read_text(encoding="utf-8")
        path.write_text(
            text.replace(
                "coercionRestrictCallingAETitles: FALSE", "coercionRestrictCallingAETitles: TRUE"
            ),
            encoding="utf-8",
        )
    if extra:
        (folder / "20-extra.ldif").write_text(extra, encoding="utf-8")
    return folder


def forward_rule(destination: str, name: str = "forward-all", ae_title: str = "COERCION") -> str:
    """LDIF of a forward rule sending everything *ae_title* stores to *destination*."""
    return f"""
dn: cn={name},dicomAETitle={ae_title},{DEVICE}
objectClass: coercionForwardRule
cn: {name}
coercionDestinationAETitle: {destination}
"""


def deidentify_outgoing(destination: str = "ARCHIVE") -> str:
    """LDIF of a rule de-identifying (RetainUIDsOption) what is sent to *destination*."""
    return f"""
dn: cn=deidentify-to-{destination.lower()},{DEVICE}
objectClass: coercionRule
cn: deidentify-to-{destination.lower()}
coercionDIMSE: C_STORE_RQ
dicomTransferRole: SCU
coercionCondition: ReceivingApplicationEntityTitle={destination}
coercionURI: deidentify:RetainUIDsOption
"""


def remote_device(name: str, ae_title: str, port: int) -> str:
    """LDIF of a known remote device with one AE title listening on 127.0.0.1:*port*."""
    dn = f"dicomDeviceName={name},cn=Devices,cn=DICOM Configuration,{BASE}"
    return f"""dn: {dn}
objectClass: dicomDevice
dicomDeviceName: {name}
dicomInstalled: TRUE

dn: cn=dicom,{dn}
objectClass: dicomNetworkConnection
cn: dicom
dicomHostname: 127.0.0.1
dicomPort: {port}

dn: dicomAETitle={ae_title},{dn}
objectClass: dicomNetworkAE
dicomAETitle: {ae_title}
dicomNetworkConnectionReference: cn=dicom,{dn}
dicomAssociationInitiator: FALSE
dicomAssociationAcceptor: TRUE
"""


@dataclass
class Served:
    """A running ``coercion serve`` subprocess; *log* holds its stdout and stderr."""

    process: subprocess.Popen[bytes]
    port: int
    data: Path
    log: Path

    def text(self) -> str:
        """Everything the node has written so far."""
        return self.log.read_text(encoding="utf-8", errors="replace")


#: The ``serve`` fixture: ``start(config_dir=None, *extra_args) -> Served``.
Start = Callable[..., Served]


def start_node(tmp_path: Path, number: int, config: Path | None, *extra: str) -> Served:
    """Start ``coercion -vv serve`` (port 0, data in tmp_path/dataN); wait until it listens.

    It runs in *tmp_path*, so a relative default (such as the device's data
    folder ``.coercion/data``) never lands in the checkout.
    """
    data = tmp_path / f"data{number}"
    log = tmp_path / f"serve{number}.log"
    args = ["-vv", "serve", "--port", "0", "--data", data, "--key", tmp_path / "secret.key"]
    args += [*extra]
    if config is not None:
        args += ["--config-dir", config, "--poll-interval", "0.2"]
    with open(log, "wb") as out:
        process = subprocess.Popen(
            coercion_command(*args),
            stdout=out,
            stderr=subprocess.STDOUT,
            env=DCMTK_ENV,
            cwd=tmp_path,
        )

    def listening() -> re.Match[str] | None:
        if process.poll() is not None:
            raise AssertionError(f"coercion serve exited:\n{log.read_text()}")
        # The command's own line, printed once every worker serves (not a worker's log line).
        text = log.read_text(errors="replace")
        return re.search(r"^coercion node .* listening on [\d.]+:(\d+)", text, re.MULTILINE)

    try:
        found = wait_until(listening, "coercion serve to listen", timeout=30, detail=log.read_text)
    except WaitTimeoutError:
        process.kill()
        process.wait()
        raise
    assert found is not None  # wait_until returns a true value
    return Served(process, int(found[1]), data, log)


def tool(name: str) -> str:
    """The path of dcmtk's *name*: the first one on PATH that is a binary.

    pynetdicom installs Python scripts of the same names (storescu, findscu,
    echoscu) into the virtual environment; they are not what is tested here.
    """
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        candidate = Path(folder) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            with open(candidate, "rb") as handle:
                if handle.read(4) == b"\x7fELF":
                    return str(candidate)
    raise AssertionError(f"dcmtk's {name} is not installed (tools/install-system-packages.sh)")


def dcmtk(name: str, *args: object) -> subprocess.CompletedProcess[str]:
    """Run dcmtk's *name* with TCP_NODELAY=1; its output captured."""
    return subprocess.run(
        [tool(name), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        env=DCMTK_ENV,
        check=False,
    )


def storescu(port: int, *paths: object, called: str = "COERCION") -> None:
    """dcmtk's storescu sends *paths* (folders scanned) from CT01 to *called*; it must succeed."""
    sent = dcmtk("storescu", "+sd", "-aet", "CT01", "-aec", called, "127.0.0.1", port, *paths)
    assert sent.returncode == 0, sent.stderr


def storescu_tls(
    port: int, source: Path, key: Path, cert: Path, trusted: Path
) -> subprocess.CompletedProcess[str]:
    """dcmtk's storescu sends *source* from CT01 to COERCION over TLS, presenting *cert*
    (its *key*) and trusting the CA certificate *trusted*."""
    return dcmtk(
        "storescu", "+tls", key, cert, "+cf", trusted,
        "-aet", "CT01", "-aec", "COERCION", "127.0.0.1", port, source,
    )  # fmt: skip


def tls_options(cert: Path, key: Path, ca: Path) -> tuple[str, ...]:
    """``serve``'s options for a TLS listener with *cert* and *key* whose clients (and the
    peers it calls) must have certificates from the CA *ca*."""
    return ("--tls-cert", str(cert), "--tls-key", str(key), "--tls-ca", str(ca))


def with_tls(ldif: str, port: int) -> str:
    """*ldif* with a TLS cipher suite on the connection listening on *port* (a TLS peer)."""
    return ldif.replace(
        f"dicomPort: {port}\n", f"dicomPort: {port}\ndicomTLSCipherSuite: TLS_AES_128_GCM_SHA256\n"
    )


def storescu_at_once(port: int, called: str, sends: list[list[Path]], *options: str) -> None:
    """One dcmtk storescu from CT01 per entry of *sends* (its files or folders, with *options*
    such as ``+sd``), all started at once; each must succeed."""
    command = [tool("storescu"), *options, "-aet", "CT01", "-aec", called, "127.0.0.1", str(port)]
    senders = [
        subprocess.Popen(
            [*command, *map(str, paths)],
            env=DCMTK_ENV,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for paths in sends
    ]
    try:
        for sender in senders:
            _out, err = sender.communicate(timeout=300)
            assert sender.returncode == 0, err.decode()
    finally:
        for sender in senders:
            if sender.poll() is None:
                sender.kill()
            sender.communicate()


def stored(data: Path) -> list[Path]:
    """The objects a node with data folder *data* has stored, sorted by path."""
    return sorted((data / "objects").rglob("*.dcm")) if (data / "objects").exists() else []


def report_mpps(
    port: int, uid: str, calling: str = "CT01", complete: bool = True, **attributes: str
) -> None:
    """*calling* reports MPPS *uid* to the node's COERCION AE; every request must succeed.

    An N-CREATE (IN PROGRESS, with *attributes* by keyword), then with *complete*
    an N-SET (COMPLETED).
    """
    ae = AE(ae_title=calling)
    ae.add_requested_context(MPPS_CLASS)
    assoc = ae.associate("127.0.0.1", port, ae_title="COERCION")
    assert assoc.is_established
    try:
        create = Dataset()
        for keyword, value in attributes.items():
            setattr(create, keyword, value)
        create.PerformedProcedureStepStatus = "IN PROGRESS"
        assert assoc.send_n_create(create, MPPS_CLASS, uid)[0].Status == 0x0000
        if complete:
            done = Dataset()
            done.PerformedProcedureStepStatus = "COMPLETED"
            assert assoc.send_n_set(done, MPPS_CLASS, uid)[0].Status == 0x0000
    finally:
        assoc.release()


def receive_at_archive(
    port: int,
    expected: int,
    context: ssl.SSLContext | None = None,
    ae_title: str = "ARCHIVE",
    detail: Callable[[], str] | None = None,
) -> list[Dataset]:
    """Run a CT storage SCP *ae_title* until *expected* objects arrived (40 s at most).

    Fails naming the count, with ``detail()`` (the sending node's log, say), when fewer arrive.
    """
    received: list[Dataset] = []

    def on_store(event: Any) -> int:
        received.append(event.dataset)
        return 0x0000

    archive = AE(ae_title=ae_title)
    archive.add_supported_context("1.2.840.10008.5.1.4.1.1.2", ALL_TRANSFER_SYNTAXES)
    server: Any = archive.start_server(
        ("127.0.0.1", port),
        block=False,
        evt_handlers=[(evt.EVT_C_STORE, on_store)],
        ssl_context=context,
    )
    try:
        wait_until(
            lambda: len(received) >= expected,
            f"{expected} objects at {ae_title}",
            timeout=40,
            detail=lambda: f"{len(received)} arrived\n{detail() if detail else ''}",
        )
    finally:
        server.shutdown()
    return received
