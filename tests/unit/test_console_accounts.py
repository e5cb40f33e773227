"""The console's password file, password hashes and sessions."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from coercion.console.accounts import (
    PasswordFile,
    Role,
    hash_password,
    set_password,
    verify_password,
)
from coercion.console.sessions import SIGNIN_FAILURES, Sessions, SignInThrottle
from coercion.errors import ConfigError


def test_hash_verifies_only_its_password() -> None:
    """A scrypt hash verifies its password and nothing else; two hashes differ (salt)."""
    stored = hash_password("correct horse")
    assert stored.startswith("scrypt$32768$8$1$")
    assert verify_password("correct horse", stored)
    assert not verify_password("correct horsf", stored)
    assert hash_password("correct horse") != stored
    assert not verify_password("x", "md5$abc")
    assert not verify_password("x", "scrypt$bad")


def test_password_file_roles_and_replacement(tmp_path: Path) -> None:
    """set_password adds or replaces a line (0600); PasswordFile gives the role or None."""
    path = tmp_path / "console.passwd"
    set_password(path, "ann", Role.ADMIN, "ann-password")
    set_password(path, "ben", Role.VIEWER, "ben-password")
    set_password(path, "ann", Role.VIEWER, "ann-password-2")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [line.split(":")[:2] for line in path.read_text().splitlines()] == [
        ["ben", "viewer"],
        ["ann", "viewer"],
    ]
    accounts = PasswordFile(path)
    assert accounts.authenticate("ann", "ann-password-2") is Role.VIEWER
    assert accounts.authenticate("ann", "ann-password") is None
    assert accounts.authenticate("ben", "ben-password") is Role.VIEWER
    assert accounts.authenticate("nobody", "ben-password") is None
    assert PasswordFile(tmp_path / "absent").authenticate("ann", "x" * 8) is None


@pytest.mark.parametrize(
    ("name", "password"), [("", "long-enough"), ("a:b", "long-enough"), ("ann", "short")]
)
def test_set_password_refuses_bad_input(tmp_path: Path, name: str, password: str) -> None:
    """Names with ':' or empty, and passwords under 8 characters, are refused."""
    with pytest.raises(ConfigError):
        set_password(tmp_path / "p", name, Role.ADMIN, password)
    assert not (tmp_path / "p").exists()


def test_malformed_password_file_names_the_line(tmp_path: Path) -> None:
    """A line that is not NAME:ROLE:HASH is an error naming the file and line."""
    path = tmp_path / "p"
    path.write_text("# accounts\nann:root:scrypt$1\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"p: line 2: not NAME:ROLE:HASH"):
        PasswordFile(path).authenticate("ann", "whatever")


def test_sessions_expire_and_close() -> None:
    """A session is found by its token until it is idle too long or closed; CSRF is per session."""
    sessions = Sessions(timeout=60)
    token, session = sessions.open("ann", Role.ADMIN)
    assert sessions.get(token) is session and session.admin
    assert session.csrf_ok(session.csrf) and not session.csrf_ok("x") and not session.csrf_ok(None)
    other_token, other = sessions.open("ben", Role.VIEWER)
    assert other.csrf != session.csrf and not other.admin
    session.last_seen -= 61
    assert sessions.get(token) is None
    sessions.close(other_token)
    assert sessions.get(other_token) is None
    assert sessions.get(None) is None


def test_failed_sign_ins_make_the_next_ones_wait() -> None:
    """Past SIGNIN_FAILURES failures in the window, the address and the name wait; a success
    forgets its own failures; another address and another name are not held up."""
    now = [1000.0]
    throttle = SignInThrottle(window=300, clock=lambda: now[0])
    for _ in range(SIGNIN_FAILURES - 1):
        throttle.failed("10.0.0.1", "ann")
        now[0] += 10
    assert throttle.wait("10.0.0.1", "ann") == 0
    throttle.failed("10.0.0.1", "ann")
    assert throttle.wait("10.0.0.1", "ann") == pytest.approx(300 - 40)
    assert throttle.wait("10.0.0.1", "ben") == pytest.approx(260)  # the address is held
    assert throttle.wait("10.0.0.2", "ann") == pytest.approx(260)  # and so is the name
    assert throttle.wait("10.0.0.2", "ben") == 0
    now[0] += 261  # the first failure has left the window
    assert throttle.wait("10.0.0.1", "ann") == 0
    throttle.failed("10.0.0.1", "ann")
    assert throttle.wait("10.0.0.1", "ann") > 0
    throttle.succeeded("10.0.0.1", "ann")
    assert throttle.wait("10.0.0.1", "ann") == 0
