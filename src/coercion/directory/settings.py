"""The node device's settings, typed: read once from its entry, for every part of the node.

Each field is one attribute of the device entry (``coercionDevice``, validated
by its schema beforehand); one left out takes the default here. A new
configuration (a directory change) brings a new :class:`DeviceSettings`.

The network limits (timeouts, association counts, PDU and object sizes) let a
port scan, a load balancer's health checks or a few dozen idle or half-open
connections pass without locking out a legitimate sender: a connection that
has not sent its whole A-ASSOCIATE-RQ within :attr:`NetworkLimits.request_timeout`
seconds is closed, and only associations (not bare connections) count against
:attr:`NetworkLimits.max_associations`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from coercion.defaults import DATA_DIRECTORY

__all__ = [
    "DEFAULT_INTERVAL",
    "LIMIT_SETTINGS",
    "DeviceSettings",
    "NetworkLimits",
    "device_settings",
    "limits_from",
]

#: Seconds between two checks of the directory when neither the caller nor the device says.
DEFAULT_INTERVAL = 2.0


@dataclass(frozen=True)
class NetworkLimits:
    """What a peer may take of the node; times in seconds, sizes in bytes."""

    #: From the TCP connection to the whole A-ASSOCIATE-RQ (the ARTIM timer of PS3.8 9.1.5).
    request_timeout: float = 10
    #: A TLS handshake, from the TCP connection on.
    tls_handshake_timeout: float = 10
    #: Waiting for an A-ASSOCIATE, A-RELEASE or A-ABORT answer.
    acse_timeout: float = 30
    #: Waiting for a DIMSE message.
    dimse_timeout: float = 60
    #: An established association that receives no whole PDU for this long is aborted.
    network_timeout: float = 60
    #: Associations at the same time, from every peer together.
    max_associations: int = 64
    #: Associations at the same time from one remote address.
    max_associations_per_host: int = 48
    #: The Maximum Length Received the node announces; a longer P-DATA-TF PDU is aborted.
    max_pdu_length: int = 1 << 20
    #: A received data set beyond this size aborts the association.
    max_object_size: int = 4 << 30


#: Device attribute -> field of :class:`NetworkLimits`.
LIMIT_SETTINGS: dict[str, str] = {
    "coercionAssociationRequestTimeout": "request_timeout",
    "coercionTLSHandshakeTimeout": "tls_handshake_timeout",
    "coercionACSETimeout": "acse_timeout",
    "coercionDIMSETimeout": "dimse_timeout",
    "coercionNetworkTimeout": "network_timeout",
    "coercionMaxAssociations": "max_associations",
    "coercionMaxAssociationsPerHost": "max_associations_per_host",
    "coercionMaxPDULength": "max_pdu_length",
    "coercionMaxObjectSize": "max_object_size",
}


def limits_from(settings: Mapping[str, object]) -> NetworkLimits:
    """The limits a device entry's settings give."""
    types = {f.name: f.type for f in fields(NetworkLimits)}
    values: dict[str, Any] = {}
    for attribute, name in LIMIT_SETTINGS.items():
        value = settings.get(attribute)
        if value is not None:
            values[name] = float(str(value)) if types[name] == "float" else int(str(value))
    return NetworkLimits(**values)


@dataclass(frozen=True)
class DeviceSettings:
    """The node device's settings."""

    #: coercionDataDirectory: objects, queues, audit trail, MPPS records, the snapshot.
    data_directory: str = DATA_DIRECTORY
    #: coercionStoreURL: the pseudonym store ("": SQLite in the data folder).
    store_url: str = ""
    #: coercionPollInterval: seconds between two checks of the directory.
    poll_interval: float = DEFAULT_INTERVAL
    #: coercionRestrictCallingAETitles: only known peers' AE titles may call.
    restrict_calling_ae_titles: bool = False
    #: coercionWorklistAETitle: the worklist SCP asked instead of the local folder ("": none).
    worklist_ae_title: str = ""
    #: coercionSyncWrites: objects are on disk (fsynced) before success is answered.
    sync_writes: bool = True
    limits: NetworkLimits = field(default_factory=NetworkLimits)


def device_settings(settings: Mapping[str, object]) -> DeviceSettings:
    """The typed settings of a device entry's ``coercion*`` attributes."""
    return DeviceSettings(
        data_directory=str(settings.get("coercionDataDirectory") or DATA_DIRECTORY),
        store_url=str(settings.get("coercionStoreURL") or ""),
        poll_interval=max(float(str(settings.get("coercionPollInterval", DEFAULT_INTERVAL))), 0.1),
        restrict_calling_ae_titles=bool(settings.get("coercionRestrictCallingAETitles")),
        worklist_ae_title=str(settings.get("coercionWorklistAETitle") or ""),
        sync_writes=settings.get("coercionSyncWrites") is not False,
        limits=limits_from(settings),
    )
