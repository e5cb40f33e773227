"""Every adaptation of pynetdicom in one place, checked against the versions it was written for.

pynetdicom is used as it is, except where this module says otherwise:

* **identifiers are never logged** (they are PHI), nor are pynetdicom's
  standard logging handlers bound (the C-STORE one reads a received data set
  whole into memory just to say "Present");
* **a C-STORE from a file** sends the file's data set bytes as they are, read
  in chunks (``STORE_SEND_CHUNKED_DATASET``): nothing is decoded or held in memory;
* **TCP_NODELAY** on every connection: the listening socket (accepted sockets
  inherit it) and, through an ``EVT_CONN_OPEN`` handler, each outgoing one.
  pynetdicom never sets it, so each DIMSE exchange waits on Nagle's algorithm
  and delayed ACKs (about 40 ms);
* **the server**: a listen backlog for bursts of connections, daemon
  connection threads, the supported contexts shared instead of deep-copied
  per connection, a request handler of our own (:mod:`coercion.net.accept`),
  and a socket bound beforehand may be handed in (one handed in non-blocking,
  shared by the worker processes of :mod:`coercion.net.workers`, stays so);
* **event-driven loops** for the association threads, and bounded reads
  (:mod:`coercion.net.reactor`, :mod:`coercion.net.receive`): these reach into
  pynetdicom's internals and are installed for :data:`SUPPORTED` versions only.
  With another version :func:`install` logs one warning and leaves pynetdicom's
  own loops (correct, only slower and without those bounds).
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Any, cast

import pynetdicom
from pynetdicom import _config, evt
from pynetdicom.association import Association
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dul import DULServiceProvider
from pynetdicom.transport import RequestHandler, ThreadedAssociationServer

from coercion.net import reactor
from coercion.net.receive import close_transport

__all__ = [
    "SUPPORTED",
    "close_pending",
    "install",
    "requestor_handlers",
    "set_nodelay",
    "start_server",
    "supported",
]

log = logging.getLogger(__name__)

#: The pynetdicom versions the internal adaptations were written for (prefixes).
SUPPORTED = ("3.0.",)
_lock = threading.Lock()
_warned = False
_installed = False

# Identifiers are PHI: pynetdicom must never log them.
_config.LOG_REQUEST_IDENTIFIERS = False
_config.LOG_RESPONSE_IDENTIFIERS = False
# Nor bind its standard logging handlers: their lines go nowhere (pynetdicom logs at WARNING,
# see coercion.cli.logs), and the C-STORE one reads a received data set whole into memory,
# spooled or not (``msg.data_set.getvalue()``), just to say "Present".
_config.LOG_HANDLER_LEVEL = "none"
# send_c_store(path): the file's data set bytes, sent in chunks as they are (pynetdicom >= 2.0).
_config.STORE_SEND_CHUNKED_DATASET = True


def supported() -> bool:
    """Whether the installed pynetdicom is one the internal adaptations were written for."""
    return str(pynetdicom.__version__).startswith(SUPPORTED)


def install() -> bool:
    """Install the event-driven loops if pynetdicom's version is supported; False otherwise.

    Otherwise one warning is logged (once per process) and pynetdicom keeps its own loops.
    """
    global _warned, _installed  # noqa: PLW0603 - once per process
    if supported():
        with _lock:
            if not _installed:
                _install_loops()
                _installed = True
        return True
    with _lock:
        if not _warned:
            _warned = True
            log.warning(
                "pynetdicom %s: the adaptations written for %s are off; its own polling loops "
                "run (slower, and without the bounds on partial PDUs)",
                pynetdicom.__version__,
                ", ".join(f"{v}x" for v in SUPPORTED),
            )
    return False


def _install_loops() -> None:
    """Put :mod:`.reactor`'s loops in pynetdicom's place, for every association from now on."""
    original_send = DULServiceProvider.send_pdu
    original_run = Association.run_reactor
    DULServiceProvider.run_reactor = reactor.run_dul  # type: ignore[method-assign]
    DULServiceProvider.send_pdu = reactor.wake_on_send(original_send)  # type: ignore[method-assign]
    Association._run_reactor = reactor.run_reactor  # type: ignore[method-assign]
    Association.run_reactor = reactor.acceptor_or(original_run, reactor.run_acceptor_thread)  # type: ignore[method-assign,assignment]
    DULServiceProvider.stop_dul = reactor.stop_dul  # type: ignore[method-assign]
    DULServiceProvider.kill_dul = reactor.kill_dul  # type: ignore[method-assign]
    receive = DIMSEServiceProvider.receive_primitive
    DIMSEServiceProvider.receive_primitive = reactor.guarded_receive(receive)  # type: ignore[method-assign,assignment]


def set_nodelay(event: evt.Event) -> None:
    """``EVT_CONN_OPEN`` handler: TCP_NODELAY on the association's socket."""
    sock = getattr(getattr(event.assoc.dul, "socket", None), "socket", None)
    if sock is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError as exc:  # the connection is already gone: nothing to tune
            log.debug("TCP_NODELAY not set (%s)", exc.__class__.__name__)


def requestor_handlers() -> list[Any]:
    """The event handlers for ``AE.associate(..., evt_handlers=...)``: TCP_NODELAY."""
    return [(evt.EVT_CONN_OPEN, set_nodelay)]


class _SharedContexts(list[Any]):
    """The server's supported contexts, given to each association as they are.

    pynetdicom deep-copies them for every connection (about 170 ms of CPU for
    every storage SOP class in every transfer syntax); an acceptor only reads
    them while it negotiates, so one list serves every association.
    """

    def __deepcopy__(self, memo: dict[int, Any]) -> list[Any]:
        return list(self)


class _Server(ThreadedAssociationServer):
    """pynetdicom's server with a listen backlog for bursts of connections (it has 5).

    Its connection threads (waiting for a TLS handshake or a first byte) do not
    hold up the end of the process. With :attr:`adopted`, it listens on that
    socket (bound beforehand) instead of binding one of its own. An adopted
    socket that is non-blocking is listened on by several processes: when
    another one took the connection that woke this one up, ``accept()`` finds
    none and the server waits again (a timeout would hold its loop up instead).
    """

    request_queue_size = socket.SOMAXCONN
    daemon_threads = True
    adopted: socket.socket | None = None

    def server_bind(self) -> None:
        """Bind, or take the adopted socket (already bound)."""
        if self.adopted is None:
            super().server_bind()
            return
        cast(socket.socket, self.socket).close()
        self.socket = self.adopted
        shared = self.adopted.gettimeout() == 0.0
        if self.ae.network_timeout is not None and not shared:  # as pynetdicom's server_bind
            self.socket.settimeout(self.ae.network_timeout)
        self.server_address = self.adopted.getsockname()


def start_server(
    ae: Any,
    listen: tuple[str, int] | socket.socket,
    handlers: list[Any],
    handler: type[RequestHandler],
) -> ThreadedAssociationServer:
    """``ae.start_server(address, block=False, ...)`` with the request handler class *handler*.

    *listen* is an address to bind, or a socket bound beforehand (it is listened on).
    pynetdicom's ``start_server`` takes no request handler; this does what it
    does with one (``make_server`` passes it on to the server class). The
    listening socket gets TCP_NODELAY, which accepted sockets inherit.
    """
    server_class: type[_Server] = _Server
    address = listen
    if isinstance(listen, socket.socket):
        server_class = type("_AdoptedServer", (_Server,), {"adopted": listen})
        address = listen.getsockname()[:2]
    server: ThreadedAssociationServer = ae.make_server(
        address, evt_handlers=handlers, server_class=server_class, request_handler=handler
    )
    server.contexts = _SharedContexts(server.contexts)
    cast(socket.socket, server.socket).setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    servers = getattr(ae, "_servers", None)  # pynetdicom's list: ae.shutdown() stops them
    if isinstance(servers, list):
        servers.append(server)
    thread = threading.Thread(target=server.serve_forever, name="AcceptorServer", daemon=True)
    thread.start()
    return server


def close_pending(ae: Any, wait: float = 2.0) -> None:
    """Close the connections *ae* accepted that have no association yet; wait for their threads."""
    pending = [a for a in ae.active_associations if a.is_acceptor and not a.is_established]
    for assoc in pending:
        sock = assoc.dul.socket
        if sock is not None and sock.socket is not None:
            close_transport(sock)  # Evt17: the DUL goes back to Sta1, the thread ends
    deadline = time.monotonic() + wait
    for assoc in pending:
        assoc.join(max(deadline - time.monotonic(), 0))
