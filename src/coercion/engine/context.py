"""The event context: which DIMSE event a dataset belongs to, as rules see it."""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["Dimse", "EventContext", "Role"]


class Dimse(enum.StrEnum):
    """The DIMSE messages whose datasets rules can coerce."""

    C_STORE_RQ = "C_STORE_RQ"
    C_FIND_RQ = "C_FIND_RQ"
    C_FIND_RSP = "C_FIND_RSP"
    N_CREATE_RQ = "N_CREATE_RQ"
    N_SET_RQ = "N_SET_RQ"


class Role(enum.StrEnum):
    """This node's own role in the exchange, as ``dicomTransferRole`` means it."""

    SCU = "SCU"
    SCP = "SCP"


@dataclass(frozen=True)
class EventContext:
    """Where a dataset is in the archive's traffic.

    ``calling_ae`` and ``called_ae`` are the association's AE titles (the
    calling AE is the sending application entity); the hosts are the remote
    peer's and this node's. The batch command line builds the same context
    (C_STORE_RQ, SCP) from its options.
    """

    dimse: Dimse
    role: Role
    calling_ae: str = ""
    called_ae: str = ""
    remote_host: str = ""
    local_host: str = ""
    sop_class_uid: str = ""

    @property
    def local_ae(self) -> str:
        """This node's AE title in the association."""
        return self.called_ae if self.role is Role.SCP else self.calling_ae

    @property
    def sending_hostname(self) -> str:
        """The host of the calling (sending) side."""
        return self.remote_host if self.role is Role.SCP else self.local_host

    @property
    def receiving_hostname(self) -> str:
        """The host of the called (receiving) side."""
        return self.local_host if self.role is Role.SCP else self.remote_host

    def describe(self) -> str:
        """A one-line description for logs and messages (no PHI: AE titles and hosts only)."""
        return f"{self.dimse}/{self.role} {self.calling_ae or '-'} -> {self.called_ae or '-'}" + (
            f" SOP class {self.sop_class_uid}" if self.sop_class_uid else ""
        )
