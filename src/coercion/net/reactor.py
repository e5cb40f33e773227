"""Event-driven reactor loops for pynetdicom's association threads.

pynetdicom 3.0 runs two polling loops per association: the DUL thread sleeps
1 ms whenever it finds nothing to do, and the acceptor's reactor sleeps 1 ms
before every look at its message queue. A C-STORE therefore waits up to about
3 ms in sleeps (the request coming in, the handler being called, the response
going out), several times what storing a small object costs. The loops here
do the same work in the same order, but wait on what they are waiting for:

* the DUL thread waits in ``select()`` on the association's socket and on a
  wake-up pipe that :meth:`DULServiceProvider.send_pdu` writes to, so that
  incoming PDUs and outgoing primitives are handled at once;
* an acceptor's reactor waits on its DIMSE message queue;
* a requestor's reactor idles while marked paused, and takes a message only
  after it has marked itself running and seen that no ``send_*()`` call has
  paused it since (see :func:`_run_requestor`).

Both still wake at least every ``_TICK`` seconds to check timers, kills,
releases and aborts, as the polling loops do. :func:`install` replaces the
loops of pynetdicom 3.0.x only; with another version it leaves pynetdicom as
it is (correct, only slower).
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
from pynetdicom.association import Association
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu import A_ABORT_RQ

__all__ = ["install"]

log = logging.getLogger(__name__)

#: The longest a loop waits before it checks its timers and flags again (seconds).
_TICK = 0.005
_SUPPORTED = ("3.0.",)
#: Where a DUL provider keeps its wake-up pipe while its thread runs.
_WAKEUP = "_coercion_wakeup"
_lock = threading.Lock()
_installed = False


def install() -> bool:
    """Use the event-driven loops for every association from now on; False if not supported."""
    global _installed  # noqa: PLW0603 - once per process
    with _lock:
        if _installed:
            return True
        if not pynetdicom.__version__.startswith(_SUPPORTED):
            log.info("pynetdicom %s: its polling reactor loops are kept", pynetdicom.__version__)
            return False
        original_send = DULServiceProvider.send_pdu
        DULServiceProvider.run_reactor = _run_dul  # type: ignore[method-assign]
        DULServiceProvider.send_pdu = _waking(original_send)  # type: ignore[method-assign]
        Association._run_reactor = _run_reactor  # type: ignore[method-assign]
        _installed = True
        return True


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


def _waking(send_pdu: Callable[..., None]) -> Callable[..., None]:
    def send_and_wake(self: Any, primitive: Any) -> None:
        send_pdu(self, primitive)
        wakeup = self.__dict__.get(_WAKEUP)
        if wakeup is not None:  # else the DUL thread has not started yet, or has ended
            wakeup.wake()

    send_and_wake.__doc__ = send_pdu.__doc__
    return send_and_wake


def _run_dul(self: Any) -> None:
    """The DUL loop: encode and send, or receive and decode, then run one state-machine event."""
    self._idle_timer.start()
    wakeup = self.__dict__[_WAKEUP] = _Wakeup()
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
                elif self._is_transport_event():
                    self._idle_timer.restart()
            except Exception as exc:  # the class only: a message could quote received data
                log.error("DUL reactor failed (%s); aborting the association", type(exc).__name__)
                _abort(self)
                return
            try:
                event = self.event_queue.get(block=False)
            except queue.Empty:
                _wait(self, wakeup)
                continue
            self.state_machine.do_action(event)
    finally:
        self.__dict__.pop(_WAKEUP, None)
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
        select.select(readable, [], [], _TICK)
    except (OSError, ValueError):
        threading.Event().wait(_TICK)  # the socket went away: the next loop sees it
    wakeup.drain()


def _abort(dul: Any) -> None:
    """Send an A-ABORT past the state machine and stop both threads (as pynetdicom does)."""
    pdu = A_ABORT_RQ()
    pdu.source = 0x02
    pdu.reason_diagnostic = 0x00
    dul.socket.send(pdu.encode())
    dul.assoc.is_aborted = True
    dul.assoc.is_established = False
    dul.assoc._kill = True
    dul._kill_thread = True


# -- the acceptor's reactor --------------------------------------------------------------------


def _run_reactor(self: Any) -> None:
    """The association's reactor: the acceptor's loop or the requestor's."""
    if self.is_acceptor:
        _run_acceptor(self)
    else:
        _run_requestor(self)


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
