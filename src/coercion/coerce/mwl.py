"""``merge-mwl:STYLESHEET``: merge the object's worklist item into it, as dcm4chee-arc does.

The item is found by the keys ``match-by`` names, taken from the object (for
``mwl-entity-to-merge=mpps`` from its Scheduled Step Attributes Sequence):

=============================  =================================================
``ScheduledProcedureStepID``   Study Instance UID and the Scheduled Procedure
  (default)                    Step ID of the Request Attributes Sequence
``StudyInstanceUID``           Study Instance UID
``AccessionNumber``            Accession Number (else Study Instance UID)
``PatientID``                  Patient ID with its issuer, and Accession Number
                               when the object has one
``PatientIDOnly``              Patient ID with its issuer
``PatientIDAccessionNumber``   Patient ID with its issuer and Accession Number
=============================  =================================================

Items come from the node's local worklist (the folder its worklist SCP
answers from), or with ``mwl-scp=AETITLE`` by C-FIND from that known
device's worklist SCP (``filter-by-scu=true`` checks its answers against the
keys again), over TLS when the device's connection names TLS cipher suites,
verified as the node verifies every peer (``--tls-ca``, its certificate
presented when it has one). ``local-mwl-status=SCHEDULED|ARRIVED`` keeps local items whose
step has one of these statuses. The newest item (by step start) goes through
the stylesheet (none given: the item as it is); the Request Attributes
Sequence (Scheduled Step Attributes Sequence for MPPS) gets one item per
matching worklist item; the result's attributes replace the object's.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Mapping
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from coercion.coerce.xslt import (
    Stylesheet,
    context_params,
    load_stylesheet,
    merge_result,
    parse_flag,
    transform,
)
from coercion.defaults import DATA_DIRECTORY
from coercion.dicom.elements import text_values
from coercion.engine.context import EventContext
from coercion.engine.registry import ActionEnv, register_scheme
from coercion.engine.rules import RuleAction
from coercion.errors import RuleFailedError
from coercion.profile import Change

__all__ = ["MATCH_KEYS", "PARAMETERS", "MergeMWLAction", "worklist_query"]

log = logging.getLogger(__name__)

MATCH_KEYS = (
    "PatientID",
    "PatientIDOnly",
    "PatientIDAccessionNumber",
    "AccessionNumber",
    "StudyInstanceUID",
    "ScheduledProcedureStepID",
)
#: The coercionParam names merge-mwl: takes (dcm4chee-arc's dcmCoercionParam names).
PARAMETERS = (
    "match-by",
    "mwl-scp",
    "local-mwl-status",
    "local-mwl-worklist-label",
    "mwl-entity-to-merge",
    "filter-by-scu",
    "xsl-no-keyword",
)
_STATUSES = (
    "SCHEDULED",
    "ARRIVED",
    "READY",
    "STARTED",
    "DEPARTED",
    "CANCELED",
    "DISCONTINUED",
    "COMPLETED",
)
_REQUEST_SEQ = 0x0040A370
_REQUEST_ATTRIBUTES = 0x00400275
_SCHEDULED_STEP_ATTRIBUTES = 0x00400270
_SPS = 0x00400100
#: Return keys asked of a worklist SCP besides the matching keys.
_RETURN_KEYS = (
    "SpecificCharacterSet",
    "AccessionNumber",
    "InstitutionName",
    "ReferringPhysicianName",
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientSex",
    "PatientSize",
    "PatientWeight",
    "StudyInstanceUID",
    "RequestedProcedureDescription",
    "RequestedProcedureID",
    "RequestingPhysician",
    "RequestingService",
    "AdmissionID",
    "ReasonForTheRequestedProcedure",
    "StudyDescription",
)
_RETURN_SEQUENCES = (
    "IssuerOfAccessionNumberSequence",
    "ReferencedStudySequence",
    "RequestedProcedureCodeSequence",
)
_SPS_RETURN_KEYS = (
    "Modality",
    "ScheduledStationAETitle",
    "ScheduledProcedureStepStartDate",
    "ScheduledProcedureStepStartTime",
    "ScheduledPerformingPhysicianName",
    "ScheduledProcedureStepDescription",
    "ScheduledProcedureStepID",
    "ScheduledProcedureStepStatus",
    "ScheduledStationName",
)


def _first(ds: Dataset | None, keyword: str) -> str:
    if ds is None:
        return ""
    from pydicom.datadict import tag_for_keyword

    tag = tag_for_keyword(keyword)
    values = text_values(ds, tag) if tag is not None else []
    return values[0] if values else ""


def _item(ds: Dataset, tag: int) -> Dataset | None:
    elem = ds.get(tag)
    return elem.value[0] if elem is not None and elem.VR == "SQ" and elem.value else None


def worklist_query(ds: Dataset, match_by: str, mpps: bool) -> Dataset:
    """The matching keys for *ds* as dcm4chee-arc's MergeMWLQueryParam takes them.

    Only keys the object has a value for are set: an empty data set means no key at all.
    """
    source = _item(ds, _SCHEDULED_STEP_ATTRIBUTES) if mpps else ds
    wanted: dict[str, str] = {}
    if match_by == "PatientID":
        match_by = "PatientIDAccessionNumber" if _first(ds, "AccessionNumber") else "PatientIDOnly"
    if match_by in ("PatientIDOnly", "PatientIDAccessionNumber"):
        wanted["PatientID"] = _first(ds, "PatientID")
        wanted["IssuerOfPatientID"] = _first(ds, "IssuerOfPatientID")
    if match_by in ("PatientIDAccessionNumber", "AccessionNumber"):
        wanted["AccessionNumber"] = _first(source, "AccessionNumber")
        if not wanted["AccessionNumber"]:
            wanted["StudyInstanceUID"] = _first(source, "StudyInstanceUID")
    if match_by in ("ScheduledProcedureStepID", "StudyInstanceUID"):
        wanted["StudyInstanceUID"] = _first(source, "StudyInstanceUID")
    keys = Dataset()
    for keyword, value in wanted.items():
        if value:
            setattr(keys, keyword, value)
    if match_by == "ScheduledProcedureStepID":
        request = source if mpps else _item(ds, _REQUEST_ATTRIBUTES)
        step_id = _first(request, "ScheduledProcedureStepID")
        if step_id:
            step = Dataset()
            step.ScheduledProcedureStepID = step_id
            keys.ScheduledProcedureStepSequence = Sequence([step])
    return keys


def _with_return_keys(keys: Dataset) -> Dataset:
    query = Dataset()
    for keyword in _RETURN_KEYS:
        setattr(query, keyword, "")
    for keyword in _RETURN_SEQUENCES:
        setattr(query, keyword, Sequence())
    step = Dataset()
    for keyword in _SPS_RETURN_KEYS:
        setattr(step, keyword, "")
    query.ScheduledProcedureStepSequence = Sequence([step])
    for elem in keys:
        if elem.VR == "SQ":
            for inner in elem.value[0]:
                step[inner.tag] = inner
        else:
            query[elem.tag] = elem
    return query


def _start(item: Dataset) -> str:
    step = _item(item, _SPS)
    return _first(step, "ScheduledProcedureStepStartDate") + _first(
        step, "ScheduledProcedureStepStartTime"
    )


class MergeMWLAction:
    """The action of ``merge-mwl:``."""

    def __init__(self, env: ActionEnv, stylesheet: Stylesheet | None, settings: dict[str, str]):
        self.env = env
        self.stylesheet = stylesheet
        self.match_by = settings["match-by"]
        self.scp = settings.get("mwl-scp", "")
        self.statuses = tuple(s for s in settings.get("local-mwl-status", "").split("|") if s)
        self.mpps = settings.get("mwl-entity-to-merge", "study") == "mpps"
        self.filter = settings.get("filter-by-scu") == "true"
        self.keywords = settings.get("xsl-no-keyword") != "true"

    def items(self, keys: Dataset, ctx: EventContext) -> list[Dataset]:
        """The worklist items matching *keys*: local, or from the worklist SCP."""
        from coercion.net.worklist import Worklist, matches

        if not self.scp:
            folder = Path(self.env.worklist_directory or f"{DATA_DIRECTORY}/worklist")
            found = [i for i in Worklist(folder).items() if matches(keys, i)]
            if self.statuses:
                found = [
                    i
                    for i in found
                    if _first(_item(i, _SPS), "ScheduledProcedureStepStatus") in self.statuses
                ]
            return found
        from coercion.net.mwlscu import find_worklist_items

        peer = (self.env.peers or {}).get(self.scp)
        address = peer.addresses.get(self.scp) if peer is not None else None
        if peer is None or address is None:
            raise RuleFailedError(
                f"merge-mwl: mwl-scp={self.scp} is not the AE title of a known device with host "
                "and port; add the worklist SCP's device to the directory",
                kind="worklist SCP unknown",
            )
        host, port = address
        tls = (
            (self.env.client_tls or ssl.create_default_context(), host)
            if self.scp in peer.tls
            else None
        )
        found = find_worklist_items(
            ctx.local_ae, self.scp, host, port, _with_return_keys(keys), tls
        )
        return [i for i in found if matches(keys, i)] if self.filter else found

    def apply(self, ds: Dataset, ctx: EventContext) -> list[Change]:
        """Merge the matching worklist items into *ds*; nothing when none matches."""
        keys = worklist_query(ds, self.match_by, self.mpps)
        if len(keys) == 0:  # nothing to match by: every item would match
            log.info("merge-mwl: the object has none of the keys of match-by=%s", self.match_by)
            return []
        items = sorted(self.items(keys, ctx), key=_start, reverse=True)
        log.info("merge-mwl: %d matching worklist items", len(items))
        if not items:
            return []
        sequence_tag = _SCHEDULED_STEP_ATTRIBUTES if self.mpps else _REQUEST_ATTRIBUTES
        result: Dataset | None = None
        for item in items:
            new = (
                transform(item, self.stylesheet, self.keywords, context_params(ctx), "merge-mwl")
                if self.stylesheet is not None
                else item
            )
            if result is None:
                result = new
            elif (extra := _item(new, sequence_tag)) is not None and sequence_tag in result:
                result[sequence_tag].value.append(extra)
        assert result is not None
        return merge_result(ds, result)


def _merge_mwl(spec: str, params: Mapping[str, str], env: ActionEnv) -> RuleAction:
    unknown = sorted(set(params) - set(PARAMETERS))
    if unknown:
        raise ValueError(
            f"merge-mwl: unknown parameter {', '.join(unknown)}; it takes {', '.join(PARAMETERS)}"
        )
    settings = dict(params)
    settings.setdefault("match-by", "ScheduledProcedureStepID")
    if settings["match-by"] not in MATCH_KEYS:
        raise ValueError(f"merge-mwl: match-by= takes one of {', '.join(MATCH_KEYS)}")
    if settings.get("mwl-entity-to-merge", "study") not in ("study", "mpps"):
        raise ValueError("merge-mwl: mwl-entity-to-merge= takes study or mpps")
    if "local-mwl-worklist-label" in settings:
        raise ValueError(
            "merge-mwl: local-mwl-worklist-label= is not supported: the node's worklist has no "
            "labels; use a worklist folder per rule set or mwl-scp="
        )
    for status in settings.get("local-mwl-status", "").split("|"):
        if status and status not in _STATUSES:
            raise ValueError(f"merge-mwl: local-mwl-status= takes {'|'.join(_STATUSES)}")
    for flag in ("filter-by-scu", "xsl-no-keyword"):
        settings[flag] = "true" if parse_flag("merge-mwl", params, flag) else "false"
    scp = settings.get("mwl-scp", "")
    if (
        scp
        and env.peers is not None
        and scp not in {t for t, p in env.peers.items() if t in p.addresses}
    ):
        raise ValueError(
            f"merge-mwl: mwl-scp={scp!r} is not the AE title of a known device with host and port"
        )
    stylesheet = load_stylesheet("merge-mwl", spec, env) if spec.strip() else None
    return MergeMWLAction(env, stylesheet, settings)


register_scheme("merge-mwl", _merge_mwl)
