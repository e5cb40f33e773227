"""The node's peers: the known AE titles' addresses, who may call, and the TLS contexts.

Every device of the directory but the node's own is a peer; its network AEs
give the host and port to reach (forwarding, the upstream worklist) and the
addresses a calling AE title may come from (``coercionRestrictCallingAETitles``).
A peer whose connection names TLS cipher suites is reached over TLS (PS3.15 Annex H.4.3).
"""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass, field
from pathlib import Path

from coercion.directory.config import Configuration

__all__ = ["Peers", "TLSFiles"]


@dataclass(frozen=True)
class TLSFiles:
    """The node's certificate and key (the listener uses TLS when given) and the CA
    certificates that peers' certificates must chain to (clients must then present one).
    """

    cert: Path | None = None
    key: Path | None = None
    ca: Path | None = None

    def server(self) -> ssl.SSLContext | None:
        """The listener's TLS context, or None for plain TCP."""
        if self.cert is None:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert, self.key)
        if self.ca is not None:
            context.load_verify_locations(self.ca)
            context.verify_mode = ssl.CERT_REQUIRED
        return context

    def client(self) -> ssl.SSLContext:
        """The TLS context for outgoing associations to peers whose connection uses TLS."""
        context = ssl.create_default_context(cafile=str(self.ca) if self.ca is not None else None)
        if self.cert is not None:
            context.load_cert_chain(self.cert, self.key)
        return context


@dataclass(frozen=True)
class Peers:
    """The peers of one configuration (a new one is made when it changes)."""

    configuration: Configuration | None = None
    #: The client TLS context for peers whose connection uses TLS.
    tls_context: ssl.SSLContext | None = None
    addresses: dict[str, tuple[str, int]] = field(default_factory=dict)
    tls_peers: frozenset[str] = frozenset()

    @classmethod
    def of(cls, configuration: Configuration, tls_context: ssl.SSLContext | None) -> Peers:
        """The peers *configuration* knows."""
        addresses = {
            ae.title: (ae.hostname, ae.port)
            for device in configuration.devices.values()
            if device is not configuration.device
            for ae in device.aes
            if ae.hostname and ae.port
        }
        tls = frozenset(
            ae.title for device in configuration.devices.values() for ae in device.aes if ae.tls
        )
        return cls(configuration, tls_context, addresses, tls)

    def address(self, ae_title: str) -> tuple[str, int] | None:
        """Host and port of a known AE title."""
        return self.addresses.get(ae_title)

    def local_host(self, ae_title: str) -> str:
        """The configured host name of this node's AE *ae_title* ('' when it has none).

        It is the sending host of what the node sends from that AE (forwarding,
        upstream queries), as dcm4chee-arc takes its connection's host name.
        """
        if self.configuration is None:
            return ""
        hosts = [ae.hostname for ae in self.configuration.device.aes if ae.title == ae_title]
        return next((host for host in hosts if host), "")

    def tls_args(self, ae_title: str, host: str) -> tuple[ssl.SSLContext, str] | None:
        """pynetdicom's ``tls_args`` for an association with *ae_title*, or None for plain TCP."""
        if ae_title not in self.tls_peers:
            return None
        return self.tls_context or ssl.create_default_context(), host

    def known(self, calling: str, address: str) -> bool:
        """Whether *calling* is a peer's AE title that may call from *address*.

        An AE without a hostname may call from anywhere; otherwise the address
        must be one its hostname resolves to.
        """
        configuration = self.configuration
        if configuration is None:
            return False
        for device in configuration.devices.values():
            for ae in device.aes:
                if ae.title != calling or device is configuration.device:
                    continue
                if not ae.hostname:
                    return True
                try:
                    allowed = {info[4][0] for info in socket.getaddrinfo(ae.hostname, None)}
                except OSError:
                    allowed = {ae.hostname}
                if address in allowed:
                    return True
        return False
