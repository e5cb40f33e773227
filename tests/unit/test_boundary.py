"""The node's error boundary: statuses per service, kinds without values, a quiet audit."""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path

import pytest

from coercion.engine import Dimse, EventContext, Role
from coercion.errors import (
    MalformedDataError,
    RuleFailedError,
    StoreError,
    kind_of,
)
from coercion.net.audit import AuditTrail
from coercion.net.boundary import (
    Boundary,
    DataSetMismatchError,
    Operation,
    Service,
    classify,
    status,
)

CTX = EventContext(Dimse.C_STORE_RQ, Role.SCP, "CT01", "COERCION", "127.0.0.1", "127.0.0.1")
RULE = RuleFailedError("rule cn=x: refused", kind="unknown pseudonym", rule="trial1-return")
FULL = OSError(errno.ENOSPC, "No space left on device", "/data/objects/1.2.3/4.5.6/7.8.9.dcm")

TABLE = [
    (DataSetMismatchError("SOP class differs"), Service.C_STORE, 0xA900),
    (MalformedDataError("m", "malformed data set: (7FE0,0010)"), Service.C_STORE, 0xC000),
    (MalformedDataError("m", "malformed data set: (7FE0,0010)"), Service.N_SET, 0x0110),
    (RecursionError(), Service.C_FIND, 0xC000),
    (RULE, Service.C_STORE, 0xC001),
    (RULE, Service.C_FIND, 0xC001),
    (RULE, Service.N_CREATE, 0x0110),
    (FULL, Service.C_STORE, 0xA700),
    (FULL, Service.C_FIND, 0xA700),
    (FULL, Service.N_SET, 0x0213),
    (KeyError("QZXSECRET"), Service.C_STORE, 0xC002),
    (KeyError("QZXSECRET"), Service.N_CREATE, 0x0110),
    (KeyError("QZXSECRET"), Service.C_ECHO, 0x0110),
    (OSError("pydicom: no errno, a value 'QZXSECRET'"), Service.C_STORE, 0xC002),
]


@pytest.mark.parametrize(("exc", "service", "code"), TABLE)
def test_each_failure_gets_its_services_status_and_no_value(
    exc: BaseException, service: Service, code: int
) -> None:
    """The module's table, with a comment of at most 64 characters and no value in it."""
    failure = classify(service, exc)
    assert failure.code == code
    assert 0 < len(failure.comment) <= 64
    assert "QZXSECRET" not in failure.comment and "7.8.9" not in failure.comment


def test_kinds_say_what_without_a_value() -> None:
    """A rule's kind, a full disk by errno, a store failure, a foreign exception by class."""
    assert RULE.comment == "rule trial1-return: unknown pseudonym"
    assert kind_of(FULL) == "disk full (ENOSPC)"
    assert kind_of(OSError(errno.EACCES, "denied")) == "I/O error (EACCES)"
    assert kind_of(StoreError("store x: down")) == "pseudonym store failed"
    assert kind_of(KeyError("QZXSECRET")) == "unexpected KeyError"
    long = RuleFailedError("m", kind="unknown pseudonym", rule="r" * 80)
    assert len(long.comment) == 64


def test_error_comment_is_a_valid_lo() -> None:
    """No backslash or control character in the Error Comment (LO), cut to 64 characters."""
    answer = status(0xC001, "rule a\\b\ncd: " + "x" * 80)
    assert answer.Status == 0xC001
    assert "\\" not in answer.ErrorComment and "\n" not in answer.ErrorComment
    assert len(answer.ErrorComment) == 64


def test_full_audit_disk_is_logged_once_per_burst_and_never_raises(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Today's file on /dev/full: five failures, one ERROR; back on disk: a WARNING, 5 lost."""
    audit = AuditTrail(tmp_path / "audit", b"k" * 32)
    os.symlink("/dev/full", audit.path())
    boundary = Boundary(audit)
    with caplog.at_level(logging.WARNING):
        for _ in range(5):
            answer = boundary.fail(Operation(Service.C_STORE, CTX, "1.2.3"), FULL)
            assert (answer.Status, answer.ErrorComment) == (0xA700, "disk full (ENOSPC)")
        errors = [r for r in caplog.records if r.name == "coercion.net.audit"]
        assert [r.levelno for r in errors] == [logging.ERROR]
        assert "ENOSPC" in errors[0].getMessage()
        os.unlink(audit.path())
        audit.record(CTX, 0)
    assert "5 lines were lost" in caplog.records[-1].getMessage()
    assert audit.path().read_text().count("\n") == 1
    failures = [r for r in caplog.records if r.name == "coercion.net.boundary"]
    assert len(failures) == 5
    assert all("failed at receive: OSError: disk full (ENOSPC)" in r.getMessage() for r in failures)
    assert all("7.8.9" not in r.getMessage() for r in failures)  # no path: it is made of UIDs
