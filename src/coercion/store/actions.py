"""``pseudonymize:SCOPE``: de-identify with the scope's pseudonym, UID map and date offset.

The object is de-identified as ``deidentify:`` does (the options of the
``options`` parameter, plus the Modified Dates option unless Full Dates is
named), except that the patient gets the scope's pseudonym, every UID
(references included) goes through the scope's map, and dates move by the
patient's offset in the scope. What is needed to go back (the patient's
replaced demographics, the UIDs, the study-level values) is recorded, sealed,
in the store.
"""

from __future__ import annotations

from collections.abc import Mapping

from pydicom.dataset import Dataset

from coercion.elements import text_values
from coercion.engine.context import EventContext
from coercion.engine.registry import ActionEnv, register_scheme
from coercion.engine.rules import RuleAction
from coercion.errors import ConfigError, RuleFailedError
from coercion.profile import Change, Deidentifier, Option, compile_profile, parse_options
from coercion.store.store import PseudonymStore, ScopeSettings

__all__ = ["PseudonymizeAction", "open_store"]

_DEMOGRAPHICS = ("PatientName", "PatientBirthDate", "PatientSex", "OtherPatientIDs")
_STUDY_LEVEL = ("AccessionNumber", "StudyID", "StudyDate", "StudyTime")
_PARAMETERS = ("options",)


def _text(ds: Dataset, keyword: str) -> str:
    from pydicom.datadict import tag_for_keyword

    tag = tag_for_keyword(keyword)
    return "" if tag is None else "\\".join(text_values(ds, tag))


def open_store(env: ActionEnv, url: str) -> PseudonymStore:
    """The store at *url*, opened once per environment."""
    key = ("store", url)
    found = env.cache.get(key)
    if not isinstance(found, PseudonymStore):
        found = PseudonymStore(url, env.secret)
        env.cache[key] = found
    return found


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
        patient_id = _text(ds, "PatientID")
        if not patient_id:
            raise RuleFailedError(
                f"pseudonymize:{self.scope_name}: the object has no Patient ID to pseudonymise"
            )
        scope = open_store(self.env, self.url).scope(self.scope_name, self.settings)
        demographics = {k: v for k in _DEMOGRAPHICS if (v := _text(ds, k))}
        study = {k: v for k in _STUDY_LEVEL if (v := _text(ds, k))}
        original_study = _text(ds, "StudyInstanceUID")
        patient = scope.patient(patient_id, _text(ds, "IssuerOfPatientID"), demographics)
        seen: list[str] = []

        def remap(uid: str) -> str:
            seen.append(uid)
            return scope.derive_uid(uid)

        record = self.deidentifier.apply(ds, remap=remap, date_offset=patient.date_offset)
        ds.PatientID = patient.pseudonym_id
        ds.PatientName = patient.pseudonym_name
        scope.map_uids(seen)
        if original_study:
            scope.record_study(scope.derive_uid(original_study), patient, study)
        return record.changes


def _pseudonymize(spec: str, params: Mapping[str, str], env: ActionEnv) -> RuleAction:
    scope = spec.strip()
    settings = env.scopes.get(scope)
    if settings is None:
        known = ", ".join(sorted(env.scopes)) or "none"
        raise ValueError(
            f"pseudonymize: no scope {scope!r} in the directory (coercionPseudonymScope "
            f"entries: {known})"
        )
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
    deidentifier = Deidentifier(compile_profile(frozenset(options)), env.secret)
    url = env.store_urls.get(scope) or env.store_url
    return PseudonymizeAction(deidentifier, scope, settings, url, env)


register_scheme("pseudonymize", _pseudonymize)
