"""The PS3.15 de-identifier: the semantics of ``deidentify:Opt1,Opt2``.

:meth:`Deidentifier.apply` walks a dataset once, recursing into every
sequence item at every depth, and applies the compiled profile to each
element. Elements the profile leaves alone are never decoded: pydicom keeps
them as raw bytes, so the cost of an object is the cost of its header, not of
its pixel data.
"""

from __future__ import annotations

import functools
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

from pydicom.datadict import dictionary_VM
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag

from coercion.dicom.config import silence_pydicom_validation
from coercion.dicom.elements import (
    BINARY_VRS,
    NUMBER_SIZE,
    dictionary_vr,
    joined_text,
    new_dataset,
    put_value,
    simple_codec,
    text_values,
    vr_of,
)
from coercion.dicom.elements import key as tag_key
from coercion.dicom.tags import format_tag
from coercion.profile.cleaning import Scrubber
from coercion.profile.compiled import Action, CompiledProfile, PatternRow
from coercion.profile.dates import (
    DATE_TIME_PAIRS,
    MAX_OFFSET_DAYS,
    TIME_DATE_PAIRS,
    offset_seconds,
    shift_values,
)
from coercion.profile.identifiers import removed_values
from coercion.profile.keys import DEFAULT_KEY_SCOPE, KeyScope, deidentify_scope
from coercion.profile.options import BASIC_PROFILE, Option
from coercion.profile.uids import UIDRemapper

__all__ = ["Change", "Deidentifier", "ItemPath", "Record"]

log = logging.getLogger(__name__)

_TEXT_VRS = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"})
#: Free text that is cleaned inside a sequence the profile cleans, though not listed itself.
_FREE_TEXT_VRS = frozenset({"LO", "LT", "SH", "ST", "UC", "UT"})
#: Text VRs that hold one value, backslashes included.
_SINGLE_VALUED_TEXT = frozenset({"LT", "ST", "UT", "UR"})
#: VRs whose C is a scrub of the text (AE titles and person names become tokens instead).
_SCRUBBED_BY_C = (_TEXT_VRS | {"SQ"}) - {"AE", "PN"}
#: The "tag" an AE title token is keyed with: one token per AE title, whatever the attribute.
_ANY_AE_TITLE = 0xFFFFFFFF
_BINARY_DUMMY = {"OB": 2, "OW": 2, "UN": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}
_DATE_DUMMY = {"DA": "19000101", "DT": "19000101000000", "TM": "000000", "AS": "000Y"}
_TOKEN_PREFIX = "ANON"
_TOKEN_HEX = 10

_PATIENT_ID = 0x00100020
_PATIENT_IDENTITY_REMOVED = 0x00120062
_DEIDENTIFICATION_METHOD = 0x00120063
_DEIDENTIFICATION_METHOD_CODE_SEQUENCE = 0x00120064
_LONGITUDINAL_TEMPORAL_INFORMATION_MODIFIED = 0x00280303
_CODE_VALUE = 0x00080100
_CODING_SCHEME_DESIGNATOR = 0x00080102
_CODE_MEANING = 0x00080104
_ISSUER_OF_PATIENT_ID = 0x00100021
_SOP_INSTANCE_UID = 0x00080018
_MEDIA_STORAGE_SOP_INSTANCE_UID = 0x00020003
#: File meta elements kept; the rest (sending/receiving AE titles, private
#: information) describe the transfer, not the object, and are dropped.
_FILE_META_KEPT = frozenset(
    {0x00020001, 0x00020002, 0x00020003, 0x00020010, 0x00020012, 0x00020013}
)


#: Where an item is: the (sequence tag, item index) pairs leading to it from the object.
ItemPath = tuple[tuple[int, int], ...]


class Change(NamedTuple):
    """One action on one element: where (sequence path), which tag, which action."""

    path: ItemPath
    tag: int
    action: Action

    def __str__(self) -> str:
        where = "".join(f"{format_tag(t)}[{i}]." for t, i in self.path)
        return f"{where}{format_tag(self.tag)} {self.action.value}"


@dataclass
class Record:
    """What :meth:`Deidentifier.apply` did: the changes and counts per action."""

    #: (path, tag, action) per change, in the order they were made.
    noted: list[tuple[ItemPath, int, Action]] = field(default_factory=list)
    #: The date offset applied, in seconds (None when dates were not shifted).
    date_offset_seconds: int | None = None

    @property
    def changes(self) -> list[Change]:
        """The changes made."""
        return [Change(*noted) for noted in self.noted]

    @property
    def counts(self) -> Counter[str]:
        """The number of changes per action letter."""
        by_action = Counter(noted[2] for noted in self.noted)
        return Counter({action.value: count for action, count in by_action.items()})


@functools.lru_cache(maxsize=4096)
def _dictionary_count(tag: int) -> int:
    """The smallest number of values the dictionary VM allows (1 when unknown)."""
    try:
        vm = dictionary_VM(tag)
    except KeyError:
        return 1
    head = vm.split("-")[0]
    return int(head) if head.isdigit() and int(head) > 0 else 1


class Deidentifier:
    """Apply the Basic Profile and a set of options to datasets.

    One instance serves any number of objects, from any number of threads;
    it holds the compiled profile and the keyed UID map (a bounded cache:
    results never depend on call order or on what was evicted).

    Every token, new UID and date offset is derived in the key scope *scope*
    (:class:`~coercion.profile.keys.KeyScope`): recipients of different scopes cannot
    link their outputs. The default is the scope of ``coercion deidentify``
    without ``--key-scope``.
    """

    def __init__(
        self,
        profile: CompiledProfile,
        secret: bytes,
        scope: str = deidentify_scope(DEFAULT_KEY_SCOPE),
    ) -> None:
        silence_pydicom_validation()
        self.profile = profile
        self.keys = KeyScope(secret, scope)
        self._uids = UIDRemapper(self.keys.uid)
        self._actions = profile.actions
        self._curve_action = profile.patterns[PatternRow.CURVE]
        self._overlay_data_action = profile.patterns[PatternRow.OVERLAY_DATA]
        self._overlay_comments_action = profile.patterns[PatternRow.OVERLAY_COMMENTS]
        self._remap_uids = profile.actions.get(_SOP_INSTANCE_UID) is Action.U
        self._cleans_text = (
            any(
                action is Action.C and dictionary_vr(tag) in _SCRUBBED_BY_C
                for tag, action in profile.actions.items()
            )
            or profile.patterns[PatternRow.OVERLAY_COMMENTS] is Action.C
            or profile.patterns[PatternRow.CURVE] is Action.C
        )

    def apply(
        self,
        ds: Dataset,
        *,
        remap: Callable[[str], str] | None = None,
        date_offset: int | None = None,
    ) -> Record:
        """De-identify *ds* in place and return the record of what was done.

        Cleaning (C) removes from text every value the profile removes,
        empties or replaces, collected from *ds* before any change.
        *remap* replaces the keyed UID map (a pseudonymisation scope's map), and
        *date_offset* (seconds) the keyed per-patient offset, when dates are shifted.
        """
        record = Record()
        offset = None
        if self.profile.shifts_dates:
            offset = date_offset
            if offset is None:
                offset = self.date_offset(
                    joined_text(ds, _PATIENT_ID), joined_text(ds, _ISSUER_OF_PATIENT_ID)
                )
            record.date_offset_seconds = offset
        scrubber = Scrubber(removed_values(ds, self.profile)) if self._cleans_text else None
        walk = _Walk(self, record, offset, scrubber, remap or self._uids.remap)
        walk.level(ds)
        self._process_file_meta(ds, walk.remap)
        self._mark(ds)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("de-identified object: %s", dict(record.counts))
        return record

    def date_offset(self, patient_id: str, issuer: str = "") -> int:
        """The patient's date offset in seconds: -3650..-1 days and a part below a day."""
        digest = self.keys.derive("date-offset", patient_id.strip(), issuer.strip())
        return offset_seconds(digest, -MAX_OFFSET_DAYS, -1)

    # -- what the walk asks -----------------------------------------------------------

    def _pattern_action(self, tag: int) -> Action | None:
        group = tag >> 16
        if 0x5000 <= group <= 0x501E and not group & 1:
            return self._curve_action
        if 0x6000 <= group <= 0x601E and not group & 1:
            element = tag & 0xFFFF
            if element == 0x3000:
                return self._overlay_data_action
            if element == 0x4000:
                return self._overlay_comments_action
            # The rest of an overlay plane is meaningless without its data.
            return Action.X if self._overlay_data_action is Action.X else None
        return None

    def dummy(
        self, tag: int, vr: str, ds: Dataset, remap: Callable[[str], str]
    ) -> list[str] | bytes:
        """D: a value valid for the VR and the dictionary VM; text is a keyed token.

        Text, dates and decimal strings come back as a list of values, binary
        numbers (zero) and other binary VRs as their encoded bytes.
        """
        count = _dictionary_count(tag)
        if vr in _TEXT_VRS:
            value = self._token(int(tag), joined_text(ds, tag))
        elif vr in NUMBER_SIZE:
            return bytes(NUMBER_SIZE[vr] * count)
        elif vr in ("DS", "IS"):
            value = "0"
        elif vr in _DATE_DUMMY:
            value = _DATE_DUMMY[vr]
        elif vr == "UI":
            return [remap(joined_text(ds, tag))]
        else:
            return bytes(_BINARY_DUMMY.get(vr, 2))
        return [value] * count

    def _token(self, tag: int, original: str) -> str:
        digest = self.keys.derive("dummy", f"{tag:08X}", original).hex()
        return _TOKEN_PREFIX + digest[:_TOKEN_HEX].upper()

    # -- bookkeeping -------------------------------------------------------------

    def _process_file_meta(self, ds: Dataset, remap: Callable[[str], str]) -> None:
        meta = getattr(ds, "file_meta", None)
        if meta is None:
            return
        for key in list(meta.keys()):
            if int(key) not in _FILE_META_KEPT:
                del meta[key]
        if self._remap_uids and _MEDIA_STORAGE_SOP_INSTANCE_UID in meta:
            elem = meta[_MEDIA_STORAGE_SOP_INSTANCE_UID]
            elem.value = remap(str(elem.value))

    def _mark(self, ds: Dataset) -> None:
        """Record what was done (PS3.15 E.1.1 and the CID 7050 codes)."""
        options = self.profile.options
        codes = [BASIC_PROFILE, *(o.code for o in sorted(options, key=lambda o: o.value))]
        if Option.RetainLongitudinalTemporalInformationModifiedDatesOption in options:
            temporal = "MODIFIED"
        elif Option.RetainLongitudinalTemporalInformationFullDatesOption in options:
            temporal = "UNMODIFIED"
        else:
            temporal = "REMOVED"
        put_value(ds, _PATIENT_IDENTITY_REMOVED, "CS", ["YES"])
        put_value(ds, _DEIDENTIFICATION_METHOD, "LO", [code.meaning for code in codes])
        put_value(ds, _LONGITUDINAL_TEMPORAL_INFORMATION_MODIFIED, "CS", [temporal])
        items = []
        for code in codes:
            item = new_dataset({}, ds._parent_encoding, ds._read_implicit, ds._read_little)
            put_value(item, _CODE_VALUE, "SH", [code.value])
            put_value(item, _CODING_SCHEME_DESIGNATOR, "SH", [code.scheme])
            put_value(item, _CODE_MEANING, "LO", [code.meaning])
            items.append(item)
        key = tag_key(_DEIDENTIFICATION_METHOD_CODE_SEQUENCE)
        ds._dict[key] = DataElement(key, "SQ", Sequence(items))


class _Walk:
    """One :meth:`Deidentifier.apply` call: its state, and the walk over the object's elements.

    The state is what every step needs: the de-identifier (profile, tokens),
    the record of changes, the date offset, the text scrubber, the UID map and
    the sequence path of the dataset being walked.
    """

    def __init__(
        self,
        deidentifier: Deidentifier,
        record: Record,
        offset: int | None,
        scrubber: Scrubber | None,
        remap: Callable[[str], str],
    ) -> None:
        self.deidentifier = deidentifier
        self.note = record.noted.append
        #: The date offset in seconds; None when dates are not shifted.
        self.offset = offset
        #: Cleans text (C); built from the object as it arrived, None when nothing is cleaned.
        self.scrubber = scrubber
        self.remap = remap
        #: The (sequence tag, item index) pairs leading to the dataset being walked.
        self.path: ItemPath = ()
        #: How many sequences the profile cleans (C) the walk is inside.
        self.cleaning = 0
        #: Paired TM elements of the dataset being walked, shifted after their DA partner.
        self.later: list[BaseTag] = []

    def level(self, ds: Dataset) -> None:
        """Process one dataset or item; its paired TMs move once their DA partners have."""
        outer, self.later = self.later, []
        self._elements(ds)
        for tag in self.later:  # the DA partners have read them as they came: shift them now
            self._shift_now(ds, tag, "TM")
        self.later = outer

    def _elements(self, ds: Dataset) -> None:
        private: list[int] = []
        actions = self.deidentifier._actions
        # Dataset._dict holds the elements as read (raw until converted);
        # going through it directly skips a Tag() conversion per element.
        for key, elem in list(ds._dict.items()):
            tag = int(key)
            if tag & 0x10000:
                private.append(tag)
                continue
            action = actions.get(tag)
            if action is None:
                if not tag & 0xFFFF:  # group length: wrong once anything changes
                    del ds[key]
                    continue
                action = self.deidentifier._pattern_action(tag)
                if action is None:
                    self._keep_unlisted(ds, key, vr_of(elem))
                    continue
            self._apply(ds, key, vr_of(elem), action)
        if private:
            self._private(ds, private)

    def _keep_unlisted(self, ds: Dataset, tag: BaseTag, vr: str) -> None:
        """An attribute Table E.1-1 does not list: keep it, but clean inside and shift dates."""
        if vr == "SQ":
            self._items(ds, tag)
        elif self.offset is not None and vr in ("DA", "DT", "TM"):
            self._shift(ds, tag, vr)
        elif self.cleaning and vr in _FREE_TEXT_VRS and self.scrubber is not None:
            _scrub(ds, tag, vr, self.scrubber)

    def _apply(self, ds: Dataset, tag: BaseTag, vr: str, action: Action) -> None:
        self.note((self.path, int(tag), action))
        if action is Action.X:
            del ds[tag]
        elif action is Action.Z:
            put_value(ds, tag, vr, b"")
        elif vr == "SQ":
            # K, C, D and U on a sequence: apply the profile to every item;
            # under C, free text the table does not list is cleaned as well.
            cleans = int(action is Action.C)
            self.cleaning += cleans
            self._items(ds, tag)
            self.cleaning -= cleans
        elif action is Action.K:
            pass
        elif action is Action.U or vr == "UI":
            self._remap(ds, tag, vr)
        elif action is Action.D:
            put_value(ds, tag, vr, self.deidentifier.dummy(tag, vr, ds, self.remap))
        else:
            self._clean(ds, tag, vr)

    def _items(self, ds: Dataset, tag: BaseTag) -> None:
        """Walk every item of the sequence *tag*, each at its own path."""
        outer = self.path
        for index, item in enumerate(ds[tag].value or ()):
            self.path = (*outer, (int(tag), index))
            self.level(item)
        self.path = outer

    def _remap(self, ds: Dataset, tag: BaseTag, vr: str) -> None:
        if vr != "UI":
            put_value(ds, tag, vr, self.deidentifier.dummy(tag, vr, ds, self.remap))
            return
        values = [self.remap(v) for v in text_values(ds, tag)] or [self.remap("")]
        put_value(ds, tag, vr, values)

    def _shift(self, ds: Dataset, tag: BaseTag, vr: str) -> None:
        """Shift a DA, TM or DT; a TM whose DA partner is present waits until the DA moved."""
        if vr == "TM" and TIME_DATE_PAIRS.get(int(tag), -1) in ds._dict:
            self.later.append(tag)
            return
        self._shift_now(ds, tag, vr)

    def _shift_now(self, ds: Dataset, tag: BaseTag, vr: str) -> None:
        assert self.offset is not None
        partner = DATE_TIME_PAIRS.get(int(tag)) if vr == "DA" else None
        times = text_values(ds, partner) if partner is not None else None
        try:
            shifted = shift_values(vr, text_values(ds, tag), self.offset, times)
        except ValueError:
            log.debug("(%04X,%04X): unparsable %s removed", tag >> 16, tag & 0xFFFF, vr)
            del ds[tag]
            return
        put_value(ds, tag, vr, shifted)

    def _clean(self, ds: Dataset, tag: BaseTag, vr: str) -> None:
        """C: keep a value of similar meaning that carries no identity."""
        if vr in ("DA", "DT", "TM"):
            if self.offset is not None:
                self._shift(ds, tag, vr)
        elif vr == "PN":
            put_value(ds, tag, vr, self.deidentifier.dummy(tag, vr, ds, self.remap))
        elif vr == "AE":
            # E.3.8: an AE title is replaced by one keyed token wherever it occurs.
            titles = text_values(ds, tag)
            if titles:
                token = self.deidentifier._token
                put_value(ds, tag, vr, [token(_ANY_AE_TITLE, t) for t in titles])
        elif vr in _TEXT_VRS:
            if self.scrubber is not None:
                _scrub(ds, tag, vr, self.scrubber)
        elif vr in BINARY_VRS:
            # A binary value cannot be cleaned here; removing it is the safe choice.
            del ds[tag]

    def _private(self, ds: Dataset, tags: list[int]) -> None:
        """Private elements: keep the safe ones of known creators (when retained), drop the rest."""
        safe = self.deidentifier.profile.safe_private
        creators: dict[tuple[int, int], str] = {}
        if safe:
            for tag in tags:
                element = tag & 0xFFFF
                if 0x10 <= element <= 0xFF:
                    creators[(tag >> 16, element)] = str(ds[tag].value).strip()
        kept_blocks: set[tuple[int, int]] = set()
        for tag in tags:
            group, element = tag >> 16, tag & 0xFFFF
            if element >= 0x1000:
                creator = creators.get((group, element >> 8))
                if creator is not None and (group, element & 0xFF, creator) in safe:
                    kept_blocks.add((group, element >> 8))
                    self.note((self.path, tag, Action.K))
                    continue
                self.note((self.path, tag, Action.X))
                del ds[tag]
        for tag in tags:
            group, element = tag >> 16, tag & 0xFFFF
            if element < 0x1000 and (group, element) not in kept_blocks:
                del ds[tag]


def _scrub(ds: Dataset, tag: BaseTag, vr: str, scrubber: Scrubber) -> None:
    """Clean the text values of *tag* in *ds* (decoded in the object's character set).

    A value the scrubber leaves as it is stays as read (raw bytes).
    """
    texts = _raw_texts(ds, tag, vr)
    if texts is None:
        value = ds[tag].value
        if not value:
            return
        texts = [str(v) for v in value] if isinstance(value, MultiValue | list) else [str(value)]
    cleaned = [scrubber.scrub(text) for text in texts]
    if cleaned != texts:
        put_value(ds, tag, vr, cleaned)


def _raw_texts(ds: Dataset, tag: BaseTag, vr: str) -> list[str] | None:
    """The values of a raw text element decoded without pydicom; None when that is not possible."""
    elem = ds._dict.get(tag)
    if not isinstance(elem, RawDataElement) or elem.value is None:
        return None
    codec = simple_codec(ds)
    if codec is None:
        return None
    try:
        text = elem.value.decode(codec)
    except UnicodeDecodeError:
        return None
    parts = [text] if vr in _SINGLE_VALUED_TEXT else text.split("\\")
    return [part.rstrip("\x00 ") for part in parts]
