"""Accepting a connection: the TLS handshake and socket timeouts, in the connection's own thread.

pynetdicom wraps an accepted socket in TLS inside its accept loop, so one
peer that connects and sends nothing (or half a ClientHello) stalls every
other connection until it gives up. The request handler here runs in the
thread pynetdicom starts for each connection (``ThreadingMixIn``): it does the
handshake there, bounded by the TLS handshake timeout, logs a refused
handshake with the peer's address and the reason, and gives pynetdicom the
socket with a send timeout so that a peer that stops reading cannot hold an
association thread forever.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
from collections.abc import Callable

from pynetdicom.transport import RequestHandler

from coercion.net.limits import NetworkLimits

__all__ = ["request_handler"]

log = logging.getLogger(__name__)


def request_handler(
    tls: ssl.SSLContext | None, limits: Callable[[], NetworkLimits]
) -> type[RequestHandler]:
    """A pynetdicom request handler class using *tls* (None: plain TCP) and the current *limits*."""

    class AcceptHandler(RequestHandler):
        """Handshake (if TLS), set the socket's timeout, then hand over to pynetdicom."""

        def handle(self) -> None:
            sock = self.request
            assert isinstance(sock, socket.socket)
            current = limits()
            if tls is not None:
                wrapped = _handshake(tls, sock, self.client_address[0], current)
                if wrapped is None:
                    return
                self.request = sock = wrapped
            sock.settimeout(current.network_timeout)
            super().handle()

    return AcceptHandler


def _handshake(
    tls: ssl.SSLContext, sock: socket.socket, address: str, limits: NetworkLimits
) -> ssl.SSLSocket | None:
    """The TLS socket after a handshake within the timeout; None (logged, closed) if refused."""
    sock.settimeout(limits.tls_handshake_timeout)
    wrapped: ssl.SSLSocket | None = None
    try:
        wrapped = tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        wrapped.do_handshake()
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or type(exc).__name__
        log.warning("TLS handshake from %s refused: %s", address, reason)
        for opened in (wrapped, sock):
            with contextlib.suppress(OSError):
                if opened is not None:
                    opened.close()
        return None
    return wrapped
