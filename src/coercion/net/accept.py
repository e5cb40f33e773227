"""Accepting a connection: the TLS handshake and socket timeouts, in the connection's own thread.

pynetdicom wraps an accepted socket in TLS inside its accept loop, so one
peer that connects and sends nothing (or half a ClientHello) stalls every
other connection until it gives up. The request handler here runs in the
thread pynetdicom starts for each connection (``ThreadingMixIn``): it does the
handshake there, bounded by the TLS handshake timeout, logs a refused
handshake with the peer's address and the reason, and gives pynetdicom the
socket with a send timeout so that a peer that stops reading cannot hold an
association thread forever.

A connection gets an association (threads, state machine) only once its
first byte is in: one closed at once (a port scan, a health check) or silent
for the association request timeout is closed without one. A peer that sent
part of its A-ASSOCIATE-RQ then has the same timeout again for the rest
(pynetdicom's ARTIM timer).
"""

from __future__ import annotations

import contextlib
import logging
import select
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
            if not _first_byte(sock, current.request_timeout):
                _close(sock)  # closed or silent: no association is set up
                return
            sock.settimeout(current.network_timeout)
            super().handle()

    return AcceptHandler


def _first_byte(sock: socket.socket, timeout: float) -> bool:
    """Whether the peer sends something within *timeout* seconds (False: silent or closed)."""
    tls = isinstance(sock, ssl.SSLSocket)
    if isinstance(sock, ssl.SSLSocket) and sock.pending():
        return True
    try:
        poller = select.poll()  # not select(): descriptors past 1023 are fine
        poller.register(sock, select.POLLIN)
        if not poller.poll(timeout * 1000):
            return False
        return tls or sock.recv(1, socket.MSG_PEEK) != b""  # a TLS record: the DUL reads it
    except (OSError, ValueError):
        return False


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


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
        _close(wrapped if wrapped is not None else sock)
        return None
    return wrapped
