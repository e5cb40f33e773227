"""``pseudonymize:SCOPE``: de-identify with the scope's pseudonym, UID map and date offset.

The object is de-identified as ``deidentify:`` does (the options of the
``options`` parameter, plus the Modified Dates option unless Full Dates is
named), except that the patient gets the scope's pseudonym, every UID
(references included) goes through the scope's map, dates and times move by
the patient's offset (seconds) in the scope, and dummy tokens are derived in
the scope's key scope. What is needed to go back (the patient's
replaced demographics, the UIDs, the study-level values) is recorded, sealed,
in the store.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag

from coercion.dicom.elements import joined_text, text_values
from coercion.engine.context import EventContext
from coercion.engine.registry import ActionEnv, register_scheme
from coercion.engine.rules import RuleAction
from coercion.errors import ConfigError, RuleFailedError
from coercion.profile import (
    Action,
    Change,
    CompiledProfile,
    Deidentifier,
    ItemPath,
    Option,
    compile_profile,
    parse_options,
)
from coercion.profile.dates import DATE_TIME_PAIRS, TIME_DATE_PAIRS, shift_values
from coercion.store.store import PseudonymStore, ScopeSettings

__all__ = ["PseudonymizeAction", "ReidentifyAction", "open_store"]

_DEMOGRAPHICS = ("PatientName", "PatientBirthDate", "PatientSex", "OtherPatientIDs")
_STUDY_LEVEL = ("AccessionNumber", "StudyID", "StudyDate", "StudyTime")
_PARAMETERS = ("options",)


def open_store(env: ActionEnv, url: str) -> PseudonymStore:
    """The store at *url*, opened once per environment."""
    return env.shared(("store", url), PseudonymStore, lambda: PseudonymStore(url, env.secret))


class PseudonymizeAction:
    """The action of ``pseudonymize:SCOPE``."""

    def __init__(
        self,
        deidentifier: Deidentifier,
        scope: str,
        settings: ScopeSettings,
        url: str,
        env: ActionEnv,
    ) -> None:
        self.deidentifier = deidentifier
        self.scope_name = scope
        self.settings = settings
        self.url = url
        self.env = env

    def apply(self, ds: Dataset, ctx: EventContext) -> list[Change]:
        """Pseudonymise *ds* in place and record what is needed to go back."""
        patient_id = joined_text(ds, "PatientID")
        if not patient_id:
            raise RuleFailedError(
                f"pseudonymize:{self.scope_name}: the object has no Patient ID to pseudonymise",
                kind="no Patient ID",
            )
        scope = open_store(self.env, self.url).scope(self.scope_name, self.settings)
        demographics = {k: v for k in _DEMOGRAPHICS if (v := joined_text(ds, k))}
        study = {k: v for k in _STUDY_LEVEL if (v := joined_text(ds, k))}
        original_study = joined_text(ds, "StudyInstanceUID")
        patient = scope.patient(patient_id, joined_text(ds, "IssuerOfPatientID"), demographics)
        seen: list[str] = []

        def remap(uid: str) -> str:
            seen.append(uid)
            return scope.derive_uid(uid)

        record = self.deidentifier.apply(ds, remap=remap, date_offset=patient.date_offset_seconds)
        ds.PatientID = patient.pseudonym_id
        ds.PatientName = patient.pseudonym_name
        scope.map_uids(seen)
        if original_study:
            scope.record_study(scope.derive_uid(original_study), patient, study)
        return record.changes

    def retention(self, ctx: EventContext) -> CompiledProfile:
        """What the output keeps on purpose (for verification): the compiled options."""
        return self.deidentifier.profile


class ReidentifyAction:
    """The action of ``reidentify:SCOPE``: the way back for objects returning from the scope."""

    def __init__(self, scope: str, settings: ScopeSettings, url: str, env: ActionEnv) -> None:
        self.scope_name = scope
        self.settings = settings
        self.url = url
        self.env = env

    def apply(self, ds: Dataset, ctx: EventContext) -> list[Change]:
        """Restore identity, UIDs and study-level values; refuse an unknown pseudonym."""
        scope = open_store(self.env, self.url).scope(self.scope_name, self.settings)
        pseudonym = joined_text(ds, "PatientID")
        known = scope.known_patient(pseudonym) if pseudonym else None
        if known is None:
            raise RuleFailedError(
                f"reidentify:{self.scope_name}: the object's Patient ID is not a pseudonym of "
                "this scope; refused",
                kind="unknown pseudonym",
            )
        patient, originals = known
        study = scope.original_study(joined_text(ds, "StudyInstanceUID")) or {}
        shifted = joined_text(ds, "LongitudinalTemporalInformationModified") == "MODIFIED"
        changes: list[Change] = []
        uids: dict[str, str | None] = {}

        def original(uid: str) -> str | None:
            if uid not in uids:
                uids[uid] = scope.original_uid(uid)
            return uids[uid]

        _restore(ds, (), original, -patient.date_offset_seconds if shifted else 0, changes)
        for keyword in ("PatientID", "IssuerOfPatientID", *_DEMOGRAPHICS, *_STUDY_LEVEL):
            value = originals.get(keyword) or study.get(keyword)
            if value:
                setattr(ds, keyword, value.split("\\") if "\\" in value else value)
                changes.append(Change((), int(Tag(keyword)), Action.D))
        ds.PatientIdentityRemoved = "NO"
        for keyword in ("DeidentificationMethod", "DeidentificationMethodCodeSequence"):
            if keyword in ds:
                delattr(ds, keyword)
                changes.append(Change((), int(Tag(keyword)), Action.X))
        return changes


def _restore(
    ds: Dataset,
    path: ItemPath,
    original: Callable[[str], str | None],
    seconds: int,
    changes: list[Change],
) -> None:
    """Put back original UIDs (those the scope made) and shift dates and times back, at every depth.

    A TM whose DA partner is present moves after it: the DA moves with the TM's value as it came.
    """
    later: list[int] = []
    for key, stored in list(ds._dict.items()):
        if isinstance(stored, RawDataElement) and stored.value is None:
            continue  # a deferred bulk value (pixel data): nothing to restore there
        elem = ds[key]
        tag = int(key)
        if elem.VR == "SQ":
            for index, item in enumerate(elem.value or ()):
                _restore(item, (*path, (tag, index)), original, seconds, changes)
        elif elem.VR == "UI" and elem.value and tag != 0x00080016:
            values = list(elem.value) if elem.VM > 1 else [str(elem.value)]
            restored = [original(v) or v for v in values]
            if restored != values:
                elem.value = restored if len(restored) > 1 else restored[0]
                changes.append(Change(path, tag, Action.U))
        elif seconds and elem.VR in ("DA", "DT", "TM") and elem.value:
            if elem.VR == "TM" and TIME_DATE_PAIRS.get(tag, -1) in ds._dict:
                later.append(tag)
            else:
                _shift_back(ds, path, tag, seconds, changes)
    for tag in later:
        _shift_back(ds, path, tag, seconds, changes)


def _shift_back(ds: Dataset, path: ItemPath, tag: int, seconds: int, changes: list[Change]) -> None:
    """Shift one DA, TM or DT element by *seconds*; a value that is not valid stays as it is."""
    elem = ds[tag]
    partner = DATE_TIME_PAIRS.get(tag) if elem.VR == "DA" else None
    times = text_values(ds, partner) if partner is not None else None
    try:
        moved = shift_values(elem.VR, text_values(ds, tag), seconds, times)
    except ValueError:
        return  # not a date or time: left as it is
    elem.value = moved if len(moved) > 1 else moved[0]
    changes.append(Change(path, tag, Action.C))


def _scope(scheme: str, spec: str, env: ActionEnv) -> tuple[str, ScopeSettings]:
    """The scope a URI names and its settings; ValueError naming the scopes there are."""
    scope = spec.strip()
    settings = env.scopes.get(scope)
    if settings is None:
        known = ", ".join(sorted(env.scopes)) or "none"
        raise ValueError(
            f"{scheme}: no scope {scope!r} in the directory (coercionPseudonymScope "
            f"entries: {known})"
        )
    return scope, settings


def _reidentify(spec: str, params: Mapping[str, str], env: ActionEnv) -> RuleAction:
    scope, settings = _scope("reidentify", spec, env)
    if params:
        raise ValueError(f"reidentify: takes no parameters (got {', '.join(sorted(params))})")
    return ReidentifyAction(scope, settings, env.store_urls.get(scope) or env.store_url, env)


def _pseudonymize(spec: str, params: Mapping[str, str], env: ActionEnv) -> RuleAction:
    scope, settings = _scope("pseudonymize", spec, env)
    unknown = sorted(set(params) - set(_PARAMETERS))
    if unknown:
        raise ValueError(
            f"pseudonymize: unknown parameter {', '.join(unknown)}; it takes "
            f"{', '.join(_PARAMETERS)} (the scope entry holds the templates and offsets)"
        )
    names = [n.strip() for n in params.get("options", "").split(",") if n.strip()]
    try:
        options = set(parse_options(names, where="pseudonymize options"))
    except ConfigError as exc:
        raise ValueError(str(exc)) from None
    if Option.RetainLongitudinalTemporalInformationFullDatesOption not in options:
        options.add(Option.RetainLongitudinalTemporalInformationModifiedDatesOption)
    # Dummy tokens (and UIDs outside the store's map) in the scope's own keys.
    deidentifier = Deidentifier(compile_profile(frozenset(options)), env.secret, scope)
    url = env.store_urls.get(scope) or env.store_url
    return PseudonymizeAction(deidentifier, scope, settings, url, env)


register_scheme("pseudonymize", _pseudonymize)
register_scheme("reidentify", _reidentify)
