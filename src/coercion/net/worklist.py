"""The Modality Worklist SCP: a local folder of items, or an upstream worklist SCP.

Locally, each ``*.dcm`` or ``*.wl`` file of the folder (as dcmtk's worklist
SCP keeps them) is one worklist item. A query's keys with a value are matched
as PS3.4 C.2.2.2 describes (single value, ``*``/``?`` wildcards, date and time
ranges, UID lists, sequence matching on the first item); empty keys are
return keys. An answer holds the query's keys with the item's values.

With the device's ``coercionWorklistAETitle``, the query goes to that known
peer instead: the request and each answer are coerced as SCU (C_FIND_RQ and
C_FIND_RSP, called = the upstream), then each answer again as the node's own
C_FIND_RSP; a C-CANCEL is passed on.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.sequence import Sequence
from pydicom.uid import UID
from pynetdicom import AE, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]  # made at import, unseen by mypy
    ModalityWorklistInformationFind,
)

from coercion.dicom.wellformed import check_file
from coercion.directory.settings import DeviceSettings
from coercion.engine import Dimse, Engine, EventContext, Role
from coercion.errors import InputError
from coercion.net import adapt, incoming
from coercion.net.audit import AuditTrail
from coercion.net.boundary import Operation, Provider, Service, guarded
from coercion.net.paths import inside
from coercion.net.peers import Peers

__all__ = ["WORKLIST_FIND", "Worklist", "WorklistSCP", "answer", "matches"]

log = logging.getLogger(__name__)

_RANGE_VRS = frozenset({"DA", "TM", "DT"})
WORKLIST_FIND = UID(ModalityWorklistInformationFind)
_SUCCESS = 0x0000
_PENDING = 0xFF00
_CANCEL = 0xFE00
_CANNOT_UNDERSTAND = 0xC000
_OUT_OF_RESOURCES = 0xA700


def _text(value: object) -> str:
    return "" if value is None else str(value).strip()


def _wildcard(pattern: str) -> re.Pattern[str]:
    parts = ("." if c == "?" else ".*" if c == "*" else re.escape(c) for c in pattern)
    return re.compile("".join(parts), re.DOTALL)


def _match_value(vr: str, query: str, value: str) -> bool:
    if vr == "UI":
        return value in query.split("\\")
    if vr in _RANGE_VRS and "-" in query:
        low, _, high = query.partition("-")
        return (not low or value >= low) and (not high or value <= high)
    if vr == "PN" or "*" in query or "?" in query:
        return bool(_wildcard(query).fullmatch(value)) or (
            vr == "PN" and query.upper() == value.upper()
        )
    return query == value


def _constrains(query: Dataset) -> bool:
    """Whether *query* has a key with a value (else it only asks for return keys)."""
    for elem in query:
        if elem.VR == "SQ":
            if elem.value and _constrains(elem.value[0]):
                return True
        elif elem.tag != 0x00080005 and _text(elem.value) not in ("", "*"):
            return True
    return False


def matches(query: Dataset, item: Dataset) -> bool:
    """Whether *item* matches every key of *query* that has a value."""
    for elem in query:
        if elem.tag == 0x00080005:
            continue  # Specific Character Set is not a matching key
        if elem.VR == "SQ":
            template = elem.value[0] if elem.value else None
            if template is None or not _constrains(template):
                continue
            found = item.get(elem.tag)
            candidates = list(found.value) if found is not None and found.value else []
            if not any(matches(template, candidate) for candidate in candidates):
                return False
            continue
        wanted = _text(elem.value)
        if not wanted or wanted == "*":
            continue
        have = item.get(elem.tag)
        if have is None or not _match_value(elem.VR, wanted, _text(have.value)):
            return False
    return True


def answer(query: Dataset, item: Dataset) -> Dataset:
    """The answer: every key of *query*, with the value *item* has for it."""
    result = Dataset()
    for elem in query:
        if elem.VR == "SQ":
            found = item.get(elem.tag)
            items = list(found.value) if found is not None and found.value else []
            template = elem.value[0] if elem.value else Dataset()
            result.add_new(
                elem.tag,
                "SQ",
                Sequence([answer(template, i) for i in items if matches(template, i)]),
            )
            continue
        have = item.get(elem.tag)
        result.add_new(elem.tag, elem.VR, have.value if have is not None else None)
    charset = item.get("SpecificCharacterSet")
    if charset is not None:
        result.SpecificCharacterSet = charset
    return result


def _reason(exc: Exception) -> str:
    """Our errors say what is wrong (without values); others are named by class only."""
    return str(exc) if isinstance(exc, InputError) else exc.__class__.__name__


class Worklist:
    """The items of a worklist folder (read per query, so edits show at once)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def items(self) -> Iterator[Dataset]:
        """Every readable item; any other file is skipped with one log line (its name, no value).

        A file is read only when it lies in the folder (a symbolic link may not lead out of
        it) and its structure is whole to its last byte; an empty data set is no item.
        """
        if not self.folder.is_dir():
            return
        for path in sorted([*self.folder.glob("*.dcm"), *self.folder.glob("*.wl")]):
            try:
                item = self._read(path)
            except (InputError, InvalidDicomError, OSError, ValueError) as exc:
                log.warning("worklist item %s skipped: %s", path.name, _reason(exc))
                continue
            yield item

    def _read(self, path: Path) -> Dataset:
        if not inside(self.folder, path):
            raise InputError(f"{path.name}: lies outside the worklist folder")
        check_file(path.read_bytes(), path.name)
        item = dcmread(path, force=True)  # with or without a file meta header
        if len(item) == 0:
            raise InputError(f"{path.name}: no data set")
        return item

    def find(self, query: Dataset) -> Iterator[Dataset]:
        """The answers to *query*."""
        for item in self.items():
            if matches(query, item):
                yield answer(query, item)


class WorklistSCP(Provider):
    """The C-FIND handler of a node (:meth:`on_find`): the local folder or the upstream."""

    def __init__(
        self,
        worklist: Worklist,
        engine: Engine,
        audit: AuditTrail,
        settings: Callable[[], DeviceSettings],
        peers: Callable[[], Peers],
    ) -> None:
        super().__init__(engine, audit, settings)
        self.worklist = worklist
        self.peers = peers

    @guarded(Service.C_FIND)
    def on_find(self, event: evt.Event, op: Operation) -> Any:
        """The answers to a worklist query, coerced; then its final status."""
        request: Any = event.request
        ctx = op.ctx
        incoming.check(request.Identifier, str(event.context.transfer_syntax), op.label)
        op.step = "coerce query"
        query = self.engine.apply(event.identifier, ctx).dataset
        op.step = "answers"
        upstream = self.settings().worklist_ae_title
        answers = (
            self._upstream_answers(event, query, ctx, upstream)
            if upstream
            else ((_PENDING, item) for item in self.worklist.find(query))
        )
        response_ctx = replace(ctx, dimse=Dimse.C_FIND_RSP)
        answered = 0
        for code, item in answers:
            if event.is_cancelled or code == _CANCEL:
                self.audit.record(ctx, _CANCEL, None, extra={"answers": answered})
                yield _CANCEL, None
                return
            if item is None:  # the upstream failed: its status goes back
                self.audit.record(ctx, code, None, "", "upstream worklist failed")
                yield code, None
                return
            op.step = "coerce answer"
            coerced = self.engine.apply(item, response_ctx).dataset
            op.step = "answers"
            answered += 1
            yield code, coerced
        op.step = "audit"
        self.audit.record(ctx, _SUCCESS, None, extra={"answers": answered})

    def _upstream_answers(
        self, event: evt.Event, query: Dataset, ctx: EventContext, upstream: str
    ) -> Iterator[tuple[int, Dataset | None]]:
        """Ask the upstream worklist SCP: the request and each answer coerced as SCU."""
        peers = self.peers()
        address = peers.address(upstream)
        if address is None:
            log.error("worklist upstream %s is not a known AE title with host and port", upstream)
            yield _CANNOT_UNDERSTAND, None
            return
        host, port = address
        request_ctx = EventContext(
            Dimse.C_FIND_RQ,
            Role.SCU,
            ctx.called_ae,
            upstream,
            host,
            ctx.local_host,
            ctx.sop_class_uid,
        )
        request = self.engine.apply(query, request_ctx).dataset  # a failure: the boundary's
        ae = AE(ae_title=ctx.called_ae)
        ae.network_timeout = ae.acse_timeout = 30
        ae.dimse_timeout = 60
        ae.add_requested_context(WORKLIST_FIND)
        assoc = ae.associate(
            host,
            port,
            ae_title=upstream,
            tls_args=peers.tls_args(upstream, host),
            evt_handlers=adapt.requestor_handlers(),
        )
        if not assoc.is_established:
            log.warning("worklist upstream %s at %s:%s unreachable", upstream, host, port)
            yield _OUT_OF_RESOURCES, None
            return
        answer_ctx = replace(request_ctx, dimse=Dimse.C_FIND_RSP)
        try:
            for status, identifier in assoc.send_c_find(request, WORKLIST_FIND):
                code = int(getattr(status, "Status", _CANNOT_UNDERSTAND))
                if code in (_PENDING, 0xFF01) and identifier is not None:
                    if event.is_cancelled:
                        assoc.send_c_cancel(1, query_model=WORKLIST_FIND)
                        yield _CANCEL, None
                        return
                    yield _PENDING, self.engine.apply(identifier, answer_ctx).dataset
                elif code == _SUCCESS:
                    return
                else:
                    yield (_CANCEL if code == _CANCEL else code), None
                    return
        finally:
            if assoc.is_established:
                assoc.release()
