"""Ask a worklist SCP for items: one C-FIND of Modality Worklist over its own association."""

from __future__ import annotations

import ssl

from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import ModalityWorklistInformationFind  # type: ignore[attr-defined]
from pynetdicom.status import code_to_category

from coercion.errors import RuleFailedError
from coercion.net import adapt

__all__ = ["find_worklist_items"]

_PENDING = "Pending"
_SUCCESS = "Success"


def find_worklist_items(
    calling_ae: str,
    called_ae: str,
    host: str,
    port: int,
    query: Dataset,
    tls: tuple[ssl.SSLContext, str] | None = None,
    timeout: float = 30,
) -> list[Dataset]:
    """The items *called_ae* at *host*:*port* answers to *query*; RuleFailedError when it fails.

    *tls* (a client context and the server name to verify) makes the association use TLS.
    """
    ae = AE(ae_title=calling_ae or "COERCION")
    ae.network_timeout = ae.acse_timeout = ae.dimse_timeout = timeout
    ae.add_requested_context(ModalityWorklistInformationFind)
    assoc = ae.associate(
        host, port, ae_title=called_ae, tls_args=tls, evt_handlers=adapt.requestor_handlers()
    )
    if not assoc.is_established:
        raise RuleFailedError(
            f"merge-mwl: the worklist SCP {called_ae} at {host}:{port} refused or is unreachable",
            kind="worklist SCP unreachable",
        )
    items: list[Dataset] = []
    try:
        for status, identifier in assoc.send_c_find(query, ModalityWorklistInformationFind):
            category = code_to_category(int(getattr(status, "Status", 0xC000)))
            if category == _PENDING and identifier is not None:
                items.append(identifier)
            elif category != _PENDING:
                if category != _SUCCESS:
                    raise RuleFailedError(
                        f"merge-mwl: the worklist SCP {called_ae} answered {category}",
                        kind="worklist query failed",
                    )
                break
    finally:
        if assoc.is_established:
            assoc.release()
    return items
