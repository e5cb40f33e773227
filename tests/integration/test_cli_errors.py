"""The command line: one error line and an exit status instead of a traceback; safe output paths;
warnings and log lines as a user (and a log collector) needs them."""

from __future__ import annotations

import json
import os
import re
import socket
import stat
import subprocess
import threading
import warnings
from pathlib import Path

import pytest
from pydicom import dcmwrite
from pydicom.uid import UID

from tests.helpers import coercion, make_dataset
from tests.slapd import make_tls_files

pytestmark = pytest.mark.integration

FULL_URI = (
    "deidentify:RetainDeviceIdentityOption,RetainLongitudinalTemporalInformationModifiedDatesOption"
)


def assert_one_error_line(
    result: subprocess.CompletedProcess[str], status: int, *words: str
) -> None:
    """The command failed with *status* and one ``error:`` line naming *words*, no traceback."""
    assert result.returncode == status, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for word in words:
        assert word in lines[0]


def serve(tmp_path: Path, *args: object) -> subprocess.CompletedProcess[str]:
    """``coercion serve`` with a private key and data folder and *args*; it is expected to fail."""
    key = tmp_path / "secret.key"
    return coercion("serve", "--key", key, "--data", tmp_path / "data", *args, cwd=tmp_path)


# -- serve: mistakes a user makes ------------------------------------------------------------


def test_port_in_use_is_one_line(tmp_path: Path) -> None:
    """A port another program listens on: exit 2, the port named."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = serve(tmp_path, "--port", port)
    assert_one_error_line(result, 2, f"--port {port}", "in use")


def test_impossible_host_is_one_line(tmp_path: Path) -> None:
    """--host 256.0.0.1 is neither an address nor a host name: exit 2, --host named."""
    result = serve(tmp_path, "--host", "256.0.0.1", "--port", "0")
    assert_one_error_line(result, 2, "--host 256.0.0.1")


def test_unwritable_data_folder_is_one_line(tmp_path: Path) -> None:
    """--data under a regular file cannot be created: exit 7 (output error), --data named."""
    (tmp_path / "a-file").write_text("not a folder")
    key = tmp_path / "secret.key"
    result = coercion("serve", "--key", key, "--data", tmp_path / "a-file" / "data", "--port", "0")
    assert_one_error_line(result, 7, "--data", "Not a directory")


def test_tls_key_of_another_certificate_is_one_line(tmp_path: Path) -> None:
    """--tls-key that does not belong to --tls-cert: exit 2, both options named."""
    first = make_tls_files(tmp_path / "one")
    second = make_tls_files(tmp_path / "two")
    result = serve(
        tmp_path, "--port", "0", "--tls-cert", first.server_cert, "--tls-key", second.server_key
    )
    assert_one_error_line(result, 2, "--tls-cert", "--tls-key", "does not belong")


def test_garbage_tls_ca_is_one_line(tmp_path: Path) -> None:
    """A --tls-ca file with no certificate in it: exit 2, --tls-ca named."""
    garbage = tmp_path / "ca.pem"
    garbage.write_text("this is no certificate\n")
    result = serve(tmp_path, "--port", "0", "--tls-ca", garbage)
    assert_one_error_line(result, 2, f"--tls-ca {garbage}")


@pytest.mark.parametrize("url", ["htp:/x", "ldap://127.0.0.1:port", "ldap:///"])
def test_bad_ldap_url_is_one_line(tmp_path: Path, url: str) -> None:
    """An --ldap value that is not an LDAP URL: exit 2, the URL named, for serve and config."""
    assert_one_error_line(serve(tmp_path, "--port", "0", "--ldap", url), 2, f"--ldap {url}")
    assert_one_error_line(coercion("config", "show", "--ldap", url), 2, f"--ldap {url}")


def test_unreachable_store_is_one_line(tmp_path: Path) -> None:
    """A store nobody answers at: exit 6 (store error), the URL named without its password."""
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # bound, never listening: connections are refused
        url = f"postgresql+psycopg://coercion:QZXSECRETPW@127.0.0.1:{port}/coercion"
        result = coercion("store", "stats", "--store", url, "--key", tmp_path / "secret.key")
    assert_one_error_line(result, 6, f"127.0.0.1:{port}")
    assert "QZXSECRETPW" not in result.stderr


def test_key_file_others_can_read_is_refused(tmp_path: Path) -> None:
    """A key file with mode 0644 is refused like ssh refuses a private key: exit 2, the fix."""
    key = tmp_path / "secret.key"
    key.write_text(bytes(range(32)).hex() + "\n")
    key.chmod(0o644)
    source = tmp_path / "in"
    source.mkdir()
    dcmwrite(source / "a.dcm", make_dataset(), enforce_file_format=True)
    result = coercion("deidentify", "--key", key, source, tmp_path / "out")
    assert_one_error_line(result, 2, "permissions 0644", f"chmod 600 {key}")
    assert not (tmp_path / "out").exists()


# -- output paths: devices and FIFOs written through, - is stdout -------------------------------


def read_fifo(path: Path) -> tuple[threading.Thread, list[bytes]]:
    """A thread reading everything written into the FIFO *path*."""
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(path.read_bytes()), daemon=True)
    reader.start()
    return reader, received


def release_reader(path: Path, reader: threading.Thread) -> None:
    """End *reader* even if nothing was written into the FIFO (its open() blocks until then)."""
    reader.join(10)
    if reader.is_alive():
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
        reader.join(10)


def test_config_export_into_a_fifo_writes_through(tmp_path: Path) -> None:
    """config export --out FIFO: the LDIF goes into the FIFO, which stays a FIFO."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    reader, received = read_fifo(fifo)
    result = coercion("config", "export", "--out", fifo)
    release_reader(fifo, reader)
    assert result.returncode == 0, result.stderr
    assert stat.S_ISFIFO(fifo.lstat().st_mode)
    assert b"dn: " in received[0]


def test_outputs_through_a_symlink_to_dev_null_leave_it_a_device(tmp_path: Path) -> None:
    """--out and --key-file naming /dev/null (through a symlink) write to it, never replace it."""
    null = tmp_path / "null"
    null.symlink_to(os.devnull)
    exported = coercion("config", "export", "--out", null)
    assert exported.returncode == 0, exported.stderr
    source = tmp_path / "in"
    source.mkdir()
    dcmwrite(source / "a.dcm", make_dataset(), enforce_file_format=True)
    key = tmp_path / "secret.key"
    result = coercion("deidentify", "--key", key, "--key-file", null, source, tmp_path / "out")
    assert result.returncode == 0, result.stderr
    assert null.is_symlink()
    assert stat.S_ISCHR(os.stat(os.devnull).st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "null", "out", "secret.key"]


def test_dash_writes_to_stdout(tmp_path: Path) -> None:
    """--out - and --key-file - write to standard output and create no file named -."""
    exported = coercion("config", "export", "--out", "-", cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    assert exported.stdout.startswith(("#", "dn: "))
    source = tmp_path / "in"
    source.mkdir()
    dcmwrite(source / "a.dcm", make_dataset(), enforce_file_format=True)
    result = coercion(
        "deidentify", "--key", tmp_path / "k.key", "--key-file", "-", source, tmp_path / "out",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0].startswith("source,")
    assert not (tmp_path / "-").exists()


# -- config show when piped ---------------------------------------------------------------------


def test_config_show_piped_prints_full_values() -> None:
    """Piped on a narrow terminal setting, config show still prints every value in full."""
    result = coercion("config", "show", env={"COLUMNS": "60"})
    assert result.returncode == 0, result.stderr
    assert FULL_URI in result.stdout
    assert "deidentify-research-modality-worklist" in result.stdout
    assert "…" not in result.stdout


def test_config_show_json() -> None:
    """config show --format json gives every rule with its full values, in order."""
    result = coercion("config", "show", "--format", "json")
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["device"] == "coercion"
    assert [rule["priority"] for rule in shown["rules"]] == sorted(
        (rule["priority"] for rule in shown["rules"]), reverse=True
    )
    store = next(r for r in shown["rules"] if r["rule"] == "deidentify-research-store")
    assert store["uri"] == FULL_URI
    assert store["dimse"] == ["C_STORE_RQ"] and store["ae_title"] == "RESEARCH"


# -- warnings and log lines -----------------------------------------------------------------------


def marker_file(folder: Path) -> Path:
    """Two files whose Specific Character Set is a value pydicom quotes in a warning; the first."""
    ds = make_dataset()
    ds.SpecificCharacterSet = "ZQXMARKER"
    folder.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about the encoding while writing too
        dcmwrite(folder / "a.dcm", ds, enforce_file_format=True)
        ds.SOPInstanceUID = UID("1.2.826.0.1.3680043.99.13")
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        dcmwrite(folder / "b.dcm", ds, enforce_file_format=True)
    return folder / "a.dcm"


def test_pydicom_warnings_quoting_values_are_withheld(tmp_path: Path) -> None:
    """pydicom's warnings never print the value they quote, with -q, by default or with -vv."""
    source = marker_file(tmp_path / "in")
    key = tmp_path / "k.key"
    for flags in (["-q"], [], ["-vv"]):
        result = coercion(*flags, "explain", source, "--calling", "CT01", "--called", "RESEARCH")
        assert result.returncode == 0, result.stderr
        assert "ZQXMARKER" not in result.stderr + result.stdout
        assert ("withheld" in result.stderr) is (flags == ["-vv"]), result.stderr
    out = tmp_path / "out"
    result = coercion("-q", "deidentify", "--workers", "2", "--key", key, source.parent, out)
    assert result.returncode == 0, result.stderr
    assert len(list(out.glob("*.dcm"))) == 2  # through worker processes
    assert "ZQXMARKER" not in result.stderr
    assert "Warning" not in result.stderr


def test_log_lines_carry_a_timestamp(tmp_path: Path) -> None:
    """Every log line starts with its UTC time (ISO 8601, milliseconds)."""
    source = marker_file(tmp_path / "in")
    result = coercion("-v", "deidentify", "--key", tmp_path / "k.key", source, tmp_path / "out")
    assert result.returncode == 0, result.stderr
    logged = [line for line in result.stderr.splitlines() if " coercion." in line]
    assert logged, result.stderr
    stamp = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (DEBUG|INFO|WARNING|ERROR) ")
    assert all(stamp.match(line) for line in logged), logged
