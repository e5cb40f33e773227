"""Reading PDUs and data sets from a peer within the node's limits, never blocking.

Used by the DUL loop of :mod:`coercion.net.reactor` (pynetdicom 3.0.x): a PDU
is read as its bytes come; a PDU longer than this side announced (its Maximum
Length Received for P-DATA-TF, ``OTHER_PDU_MAX`` for the others) or of an
unknown type is refused at its header, without reading its body; a data set
being received moves to a temporary file past ``SPOOL_AFTER`` bytes and is
refused past the maximum object size. A refusal queues the state machine's
Evt19 (invalid PDU): an A-ABORT, then the connection is closed.
"""

from __future__ import annotations

import contextlib
import logging
import mmap
import os
import socket
import ssl
import struct
import tempfile
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

from coercion.dicom.outputs import copy_descriptor
from coercion.net.limits import NetworkLimits

__all__ = ["PduReader", "SpooledDataSet", "close_transport", "configure", "policy"]

log = logging.getLogger(__name__)

#: The largest PDU other than P-DATA-TF accepted (an A-ASSOCIATE-RQ with many contexts).
OTHER_PDU_MAX = 1 << 20
_P_DATA_TF = 0x04
#: The most read from a socket at once.
_CHUNK = 1 << 18
#: A data set larger than this is kept in a temporary file while it comes in.
SPOOL_AFTER = 16 << 20


@dataclass(frozen=True)
class Policy:
    """The limits of an AE's associations and where their large data sets go."""

    limits: NetworkLimits
    spool: Path | None


_policies: weakref.WeakKeyDictionary[Any, Policy] = weakref.WeakKeyDictionary()
_DEFAULT = Policy(NetworkLimits(), None)


def configure(ae: Any, limits: NetworkLimits, spool: Path | None = None) -> None:
    """The limits for the associations *ae* accepts from now on; large data sets go to *spool*."""
    _policies[ae] = Policy(limits, spool)


def policy(dul: Any) -> Policy:
    """The policy of a DUL provider's AE (the defaults for an AE never configured)."""
    return _policies.get(dul.assoc.ae, _DEFAULT)


class SpooledDataSet(BytesIO):
    """A received data set kept in a temporary file (deleted when closed or collected).

    It passes for the :class:`~io.BytesIO` that pynetdicom's primitives require;
    its in-memory buffer stays empty. :meth:`getvalue` reads the whole file;
    :meth:`copy_to` writes it to a file descriptor and :meth:`mapped` maps it,
    without holding it in memory.
    """

    def __init__(self, folder: Path | None) -> None:
        super().__init__()
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
        self.file = tempfile.TemporaryFile(dir=folder, prefix="incoming-")  # noqa: SIM115

    def write(self, data: Any) -> int:
        """Append *data* to the file."""
        return self.file.write(data)

    def tell(self) -> int:
        """The position in the file."""
        return self.file.tell()

    def seek(self, offset: int, whence: int = 0) -> int:
        """Move in the file."""
        return self.file.seek(offset, whence)

    def read(self, size: int | None = -1) -> bytes:
        """Read from the file."""
        return self.file.read(size)

    def getvalue(self) -> bytes:
        """The whole data set (read into memory)."""
        end = self.file.tell()
        self.file.seek(0)
        try:
            return self.file.read()
        finally:
            self.file.seek(end)

    def copy_to(self, fd: int) -> None:
        """Write the whole data set to *fd* (copied by the kernel, never held in memory)."""
        self.file.flush()
        copy_descriptor(self.file.fileno(), fd)

    @contextlib.contextmanager
    def mapped(self) -> Iterator[mmap.mmap | bytes]:
        """The whole data set as a read-only memory map: pages are read where touched."""
        self.file.flush()
        if os.fstat(self.file.fileno()).st_size == 0:
            yield b""  # an empty file cannot be mapped
            return
        with mmap.mmap(self.file.fileno(), 0, access=mmap.ACCESS_READ) as view:
            yield view

    def close(self) -> None:
        """Delete the file."""
        self.file.close()
        super().close()


class PduReader:
    """Reads one PDU at a time from a DUL provider's socket, without ever blocking."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.buffer = bytearray()
        self.length: int | None = None  # of the PDU being read, once its header is in
        self.broken = False  # an invalid PDU was seen: nothing more is read
        self.half_closed = False

    def transport_event(self, dul: Any) -> bool:
        """Read what is there; True when a whole PDU (or the connection's end) was queued."""
        sock = dul.socket
        if sock is None or sock.socket is None or not sock._is_connected:
            return False
        if dul.state_machine.current_state == "Sta13":
            if self.broken and not isinstance(sock.socket, ssl.SSLSocket):
                return self._drain(sock)
            if self.broken or not sock.ready:
                close_transport(sock)  # awaiting the close: what is still to come is not read
                return True
        elif self.broken:
            return False
        want = 6 - len(self.buffer) if self.length is None else 6 + self.length - len(self.buffer)
        chunk = _recv_now(sock.socket, min(want, _CHUNK))
        if chunk is None:
            return False
        if not chunk:
            close_transport(sock)  # queues Evt17
            return True
        self.buffer += chunk
        if self.length is None:
            return self._header(dul)
        return self._body(dul)

    def _drain(self, sock: Any) -> bool:
        """After an A-ABORT: half-close, discard what still comes, close at the peer's close.

        Closing at once with unread data would reset the connection, and the
        peer could lose the A-ABORT; the ARTIM timer bounds the wait.
        """
        if not self.half_closed:
            self.half_closed = True
            with contextlib.suppress(OSError):
                sock.socket.shutdown(socket.SHUT_WR)
        chunk = _recv_now(sock.socket, _CHUNK)
        if chunk == b"":
            close_transport(sock)
            return True
        return False

    def _header(self, dul: Any) -> bool:
        if len(self.buffer) < 6:
            return False
        pdu_type, _, length = struct.unpack(">BBL", self.buffer[:6])
        cap = _p_data_cap(dul, self.policy) if pdu_type == _P_DATA_TF else OTHER_PDU_MAX
        if not 0x01 <= pdu_type <= 0x07:
            return self._invalid(dul, f"unknown PDU type 0x{pdu_type:02X}")
        if length > max(cap, 6):
            return self._invalid(dul, f"a PDU of {length} bytes (at most {cap})")
        self.length = length
        return self._body(dul)

    def _body(self, dul: Any) -> bool:
        if self.length is None or len(self.buffer) < 6 + self.length:
            return False
        data, self.buffer, self.length = self.buffer, bytearray(), None
        try:
            pdu, event = dul._decode_pdu(data)
        except Exception as exc:  # malformed: the class only (the message may quote data)
            return self._invalid(dul, f"an undecodable PDU ({type(exc).__name__})")
        dul.event_queue.put(event)
        dul._recv_pdu.put(pdu)
        return True

    def _invalid(self, dul: Any, what: str) -> bool:
        log.warning("%s from %s; aborting the association", what, dul.assoc.requestor.address)
        self.broken = True
        self.buffer, self.length = bytearray(), None
        dul.event_queue.put("Evt19")  # A-ABORT, then the connection is closed (Sta13)
        return True

    def check_data_set(self, dul: Any) -> None:
        """Spool a large data set being received; abort beyond the maximum object size."""
        message = getattr(dul.assoc.dimse, "message", None)
        data = getattr(message, "data_set", None)
        if not isinstance(data, BytesIO):
            return
        size = data.tell()
        if size > self.policy.limits.max_object_size:
            log.warning(
                "data set from %s longer than %d bytes (coercionMaxObjectSize); aborting",
                dul.assoc.requestor.address,
                self.policy.limits.max_object_size,
            )
            message.data_set = BytesIO()  # type: ignore[union-attr]
            data.close()
            self.broken = True
            dul.event_queue.put("Evt19")
        elif size > SPOOL_AFTER and not isinstance(data, SpooledDataSet):
            spooled = SpooledDataSet(self.policy.spool)
            spooled.write(data.getbuffer())
            message.data_set = spooled  # type: ignore[union-attr]
            data.close()


def close_transport(sock: Any) -> None:
    """Close an association's socket (queues Evt17), even when its shutdown fails.

    pynetdicom's ``AssociationSocket.close()`` skips closing the socket when
    shutting it down raises (the peer is gone), and forgets it either way.
    """
    raw = sock.socket
    sock.close()
    if raw is not None:
        with contextlib.suppress(OSError):
            raw.close()


def _p_data_cap(dul: Any, policy: Policy) -> int:
    """The longest P-DATA-TF accepted: the Maximum Length Received this side announced."""
    assoc = dul.assoc
    local = assoc.acceptor if assoc.is_acceptor else assoc.requestor
    announced = int(local.maximum_length or 0)
    return announced or policy.limits.max_pdu_length  # 0 announced "no limit": ours then


def _recv_now(raw: socket.socket, size: int) -> bytes | None:
    """Up to *size* bytes already received; None if none yet, b"" at the connection's end."""
    try:
        timeout = raw.gettimeout()
        raw.settimeout(0.0)
    except OSError:
        return b""
    try:
        return raw.recv(size)
    except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
        return None
    except OSError:
        return b""
    finally:
        with contextlib.suppress(OSError):
            raw.settimeout(timeout)
