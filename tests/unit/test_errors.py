"""map_errors turns a library's exceptions into the project's at one boundary."""

from __future__ import annotations

import errno

import pytest

from coercion.errors import ConfigError, OutputError, StoreError, map_errors, reason_of


def test_an_os_error_becomes_ours_with_the_systems_words() -> None:
    """Where, then the OS's reason in parentheses; the original is not chained by default."""
    with (
        pytest.raises(OutputError) as caught,
        map_errors({OSError: OutputError}, "x.dcm: cannot write"),
    ):
        raise OSError(errno.ENOSPC, "No space left on device")
    assert str(caught.value) == "x.dcm: cannot write (No space left on device)"
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_other_exceptions_are_named_by_class_never_by_message() -> None:
    """A foreign message may quote a value: only the class name is shown."""

    class OperationalError(Exception):
        pass

    with pytest.raises(StoreError) as caught, map_errors({OperationalError: StoreError}, "store x"):
        raise OperationalError("INSERT ... ('DOE^JANE')")
    assert str(caught.value) == "store x (OperationalError)"
    assert "DOE" not in str(caught.value)


def test_hint_chain_and_reason_are_honoured() -> None:
    """A hint follows a semicolon; chain keeps the cause; reason may say more."""
    with (
        pytest.raises(ConfigError) as caught,
        map_errors(
            {ValueError: ConfigError}, "f.json: not usable", reason=str, hint="fix it", chain=True
        ),
    ):
        raise ValueError("line 1")
    assert str(caught.value) == "f.json: not usable (line 1); fix it"
    assert isinstance(caught.value.__cause__, ValueError)


def test_the_first_matching_key_wins_and_others_pass() -> None:
    """Keys are tried in order; unmapped exceptions and ours pass unchanged."""
    with (
        pytest.raises(ConfigError),
        map_errors({FileNotFoundError: ConfigError, OSError: OutputError}, "a"),
    ):
        raise FileNotFoundError(errno.ENOENT, "No such file or directory")
    with pytest.raises(KeyError), map_errors({OSError: OutputError}, "a"):
        raise KeyError("k")
    with pytest.raises(StoreError, match=r"^ours$"), map_errors({Exception: OutputError}, "a"):
        raise StoreError("ours")


def test_reason_of_without_strerror_is_the_class() -> None:
    """An OSError without the system's words (some libraries raise them) is named by class."""
    assert reason_of(TimeoutError()) == "TimeoutError"
    assert reason_of(PermissionError(errno.EACCES, "Permission denied")) == "Permission denied"
