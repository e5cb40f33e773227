"""The secret key file: created 0600 when absent, read back, rejected with its path when wrong."""

from __future__ import annotations

import hashlib
import hmac
import os
import stat
from pathlib import Path

import pytest

from coercion.errors import ConfigError
from coercion.profile import Deidentifier, compile_profile
from coercion.profile.keys import KeyScope, fingerprint, load_or_create_secret
from tests.helpers import make_dataset


def test_absent_key_is_created_with_mode_0600(tmp_path: Path) -> None:
    """A missing key file is created (with its folders) readable by the owner only."""
    path = tmp_path / "config" / "coercion" / "secret.key"
    secret = load_or_create_secret(path)
    assert path.is_file()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(secret) >= 16


def test_created_key_reads_back_the_same_secret(tmp_path: Path) -> None:
    """Loading the key file again gives the secret that was created."""
    path = tmp_path / "secret.key"
    first = load_or_create_secret(path)
    assert load_or_create_secret(path) == first
    assert bytes.fromhex(path.read_text().strip()) == first


def test_two_new_keys_differ(tmp_path: Path) -> None:
    """Each new key file holds a fresh random secret."""
    assert load_or_create_secret(tmp_path / "a.key") != load_or_create_secret(tmp_path / "b.key")


def test_existing_key_is_read_not_replaced(tmp_path: Path) -> None:
    """An existing valid key file is used as it is."""
    path = tmp_path / "secret.key"
    secret = bytes(range(32))
    path.write_text(secret.hex() + "\n")
    path.chmod(0o600)
    assert load_or_create_secret(path) == secret
    assert path.read_text() == secret.hex() + "\n"


@pytest.mark.parametrize(
    "content",
    ["not a key at all\n", "abcd\n", "0" * 31 + "\n", "zz" * 32 + "\n", ""],
    ids=["text", "too-short", "odd-digits", "not-hex", "empty"],
)
def test_bad_key_content_raises_config_error_naming_the_path(tmp_path: Path, content: str) -> None:
    """Content that is not a key raises ConfigError naming the file, and leaves the file alone."""
    path = tmp_path / "secret.key"
    path.write_text(content)
    path.chmod(0o600)
    with pytest.raises(ConfigError) as caught:
        load_or_create_secret(path)
    assert str(path) in str(caught.value)
    assert caught.value.exit_code == 2
    assert path.read_text() == content


def test_binary_key_file_raises_config_error(tmp_path: Path) -> None:
    """A key file that is not text raises ConfigError naming the path, not its content."""
    path = tmp_path / "secret.key"
    path.write_bytes(b"\xff\xfe\x00QZXKW")
    path.chmod(0o600)
    with pytest.raises(ConfigError) as caught:
        load_or_create_secret(path)
    assert str(path) in str(caught.value)
    assert "QZXKW" not in str(caught.value)


def test_key_path_that_is_a_folder_raises_config_error(tmp_path: Path) -> None:
    """A folder where the key file should be raises ConfigError naming the path."""
    with pytest.raises(ConfigError) as caught:
        load_or_create_secret(tmp_path)
    assert str(tmp_path) in str(caught.value)


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620])
def test_key_file_others_may_read_is_refused_like_ssh(tmp_path: Path, mode: int) -> None:
    """A key file its group or others can read or write is refused, with the chmod that fixes it."""
    path = tmp_path / "secret.key"
    path.write_text(bytes(range(32)).hex() + "\n")
    path.chmod(mode)
    with pytest.raises(ConfigError) as caught:
        load_or_create_secret(path)
    message = str(caught.value)
    assert f"permissions {mode:04o}" in message
    assert f"chmod 600 {path}" in message
    assert bytes(range(32)).hex() not in message
    assert stat.S_IMODE(path.stat().st_mode) == mode


def test_key_created_under_a_loose_umask_is_private(tmp_path: Path) -> None:
    """A new key file and the folders made for it are private even under umask 000."""
    previous = os.umask(0)
    try:
        path = tmp_path / "made" / "secret.key"
        load_or_create_secret(path)
    finally:
        os.umask(previous)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_fingerprint_names_a_secret_without_revealing_it() -> None:
    """The fingerprint is short, stable per secret, differs between secrets, is not the secret."""
    secret = bytes(range(32))
    assert fingerprint(secret) == fingerprint(bytes(range(32)))
    assert fingerprint(secret) != fingerprint(bytes(range(1, 33)))
    assert len(fingerprint(secret)) == 12
    assert fingerprint(secret) not in secret.hex()


def _hmac(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, hashlib.sha256).digest()


def test_key_scope_follows_the_documented_scheme() -> None:
    """root = HMAC(secret, "coercion/scope/" + scope); values = HMAC(HMAC(root, "derive"), ...)."""
    secret = bytes(range(32))
    root = _hmac(secret, b"coercion/scope/deidentify/default")
    derive = _hmac(root, b"derive")
    uid_bytes = _hmac(derive, b"uid\x001.2.3.4")[:16]
    value = int.from_bytes(uid_bytes, "big") & ~(0xF << 76) & ~(0x3 << 62)
    expected_uid = f"2.25.{value | (0x8 << 76) | (0x2 << 62)}"
    assert KeyScope(secret, "deidentify/default").uid("1.2.3.4") == expected_uid
    deidentifier = Deidentifier(compile_profile(), secret)  # the default scope
    ds = make_dataset()
    deidentifier.apply(ds)
    token = _hmac(derive, b"dummy\x0000100020\x00PID-4711").hex()[:10].upper()
    assert ds.PatientID == "ANON" + token
    digest = _hmac(derive, b"date-offset\x00PID-4711\x00")
    days = -3650 + int.from_bytes(digest[:8], "big") % 3650
    seconds = days * 86400 - int.from_bytes(digest[8:16], "big") % 86400
    assert deidentifier.date_offset("PID-4711") == seconds


def test_key_scopes_differ_and_repeat() -> None:
    """Two scopes give unrelated values; one scope gives the same values again."""
    secret = bytes(range(32))
    a, again, b = KeyScope(secret, "a"), KeyScope(secret, "a"), KeyScope(secret, "b")
    assert a.uid("1.2.3") == again.uid("1.2.3") != b.uid("1.2.3")
    assert a.derive("dummy", "x") == again.derive("dummy", "x") != b.derive("dummy", "x")
    assert a.lookup("patient", "x") != b.lookup("patient", "x")
    assert KeyScope(bytes(32), "a").uid("1.2.3") != a.uid("1.2.3")
