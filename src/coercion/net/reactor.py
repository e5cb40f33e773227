"""Event-driven reactor loops for pynetdicom's association threads.

pynetdicom 3.0 runs two polling loops per association: the DUL thread sleeps
1 ms whenever it finds nothing to do, and the acceptor's reactor sleeps 1 ms
before every look at its message queue. A C-STORE therefore waits up to about
3 ms in sleeps (the request coming in, the handler being called, the response
going out), several times what storing a small object costs. The loops here
do the same work in the same order, but wait on what they are waiting for:

* the DUL thread waits in ``poll()`` on the association's socket and on a
  wake-up pipe that :meth:`DULServiceProvider.send_pdu` writes to, so that
  incoming PDUs and outgoing primitives are handled at once;
* an acceptor's reactor waits on its DIMSE message queue;
* a requestor's reactor idles while marked paused, and takes a message only
  after it has marked itself running and seen that no ``send_*()`` call has
  paused it since (see :func:`_run_requestor`).

The acceptor's reactor still wakes at least every ``_TICK`` seconds to check
releases and aborts, the DUL thread every ``_DUL_TICK`` seconds to check its
timers (:meth:`DULServiceProvider.stop_dul` wakes it at once), so that
a hundred idle connections cost little CPU.

Against hostile peers (see :mod:`coercion.net.limits` for the settings):

* the DUL thread reads PDUs with :class:`~coercion.net.receive.PduReader`,
  never blocking on a peer that sent half of one; an oversized or unknown PDU
  and a data set past the maximum object size get an A-ABORT; the network
  timeout counts from the last *whole* PDU, so a peer that dribbles bytes is
  aborted like an idle one; after an A-ABORT the connection is half-closed
  and what still comes is discarded, so that the peer gets the A-ABORT
  instead of a reset;
* an exception while handling a PDU (a garbage command set) aborts the
  association with an A-ABORT instead of ending the DUL thread;
* an acceptor waits for the A-ASSOCIATE-RQ only while the connection is open
  and at most the association request timeout, so closed and idle connections
  end their threads at once or soon.

Only the loops are here: :func:`coercion.net.adapt.install` puts them in
pynetdicom's place, for the pynetdicom versions they were written for only.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import select
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import pynetdicom
from pynetdicom.pdu import A_ABORT_RQ
from pynetdicom.pdu_primitives import A_ASSOCIATE

from coercion.net.receive import PduReader, close_transport, policy

__all__ = [
    "acceptor_or",
    "guarded_receive",
    "kill_dul",
    "run_acceptor_thread",
    "run_dul",
    "run_reactor",
    "stop_dul",
    "wake_on_send",
]

log = logging.getLogger(__name__)

#: The longest a loop waits before it checks its timers and flags again (seconds).
_TICK = 0.005
#: The longest the DUL thread waits before it checks its timers again (seconds).
_DUL_TICK = 0.05
#: Where a DUL provider keeps its wake-up pipe while its thread runs.
_WAKEUP = "_coercion_wakeup"
#: Where the DUL provider keeps its PDU reader.
_READER = "_coercion_reader"


# -- the DUL thread ----------------------------------------------------------------------------


class _Wakeup:
    """A socket pair: one side written to wake the DUL thread, the other selected on."""

    def __init__(self) -> None:
        self.reader, self.writer = socket.socketpair()
        self.reader.setblocking(False)
        self.writer.setblocking(False)

    def wake(self) -> None:
        with contextlib.suppress(OSError):  # BlockingIOError: already awake (buffer full)
            self.writer.send(b"\x00")

    def drain(self) -> None:
        with contextlib.suppress(OSError):  # BlockingIOError: nothing (more) to read
            while self.reader.recv(4096):
                pass

    def close(self) -> None:
        self.reader.close()
        self.writer.close()


def wake_on_send(send_pdu: Callable[..., None]) -> Callable[..., None]:
    def send_and_wake(self: Any, primitive: Any) -> None:
        send_pdu(self, primitive)
        wakeup = self.__dict__.get(_WAKEUP)
        if wakeup is not None:  # else the DUL thread has not started yet, or has ended
            wakeup.wake()

    send_and_wake.__doc__ = send_pdu.__doc__
    return send_and_wake


def stop_dul(self: Any) -> bool:
    """Stop the DUL thread if it is idle (Sta1), waking it; True once it has ended."""
    if self.state_machine.current_state != "Sta1":
        return False
    self._kill_thread = True
    wakeup = self.__dict__.get(_WAKEUP)
    if wakeup is not None:
        wakeup.wake()
    if self.is_alive() and self is not threading.current_thread():
        self.join()
    return True


def kill_dul(self: Any) -> None:
    """Stop the DUL thread, waking it."""
    self._kill_thread = True
    wakeup = self.__dict__.get(_WAKEUP)
    if wakeup is not None:
        wakeup.wake()


def run_dul(self: Any) -> None:
    """The DUL loop: encode and send, or receive and decode, then run one state-machine event."""
    self._idle_timer.start()
    wakeup = self.__dict__[_WAKEUP] = _Wakeup()
    reader = self.__dict__[_READER] = PduReader(policy(self))
    try:
        while True:
            if not self.assoc._dul_ready.is_set():
                self.assoc._dul_ready.set()
            if self._kill_thread:
                break
            if self.artim_timer.expired:
                self.event_queue.put("Evt18")
            try:
                if self._process_recv_primitive():
                    pass
                elif reader.transport_event(self):
                    self._idle_timer.restart()
                event = self.event_queue.get(block=False)
            except queue.Empty:
                _wait(self, wakeup)
                continue
            except Exception as exc:  # the class only: a message could quote received data
                log.error("DUL reactor failed (%s); aborting the association", type(exc).__name__)
                _abort(self)
                return
            try:
                self.state_machine.do_action(event)
                if event == "Evt10":
                    reader.check_data_set(self)
            except Exception as exc:  # a garbage command set, say: never a traceback
                log.warning(
                    "invalid PDU from %s (%s); aborting the association",
                    self.assoc.requestor.address,
                    type(exc).__name__,
                )
                _abort(self)
                return
    finally:
        self.__dict__.pop(_WAKEUP, None)
        self.__dict__.pop(_READER, None)
        wakeup.close()


def _wait(dul: Any, wakeup: _Wakeup) -> None:
    """Wait until data comes in, a primitive is queued for sending, or a tick has passed."""
    if not dul.to_provider_queue.empty():
        return
    readable: list[Any] = [wakeup.reader]
    raw = getattr(dul.socket, "socket", None)
    if raw is not None and dul.socket._is_connected:
        pending = getattr(raw, "pending", None)
        if pending is not None and pending():
            return  # TLS data already decrypted: read it now
        readable.append(raw)
    try:
        poller = select.poll()  # not select(): descriptors past 1023 are fine
        for sock in readable:
            poller.register(sock, select.POLLIN)
        poller.poll(_DUL_TICK * 1000)
    except (OSError, ValueError):
        threading.Event().wait(_TICK)  # the socket went away: the next loop sees it
    wakeup.drain()


def _abort(dul: Any) -> None:
    """Send an A-ABORT past the state machine, close, stop both threads (as pynetdicom does)."""
    pdu = A_ABORT_RQ()
    pdu.source = 0x02
    pdu.reason_diagnostic = 0x00
    sock = dul.socket
    if sock is not None and sock.socket is not None:
        sock.send(pdu.encode())
        close_transport(sock)
    dul.assoc.is_aborted = True
    dul.assoc.is_established = False
    dul.assoc._kill = True
    dul._kill_thread = True


def guarded_receive(receive: Callable[[Any, Any], None]) -> Callable[[Any, Any], None]:
    """DIMSE's handling of a P-DATA, where an invalid command set becomes an A-ABORT."""

    def receive_primitive(self: Any, primitive: Any) -> None:
        try:
            receive(self, primitive)
        except Exception as exc:  # the class only: a message could quote received data
            log.warning(
                "invalid DIMSE message from %s (%s); aborting the association",
                self.assoc.requestor.address,
                type(exc).__name__,
            )
            self.message = None
            reader = self.dul.__dict__.get(_READER)
            if reader is not None:
                reader.broken = True
            self.dul.event_queue.put("Evt19")  # an invalid PDU: A-ABORT (PS3.8 AA-8)

    receive_primitive.__doc__ = receive.__doc__
    return receive_primitive


# -- the acceptor's reactor --------------------------------------------------------------------


def run_reactor(self: Any) -> None:
    """The association's reactor: the acceptor's loop or the requestor's."""
    if self.is_acceptor:
        _run_acceptor(self)
    else:
        _run_requestor(self)


def acceptor_or(
    original: Callable[[Any], None], acceptor: Callable[[Any], None]
) -> Callable[[Any], None]:
    """*acceptor* for an acceptor's association thread, *original* for a requestor's."""

    def either(self: Any) -> None:
        if not self.is_acceptor:
            original(self)  # negotiates, then runs Association._run_reactor (the requestor's loop)
            return
        acceptor(self)

    either.__doc__ = original.__doc__
    return either


def run_acceptor_thread(self: Any) -> None:
    """An acceptor's thread: the A-ASSOCIATE-RQ, the negotiation, then the reactor loop."""
    self.dul.artim_timer.timeout = policy(self.dul).limits.request_timeout
    self.dul.start()
    self._started_dul = True
    self._dul_ready.wait()
    primitive = _await_request(self)
    if primitive is not None:
        self.requestor.primitive = primitive
        pynetdicom.evt.trigger(self, pynetdicom.evt.EVT_REQUESTED, {})
        if not self.is_aborted and not self.is_rejected and not self._kill:
            self.acse.negotiate_association()
        if self.is_established:
            _run_acceptor(self)
    else:
        self.kill()
    sock = self.dul.socket
    if self._server is not None and sock is not None and sock.socket is not None:
        self._server.shutdown_request(sock.socket)


def _await_request(self: Any) -> Any:
    """The A-ASSOCIATE-RQ primitive; None when the connection ended or timed out first."""
    deadline = time.monotonic() + policy(self.dul).limits.request_timeout + 1
    while True:
        primitive = self.dul.receive_pdu(wait=True, timeout=0.05)
        if primitive is not None:
            return primitive if isinstance(primitive, A_ASSOCIATE) else None
        sock = self.dul.socket
        if sock is None or sock.socket is None or not self.dul.is_alive():
            return None  # closed (port scan, ARTIM expiry, invalid first PDU)
        if time.monotonic() > deadline:
            close_transport(sock)  # ARTIM should have done it: Evt17, the DUL goes to Sta1
            return None


def _run_acceptor(self: Any) -> None:
    """The acceptor loop: serve each DIMSE request as it arrives; watch release and abort."""
    self._is_paused = False
    messages = self.dimse.msg_queue
    while not self._kill:
        self._is_paused = True
        self._reactor_checkpoint.wait()
        self._is_paused = False
        try:
            context_id, message = messages.get(timeout=_TICK)
        except queue.Empty:
            message = None
        if message:
            self._serve_request(message, context_id)
        if _finished(self):
            return


def _finished(self: Any) -> bool:
    """Release, abort, a dead DUL thread or the network timeout: True when the loop ends."""
    if self.is_established and self.acse.is_release_requested():
        self.acse.send_release(is_response=True)
        self.is_released = True
        self.is_established = False
        pynetdicom.evt.trigger(self, pynetdicom.evt.EVT_RELEASED, {})
        self.kill()
        return True
    if self.acse.is_aborted():
        self.dul.receive_pdu(wait=False)  # EVT_ACSE_RECV fires for its subscribers
        self.is_aborted = True
        self.is_established = False
        pynetdicom.evt.trigger(self, pynetdicom.evt.EVT_ABORTED, {})
        self.kill()
        return True
    if not self.dul.is_alive():
        self.kill()
        return True
    if self.dul.idle_timer_expired():
        log.error("network timeout reached")
        if self.network_timeout_response == "A-RELEASE":
            self._is_paused = True
            self._reactor_checkpoint.wait()
            self.release()
            self._is_paused = False
        else:
            self.abort()
        self.kill()
        return True
    return False


# -- the requestor's reactor -------------------------------------------------------------------


def _run_requestor(self: Any) -> None:
    """The requestor loop: like pynetdicom's, but never takes a response a ``send_*()`` awaits.

    A requestor's ``send_*()`` call pauses this loop (clears
    ``_reactor_checkpoint``, then waits until ``_is_paused``), sends, takes the
    answer from the DIMSE queue itself and resumes the loop. pynetdicom's loop
    leaves ``_is_paused`` True from the moment it wakes at the checkpoint until
    it runs again: a ``send_*()`` that starts in that gap sees "paused" and
    goes on, and the loop then takes that call's response off the queue and
    drops it ("unexpected C-STORE service message"); the call waits out its
    DIMSE timeout and aborts, though the peer has stored the object. The
    faster DUL loop answers within that gap about once in 600 C-STOREs.

    Here the loop marks itself running, then looks at the checkpoint again:
    a ``send_*()`` that saw "paused" had cleared the checkpoint before, so the
    loop sees it cleared and pauses again without touching the queue. The
    loop also idles while marked paused, so a ``send_*()`` never waits on it.
    """
    checkpoint = self._reactor_checkpoint
    while not self._kill:
        self._is_paused = True
        time.sleep(_TICK)
        checkpoint.wait()
        self._is_paused = False
        if not checkpoint.is_set():
            continue  # a send_*() started in the gap: the queue is its own
        context_id, message = self.dimse.get_msg(block=False)
        if message:
            self._serve_request(message, context_id)
        if _finished(self):
            return
