"""Rule conditions as dcm4chee-arc's Conditions evaluates them: absent values, negation, tag
paths, value positions, codes, Java regular expressions, host names, the same key twice."""

from __future__ import annotations

import datetime
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.filewriter import dcmwrite

from coercion.dicom.part10 import read_file
from coercion.engine import Dimse, EventContext, Role, hostnames, parse_condition, parse_conditions
from coercion.engine.javaregex import compile_java
from tests.helpers import make_dataset

CTX = EventContext(Dimse.C_STORE_RQ, Role.SCP, "CT01", "ARCHIVE", "127.0.0.1", "10.0.0.1")
NO_AE = EventContext(Dimse.C_STORE_RQ, Role.SCP, "", "", "", "")


def _item(**values: str) -> Dataset:
    item = Dataset()
    for name, value in values.items():
        setattr(item, name, value)
    return item


def dataset() -> Dataset:
    """A CT object with a code sequence, a multi-valued ImageType and a knee body part."""
    ds = make_dataset()
    ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    ds.BodyPartExamined = "KNEE"
    ds.PatientComments = ""
    ds.ProcedureCodeSequence = [
        _item(CodeValue="CT-HEAD", CodingSchemeDesignator="99LOCAL", CodeMeaning="Head"),
        _item(CodeValue="CT-NECK", CodingSchemeDesignator="99LOCAL", CodeMeaning="Neck"),
    ]
    ds.RequestAttributesSequence = [
        _item(ScheduledProcedureStepID="SPS1"),
    ]
    ds.AnatomicRegionSequence = [
        _item(CodeValue="T-D1213", CodingSchemeDesignator="SRT", CodeMeaning="Jaw region"),
    ]
    ds.PatientID = "37605030299"  # a valid Estonian personal code (check digit 9)
    return ds


# Each row: condition, holds on dataset(), and the dcm4chee-arc behaviour it stands for.
CASES = [
    # absent attributes never match a positive condition; a negative one holds
    ("OtherPatientIDs=.*", False),
    ("OtherPatientIDs!=.*", True),
    ("IssuerOfPatientID!=.+", True),
    ("PatientComments=.*", False),  # present but empty: no value to match
    # presence tests: KEY= holds without a value, KEY!= with one
    ("OtherPatientIDs=", True),
    ("PatientComments=", True),
    ("Modality=", False),
    ("Modality!=", True),
    ("ProcedureCodeSequence!=", True),
    # the whole value must match; any value of a multi-valued attribute
    ("Modality=C", False),
    ("Modality=CT|MR", True),
    ("ImageType=LOCALIZER", True),
    ("ImageType!=LOCALIZER", False),
    # keys as tags
    ("00180015=KNEE|JAW", True),
    ("00180015!=KNEE|JAW", False),
    ("(0018,0015)=KNEE", True),
    ("0018,0015=HAND", False),
    # sequence paths: any item
    ("ProcedureCodeSequence.CodeValue=CT-NECK", True),
    ("ProcedureCodeSequence.CodeValue=CT-FOOT", False),
    ("ProcedureCodeSequence.CodeValue!=CT-NECK", False),
    ("ProcedureCodeSequence.CodeValue!=CT-FOOT", True),
    ("00081032.00080100=CT-HEAD", True),
    ("ReferencedStudySequence.StudyInstanceUID=.*", False),  # absent sequence
    ("ReferencedStudySequence.StudyInstanceUID!=.*", True),
    ("RequestAttributesSequence.ScheduledProcedureStepID=SPS.", True),
    # value positions count from 1; a position past the last value matches
    ("ImageType[3]=LOCALIZER", True),
    ("ImageType[1]=LOCALIZER", False),
    ("ImageType[3]!=LOCALIZER", False),
    ("ImageType[1]!=LOCALIZER", True),
    ("ImageType[4]=LOCALIZER", True),
    ("OtherPatientIDs[1]=X", False),
    # codes: the first item of the sequence, the meaning not compared
    ('AnatomicRegionSequence=(T-D1213,SRT,"anything")', True),
    ('AnatomicRegionSequence=(T-D1214,SRT,"Jaw")|(T-D1213,SRT,"Jaw")', True),
    ('AnatomicRegionSequence=(T-D1213,SCT,"Jaw region")', False),
    ('AnatomicRegionSequence!=(T-D1213,SRT,"Jaw region")', False),
    ('ProcedureCodeSequence=(CT-NECK,99LOCAL,"Neck")', False),  # only the first item
    ('ProcedureCodeSequence=(CT-HEAD,99LOCAL[1.0],"Head")', False),  # the version differs
    ('ReferencedStudySequence=(CT-HEAD,99LOCAL,"Head")', False),
    # a value that starts with ( but is not a code is a regular expression
    ("Modality=(CT|MR)", True),
    # value predicates
    ("PatientID=§PATIENT_ID_EST", True),
    ("AccessionNumber=§PATIENT_ID_EST", False),
    ("StudyDate=§CURRENT_DATE", False),
    # Java regular expressions
    (r"Modality=\p{Upper}{2}", True),
    (r"Modality=\p{Lower}+", False),
    (r"Modality=[\p{Alpha}]+", True),
    (r"Modality=\P{Digit}+", True),
    (r"AccessionNumber=\p{Alnum}{3}-\d++", True),
    (r"AccessionNumber=\QACC-0815\E", True),
    (r"AccessionNumber=(?<p>ACC)-\d+", True),
    ("Modality=(?i)ct", True),
    # context conditions: an unknown AE title never matches a positive condition
    ("SendingApplicationEntityTitle=CT.*", True),
    ("SendingApplicationEntityTitle!=CT.*", False),
    ("ReceivingApplicationEntityTitle=ARCHIVE", True),
    # host names: the address and its reverse name (127.0.0.1 is localhost)
    (r"SendingHostname=127\.0\.0\.1", True),
    ("SendingHostname=localhost", True),
    ("SendingHostname!=localhost", False),
    ("SendingHostname=otherhost", False),
]


@pytest.mark.parametrize(("text", "holds"), CASES)
def test_condition_holds_as_in_dcm4chee(text: str, holds: bool) -> None:
    """Each condition holds (or not) on the sample object as dcm4chee-arc's Conditions says."""
    assert parse_condition(text).holds(CTX, dataset()) is holds


@pytest.mark.parametrize(
    ("text", "holds"),
    [
        ("SendingApplicationEntityTitle=.*", False),
        ("SendingApplicationEntityTitle!=.*", True),
        ("ReceivingHostname=.*", False),
        ("ReceivingHostname!=X", True),
    ],
)
def test_context_conditions_without_a_value(text: str, holds: bool) -> None:
    """Without an AE title or host (a file on the command line), positive conditions fail."""
    assert parse_condition(text).holds(NO_AE, dataset()) is holds


def test_conditions_hold_on_raw_elements_as_read(tmp_path: Path) -> None:
    """The lean reader's raw elements give the same values, positions included."""
    ds = dataset()
    ds.ImageType = ["ORIGINAL", "", "LOCALIZER"]
    path = tmp_path / "ct.dcm"
    dcmwrite(path, ds, enforce_file_format=True)
    read = read_file(path)
    assert parse_condition("ImageType[3]=LOCALIZER").holds(CTX, read)
    assert not parse_condition("ImageType[2]=.*").holds(CTX, read)  # empty: no value
    assert parse_condition("Rows=2").holds(CTX, read)
    assert parse_condition("ProcedureCodeSequence.CodeValue=CT-NECK").holds(CTX, read)


def test_today_matches_current_date() -> None:
    """§CURRENT_DATE holds for today's date as a DA value."""
    ds = dataset()
    ds.StudyDate = datetime.date.today().strftime("%Y%m%d")
    assert parse_condition("StudyDate=§CURRENT_DATE").holds(CTX, ds)


def test_the_same_key_twice_the_later_counts() -> None:
    """Two conditions with the same key: the later one replaces the earlier one."""
    conditions = parse_conditions(["Modality=MR", "PatientSex=F", "Modality=CT"])
    assert [c.text for c in conditions] == ["PatientSex=F", "Modality=CT"]
    assert all(c.holds(CTX, dataset()) for c in conditions)
    # KEY and KEY! are two keys, as in dcm4chee-arc
    assert len(parse_conditions(["Modality=CT", "Modality!=MR"])) == 2


@pytest.mark.parametrize(
    ("java", "matches", "misses"),
    [
        (r"\p{Upper}+", "ABC", "AbC"),
        (r"\p{Punct}", "!", "a"),
        (r"[^\p{Digit}]+", "ab", "a1"),
        (r"\d+", "123", "١٢٣"),  # Java's \d is ASCII only
        (r"\w+", "abc_1", "äbc"),
        (r"a.c", "abc", "a\rc"),  # Java's . stops at every line terminator
        (r"\h", "\u00a0", "\n"),
        (r"\v", "\u2028", " "),
        (r"a++b", "aab", "aa"),
        (r"(?>a|ab)c", "ac", "abc"),
        (r"\Qa.b\E", "a.b", "axb"),
        (r"(?<x>a)\k<x>", "aa", "ab"),
        (r"\x{41}", "A", "B"),
        (r"ab\z", "ab", "ab\n"),
        (r"\0101", "A", "\x081"),  # Java's octal escape takes three digits
    ],
)
def test_java_expressions_keep_their_meaning(java: str, matches: str, misses: str) -> None:
    """Java syntax Python spells otherwise is translated, with Java's meaning."""
    pattern = compile_java(java)
    assert pattern.fullmatch(matches)
    assert not pattern.fullmatch(misses)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (r"Modality=\p{L}+", r"\\p\{L\}: no Python counterpart"),
        (r"Modality=\p{IsLatin}+", r"no Python counterpart"),
        (r"Modality=[a-z&&[^b]]", r"intersection"),
        (r"Modality=[a[b]]", r"class inside a class"),
        (r"Modality=\G", r"\\G: no Python counterpart"),
        (r"Modality=(?u)ct", r"invalid regular expression"),
        ("ImageType[0]=X", r"counts from 1"),
        ("SendingApplicationEntityTitle[1]=X", r"no position"),
        ("SendingApplicationEntityTitle=", r"needs an expression"),
        ("ProcedureCodeSequence.NoSuchKeyword=X", r"unknown condition name 'NoSuchKeyword'"),
        ("Modality", r"expected NAME=REGEX"),
    ],
)
def test_conditions_without_an_exact_meaning_are_refused(text: str, message: str) -> None:
    """What cannot keep dcm4chee-arc's meaning is refused with a message naming it."""
    with pytest.raises(ValueError, match=message):
        parse_condition(text)


def test_a_slow_reverse_lookup_is_not_waited_for_and_serves_later(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A lookup slower than the timeout: the address alone now, the name once it came."""
    answered = threading.Event()
    monkeypatch.setattr(hostnames, "_reverse", lambda _address: answered.wait(5) and "slow.example")
    monkeypatch.setattr(hostnames, "LOOKUP_TIMEOUT", 0.05)
    monkeypatch.setattr(hostnames, "_cache", OrderedDict())
    started = time.monotonic()
    assert hostnames.host_names("192.0.2.7") == ("192.0.2.7",)
    assert time.monotonic() - started < 2
    answered.set()
    deadline = time.monotonic() + 5
    while "192.0.2.7" not in hostnames._cache and time.monotonic() < deadline:
        answered.wait(0.01)
    assert hostnames.host_names("192.0.2.7") == ("192.0.2.7", "slow.example")
    assert parse_condition(r"SendingHostname=slow\.example").holds(
        EventContext(Dimse.C_STORE_RQ, Role.SCP, "A", "B", "192.0.2.7", ""), dataset()
    )


def test_the_lookup_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """No more than CACHE_SIZE addresses are kept; the oldest go first."""
    monkeypatch.setattr(hostnames, "_reverse", lambda address: f"h{address.split('.')[-1]}")
    monkeypatch.setattr(hostnames, "CACHE_SIZE", 3)
    monkeypatch.setattr(hostnames, "_cache", OrderedDict())
    wanted = ["192.0.2.3", "192.0.2.4", "192.0.2.5"]
    for last in range(1, 6):
        assert hostnames.host_names(f"192.0.2.{last}") == (f"192.0.2.{last}", f"h{last}")
    deadline = time.monotonic() + 5  # the answer is kept by the lookup's thread, just after
    while set(hostnames._cache) != set(wanted) and time.monotonic() < deadline:
        threading.Event().wait(0.01)
    assert set(hostnames._cache) == set(wanted)
    assert hostnames.host_names("not-an-address") == ("not-an-address",)


def test_a_lookup_done_before_its_callback_is_added_does_not_deadlock(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An answer already there when the lookup starts is kept, without waiting on the lock."""

    def done_at_once(function: Callable[[str], str], address: str) -> Future[str]:
        future: Future[str] = Future()
        future.set_result(function(address))
        return future

    monkeypatch.setattr(hostnames, "_reverse", lambda _address: "quick.example")
    monkeypatch.setattr(hostnames._pool, "submit", done_at_once)
    monkeypatch.setattr(hostnames, "_cache", OrderedDict())
    answers: list[tuple[str, ...]] = []
    worker = threading.Thread(target=lambda: answers.append(hostnames.host_names("192.0.2.9")))
    worker.start()
    worker.join(5)
    assert not worker.is_alive()
    assert answers == [("192.0.2.9", "quick.example")]
    assert "192.0.2.9" in hostnames._cache
