"""``coercion serve`` against hostile, broken and numerous peers (issue 12, section 3).

The node runs as a user starts it; the peers are raw sockets (:mod:`tests.pdu`),
pynetdicom and dcmtk's echoscu and storescu. Every case checks what the peer
gets (an A-ABORT, an A-ASSOCIATE-RJ, a closed connection) and that legitimate
clients keep being served meanwhile.
"""

from __future__ import annotations

import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from pydicom.uid import CTImageStorage, generate_uid
from pynetdicom import AE

from coercion.directory.config import load_configuration
from coercion.engine import ActionEnv
from coercion.errors import ConfigError
from coercion.net.limits import SETTINGS, NetworkLimits, from_settings
from tests.directories import Directory
from tests.helpers import (
    DCMTK_ENV,
    DEVICE,
    SECRET,
    Served,
    Start,
    config_dir,
    dcmtk,
    make_dataset,
    stored,
    tool,
    wait_until,
)
from tests.pdu import (
    A_ABORT,
    A_ASSOCIATE_AC,
    RawPeer,
    associate_rq,
    c_store_command,
    p_data,
    p_data_header,
)
from tests.slapd import TlsFiles, make_tls_files

pytestmark = pytest.mark.integration

RELEASE_RQ = b"\x05\x00\x00\x00\x00\x04" + bytes(4)


def limits_config(tmp_path: Path, **settings: int) -> Path:
    """The default configuration with these device settings (``coercion<Name>: value``)."""
    config = config_dir(tmp_path)
    path = config / "10-default-config.ldif"
    lines = "".join(f"\ncoercion{name}: {value}" for name, value in settings.items())
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace("coercionPollInterval: 2", "coercionPollInterval: 2" + lines))
    return config


def ct_files(folder: Path, count: int, prefix: str) -> Path:
    """*count* small CT objects with distinct SOP Instance UIDs in *folder*."""
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        ds = make_dataset()
        ds.SOPInstanceUID = generate_uid(entropy_srcs=[prefix, str(index)])
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.save_as(folder / f"{index:03d}.dcm", enforce_file_format=True)
    return folder


def echo(node: Served, *tls: object) -> subprocess.CompletedProcess[str]:
    """dcmtk's echoscu to the node (with *tls* options, if any)."""
    return dcmtk("echoscu", *tls, "-to", 10, "-aec", "COERCION", "127.0.0.1", node.port)


def peak_rss(node: Served) -> int:
    """The node process's peak resident memory (bytes), from /proc."""
    status = Path(f"/proc/{node.process.pid}/status").read_text(encoding="ascii")
    line = next(line for line in status.splitlines() if line.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


def associated(port: int, tls: ssl.SSLContext | None = None, abstract: str = "") -> RawPeer:
    """A raw peer with an association established (verification, or *abstract*)."""
    peer = RawPeer.connect(port, tls)
    peer.send(associate_rq(abstract=abstract) if abstract else associate_rq())
    assert peer.read_pdu(time.monotonic() + 10) == A_ASSOCIATE_AC
    return peer


@contextmanager
def peers(count: int, port: int, first: bytes = b"") -> Iterator[list[RawPeer]]:
    """*count* open connections that sent *first* and nothing more; closed afterwards."""
    opened = [RawPeer.connect(port) for _ in range(count)]
    try:
        for peer in opened:
            peer.send(first)
        yield opened
    finally:
        for peer in opened:
            peer.close()


def connect_and_close(count: int, port: int) -> None:
    """*count* bare TCP connections closed at once (a port scan, a health check)."""
    for _ in range(count):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()


def tls_client(files: TlsFiles) -> ssl.SSLContext:
    """A TLS client context trusting the node's CA."""
    context = ssl.create_default_context(cafile=str(files.ca_cert))
    context.check_hostname = False
    return context


# -- the settings -----------------------------------------------------------------------------


def add_to_device(directory: Directory, lines: str) -> None:
    """Add attribute lines to the node's device entry, on either backend."""
    if directory.slapd is not None:
        changes = "\n-\n".join(f"add: {line.split(':')[0]}\n{line}" for line in lines.splitlines())
        directory.slapd.ldapmodify(f"dn: {DEVICE}\nchangetype: modify\n{changes}\n")
    else:
        directory.replace(DEVICE, "coercionPollInterval", "2\n" + lines)


def test_limits_are_read_from_the_device_on_both_directories(directory: Directory) -> None:
    """Every limit set on the device entry (embedded and slapd) reaches NetworkLimits."""
    values = {attribute: 7 + n for n, attribute in enumerate(SETTINGS)}
    values["coercionMaxPDULength"] = 65536
    values["coercionMaxObjectSize"] = 1 << 33  # beyond 32 bits
    add_to_device(directory, "\n".join(f"{k}: {v}" for k, v in values.items()))
    source = directory.open()
    try:
        limits = from_settings(load_configuration(source, ActionEnv(SECRET)).device.settings)
    finally:
        source.close()
    assert limits == NetworkLimits(**{SETTINGS[k]: v for k, v in values.items()})
    assert from_settings({}) == NetworkLimits()  # the defaults when none is set


def test_a_limit_out_of_range_is_named_by_dn_and_attribute(directory: Directory) -> None:
    """coercionMaxPDULength 100 (below 4096): the load fails naming the device and attribute."""
    add_to_device(directory, "coercionMaxPDULength: 100")
    source = directory.open()
    try:
        with pytest.raises(ConfigError, match=r"coercionMaxPDULength"):
            load_configuration(source, ActionEnv(SECRET))
    finally:
        source.close()


# -- idle, half-open and closed connections ---------------------------------------------------


def test_half_sent_associate_requests_are_closed_and_lock_nobody_out(
    serve: Start, tmp_path: Path
) -> None:
    """33 half-sent A-ASSOCIATE-RQs: echoscu still succeeds; the node closes them at the timeout."""
    node = serve(limits_config(tmp_path, AssociationRequestTimeout=2))
    request = associate_rq()
    with peers(33, node.port, request[: len(request) // 2]) as half:
        started = time.monotonic()
        ok = echo(node)
        assert ok.returncode == 0, ok.stderr
        assert time.monotonic() - started < 5
        deadline = time.monotonic() + 10
        assert all(peer.read_until_closed(deadline) for peer in half)
        assert time.monotonic() - started < 10  # 2 s timeout, not the 30 s of the ACSE one
    assert echo(node).returncode == 0


def test_idle_sockets_and_port_scans_lock_nobody_out(serve: Start, tmp_path: Path) -> None:
    """40 idle sockets and 33 connect-and-close: echoscu and storescu are served at once."""
    node = serve()
    folder = ct_files(tmp_path / "in", 5, "idle")
    with peers(40, node.port):
        connect_and_close(33, node.port)
        started = time.monotonic()
        ok = echo(node)
        assert ok.returncode == 0, ok.stderr
        sent = dcmtk("storescu", "+sd", "-aec", "COERCION", "127.0.0.1", node.port, folder)
        assert sent.returncode == 0, sent.stderr
        assert time.monotonic() - started < 10
    assert len(stored(node.data)) == 5


def test_sigterm_is_not_held_up_by_idle_and_half_open_connections(serve: Start) -> None:
    """SIGTERM with 10 idle and 10 half-sent connections open: the node exits 0 within 5 s."""
    node = serve()
    request = associate_rq()
    with peers(10, node.port), peers(10, node.port, request[:50]):
        assert echo(node).returncode == 0
        started = time.monotonic()
        node.process.send_signal(signal.SIGTERM)
        assert node.process.wait(20) == 0
        assert time.monotonic() - started < 5


def test_thirty_two_concurrent_storescu_senders_are_all_accepted(
    serve: Start, tmp_path: Path
) -> None:
    """32 storescu at once, three times over, on the defaults: no association is refused."""
    node = serve()
    command = [tool("storescu"), "-aet", "CT01", "-aec", "COERCION", "127.0.0.1", str(node.port)]
    for attempt in range(3):
        files = sorted(ct_files(tmp_path / f"in{attempt}", 32, f"pass{attempt}").iterdir())
        senders = [
            subprocess.Popen(
                [*command, str(path)], env=DCMTK_ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
            for path in files
        ]
        failures = []
        for sender in senders:
            _out, err = sender.communicate(timeout=60)
            if sender.returncode != 0:
                failures.append(err.decode(errors="replace"))
        assert not failures, failures[0]
        assert len(stored(node.data)) == 32 * (attempt + 1)
    assert "refused" not in node.text()


def test_association_limits_refuse_with_local_limit_exceeded(serve: Start, tmp_path: Path) -> None:
    """Beyond the limits per address and in total: A-ASSOCIATE-RJ (transient, limit), logged."""
    node = serve(limits_config(tmp_path, MaxAssociations=3, MaxAssociationsPerHost=2))
    ae = AE(ae_title="CT01")
    ae.add_requested_context("1.2.840.10008.1.1")
    held = [ae.associate("127.0.0.1", node.port, ae_title="COERCION") for _ in range(2)]
    try:
        assert all(assoc.is_established for assoc in held)
        third = ae.associate("127.0.0.1", node.port, ae_title="COERCION")
        assert third.is_rejected
        answer: Any = third.acceptor.primitive
        assert (answer.result, answer.result_source, answer.diagnostic) == (2, 3, 2)  # limit
        other = ae.associate(
            "127.0.0.1", node.port, ae_title="COERCION", bind_address=("127.0.0.2", 0)
        )
        assert other.is_established  # another address: its own count
        held.append(other)
        fourth = ae.associate(
            "127.0.0.1", node.port, ae_title="COERCION", bind_address=("127.0.0.3", 0)
        )
        assert fourth.is_rejected  # three in total
    finally:
        for assoc in held:
            assoc.release()
    log = node.text()
    assert "refused: 2 associations running, 2 from that address" in log
    assert "(coercionMaxAssociationsPerHost)" in log
    assert "(coercionMaxAssociations)" in log
    ok = echo(node)
    assert ok.returncode == 0, ok.stderr  # the count follows the releases


# -- TLS -----------------------------------------------------------------------------------


def test_tls_idle_connection_and_partial_client_hello_block_no_tls_client(
    serve: Start, tmp_path: Path
) -> None:
    """An idle TCP connection and a 6-byte ClientHello: storescu over TLS is served at once."""
    files = make_tls_files(tmp_path / "tls")
    node = serve(
        limits_config(tmp_path, TLSHandshakeTimeout=2),
        "--tls-cert",
        str(files.server_cert),
        "--tls-key",
        str(files.server_key),
    )
    folder = ct_files(tmp_path / "in", 3, "tls")
    tls = ["+tla", "+cf", files.ca_cert]
    with peers(1, node.port), peers(1, node.port, b"\x16\x03\x01\x02\x00\x01") as partial:
        started = time.monotonic()
        sent = dcmtk("storescu", *tls, "+sd", "-aec", "COERCION", "127.0.0.1", node.port, folder)
        assert sent.returncode == 0, sent.stderr
        assert time.monotonic() - started < 5
        assert partial[0].read_until_closed(time.monotonic() + 10)
    assert len(stored(node.data)) == 3
    wait_until(
        lambda: node.text().count("TLS handshake from 127.0.0.1 refused") == 2,
        "two refused TLS handshakes in the log",
        detail=node.text,
    )


# -- broken and oversized PDUs ---------------------------------------------------------------


@pytest.mark.parametrize(
    "first",
    [p_data(bytes(8), 0x03), b"\x09\x00\x00\x00\x00\x10" + bytes(16), RELEASE_RQ],
    ids=["p-data", "unknown-type", "a-release-rq"],
)
def test_unexpected_first_pdu_is_aborted_promptly(serve: Start, first: bytes) -> None:
    """A first PDU that is no A-ASSOCIATE-RQ: A-ABORT (or close) within a second or two."""
    node = serve()
    peer = RawPeer.connect(node.port)
    peer.send(first)
    started = time.monotonic()
    assert peer.read_pdu(started + 3) == A_ABORT
    assert peer.read_until_closed(started + 3)
    assert time.monotonic() - started < 3
    peer.close()
    assert echo(node).returncode == 0
    assert "Traceback" not in node.text()


def test_garbage_command_set_is_aborted_without_a_traceback(serve: Start) -> None:
    """Garbage in a command PDV: the peer gets an A-ABORT; the node logs no traceback."""
    node = serve()
    peer = associated(node.port)
    peer.send(p_data(b"\xff" * 40, 0x03))
    started = time.monotonic()
    assert peer.read_pdu(started + 5) == A_ABORT
    assert peer.read_until_closed(started + 5)
    peer.close()
    assert echo(node).returncode == 0
    assert "Traceback" not in node.text()
    assert "invalid DIMSE message from 127.0.0.1 (" in node.text()


def test_pdu_announcing_four_gib_is_aborted_at_its_header(serve: Start) -> None:
    """A P-DATA-TF announcing 4 GiB: A-ABORT at once; the node's memory does not grow."""
    node = serve()
    before = peak_rss(node)
    peer = associated(node.port)
    peer.send(p_data_header(0xFFFFFFF0))
    streamed, chunk = 0, bytes(1 << 20)
    while streamed < 300 << 20 and peer.send(chunk):  # stops when the node has closed
        streamed += len(chunk)
        peer.poll(0)
        if peer.closed or peer.received:
            break
    assert peer.read_pdu(time.monotonic() + 5) == A_ABORT
    assert peer.read_until_closed(time.monotonic() + 5)
    peer.close()
    growth = peak_rss(node) - before
    print(f"streamed {streamed >> 20} MiB; node peak RSS {peak_rss(node) >> 20} MiB (+{growth})")
    assert growth < 32 << 20
    assert echo(node).returncode == 0


def test_endless_data_set_is_spooled_then_aborted_at_the_maximum_object_size(
    serve: Start, tmp_path: Path
) -> None:
    """A data set that never ends, in valid PDUs: memory stays bounded; aborted past the maximum."""
    node = serve(limits_config(tmp_path, MaxObjectSize=200 << 20))
    before = peak_rss(node)
    peer = associated(node.port, abstract=CTImageStorage)
    peer.send(p_data(c_store_command(generate_uid()), 0x03))
    streamed, fragment = 0, p_data(bytes((1 << 20) - 16), 0x00)
    while streamed < 300 << 20 and peer.send(fragment):
        streamed += len(fragment)
        peer.poll(0)
        if peer.closed or peer.received:
            break
    assert peer.read_pdu(time.monotonic() + 10) == A_ABORT
    peer.close()
    growth = peak_rss(node) - before
    print(f"streamed {streamed >> 20} MiB; node peak RSS {peak_rss(node) >> 20} MiB (+{growth})")
    assert 200 << 20 <= streamed < 300 << 20
    assert growth < 64 << 20  # spooled to disk past 16 MiB
    assert "longer than 209715200 bytes (coercionMaxObjectSize)" in node.text()
    assert echo(node).returncode == 0
    assert stored(node.data) == []


def test_slow_peer_is_aborted_at_the_network_timeout(serve: Start, tmp_path: Path) -> None:
    """A peer that sends a PDU a byte at a time is aborted when no whole PDU came for 2 s."""
    node = serve(limits_config(tmp_path, NetworkTimeout=2))
    peer = associated(node.port)
    started = time.monotonic()
    for byte in p_data(bytes(4096), 0x00):
        if not peer.send(bytes([byte])):
            break
        peer.poll(0.2)  # paces the bytes; returns early when the node answers
        if peer.closed or peer.received:
            break
    assert peer.read_pdu(time.monotonic() + 5) == A_ABORT
    peer.close()
    assert 1.5 < time.monotonic() - started < 6


# -- the flood -------------------------------------------------------------------------------


@pytest.mark.parametrize("use_tls", [False, True], ids=["tcp", "tls"])
def test_flood_of_idle_half_open_and_slow_peers_while_storescu_stores(
    serve: Start, tmp_path: Path, use_tls: bool
) -> None:
    """40 idle, 33 half-sent RQs, 33 connect-and-close, a slow TLS client: all 20 objects stored."""
    files = make_tls_files(tmp_path / "tls")
    tls_args = ["--tls-cert", str(files.server_cert), "--tls-key", str(files.server_key)]
    node = serve(config_dir(tmp_path), *(tls_args if use_tls else []))
    client_tls = tls_client(files) if use_tls else None
    folder = ct_files(tmp_path / "in", 20, "flood")
    options = ["+tla", "+cf", str(files.ca_cert)] if use_tls else []
    command = [tool("storescu"), *options, "+sd", "-aec", "COERCION", "127.0.0.1"]
    sender = subprocess.Popen(
        [*command, str(node.port), str(folder)],
        env=DCMTK_ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    request = associate_rq()
    started = time.monotonic()
    half = [RawPeer.connect(node.port, client_tls) for _ in range(33)]
    try:
        for peer in half:
            peer.send(request[:100])
        with peers(40, node.port), peers(1, node.port, b"\x16\x03\x01") as slow:
            connect_and_close(33, node.port)
            _out, err = sender.communicate(timeout=60)
            assert sender.returncode == 0, err.decode(errors="replace")
            slow[0].send(b"\x02")
    finally:
        for peer in half:
            peer.close()
        if sender.poll() is None:
            sender.kill()
    elapsed = time.monotonic() - started
    print(f"flood ({'tls' if use_tls else 'tcp'}): 20 objects stored in {elapsed:.1f} s")
    assert len(stored(node.data)) == 20
    assert elapsed < 10
