"""``use-calling-aet-as:TARGET``: put the calling AE title where it is absent or empty.

The targets are dcm4chee-arc's:

- ``ScheduledStationAETitle``: Scheduled Station AE Title (0040,0001) in the
  first item of the Scheduled Procedure Step Sequence, made when absent (with
  the other return keys of a worklist query, empty, when the item is new), so
  that a worklist query returns the caller's own items;
- ``SendingApplicationEntityTitleOfSeries``: dcm4chee-arc's private
  attribute (7777,xx37) of creator ``DCM4CHEE Archive 5``.
"""

from __future__ import annotations

from collections.abc import Mapping

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from coercion.engine.context import EventContext
from coercion.engine.registry import ActionEnv, register_scheme
from coercion.engine.rules import RuleAction
from coercion.profile import Action, Change

__all__ = ["UseCallingAETAction"]

_SPS_SEQUENCE = 0x00400100
_STATION_AE = 0x00400001
_PRIVATE_CREATOR = "DCM4CHEE Archive 5"
_PRIVATE_GROUP = 0x7777
_PRIVATE_ELEMENT = 0x37
#: The keys of a new Scheduled Procedure Step item (dcm4chee-arc's list), returned empty.
_SPS_KEYS = (
    "Modality",
    "AnatomicalOrientationType",
    "ReferencedDefinedProtocolSequence",
    "ReferencedPerformedProtocolSequence",
    "RequestedContrastAgent",
    "ScheduledProcedureStepStartDate",
    "ScheduledProcedureStepStartTime",
    "ScheduledProcedureStepEndDate",
    "ScheduledProcedureStepEndTime",
    "ScheduledPerformingPhysicianName",
    "ScheduledProcedureStepDescription",
    "ScheduledProtocolCodeSequence",
    "ScheduledProcedureStepID",
    "ScheduledPerformingPhysicianIdentificationSequence",
    "ScheduledStationName",
    "ScheduledProcedureStepLocation",
    "PreMedication",
    "ScheduledProcedureStepStatus",
    "CommentsOnTheScheduledProcedureStep",
)
TARGETS = ("ScheduledStationAETitle", "SendingApplicationEntityTitleOfSeries")


class UseCallingAETAction:
    """The action of ``use-calling-aet-as:``."""

    def __init__(self, target: str) -> None:
        self.target = target

    def apply(self, ds: Dataset, ctx: EventContext) -> list[Change]:
        """Put the calling AE title into the target when it has no value."""
        if not ctx.calling_ae:
            return []
        if self.target == "ScheduledStationAETitle":
            return _station(ds, ctx.calling_ae)
        block = ds.private_block(_PRIVATE_GROUP, _PRIVATE_CREATOR, create=True)
        tag = block.get_tag(_PRIVATE_ELEMENT)
        if tag in ds and ds[tag].value:
            return []
        block.add_new(_PRIVATE_ELEMENT, "AE", ctx.calling_ae)
        return [Change((), int(tag), Action.D)]


def _station(ds: Dataset, calling_ae: str) -> list[Change]:
    if _SPS_SEQUENCE not in ds or ds[_SPS_SEQUENCE].VR != "SQ" or ds[_SPS_SEQUENCE].value is None:
        ds.add_new(_SPS_SEQUENCE, "SQ", Sequence())
    seq = ds[_SPS_SEQUENCE].value
    if not seq:
        seq.append(Dataset())
    item = seq[0]
    if _STATION_AE in item and item[_STATION_AE].value:
        return []
    if len(item) == 0:  # a new item: the return keys of a worklist query, empty
        for keyword in _SPS_KEYS:
            setattr(item, keyword, [] if keyword.endswith("Sequence") else None)
    item.add_new(_STATION_AE, "AE", calling_ae)
    return [Change(((_SPS_SEQUENCE, 0),), _STATION_AE, Action.D)]


def _use_calling_aet_as(spec: str, params: Mapping[str, str], env: ActionEnv) -> RuleAction:
    target = spec.strip()
    if target not in TARGETS:
        raise ValueError(
            f"use-calling-aet-as: {target!r} is not a target; use {' or '.join(TARGETS)}"
        )
    if params:
        raise ValueError(
            f"use-calling-aet-as: unknown parameter {', '.join(sorted(params))}; it takes none"
        )
    return UseCallingAETAction(target)


register_scheme("use-calling-aet-as", _use_calling_aet_as)
