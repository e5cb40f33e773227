"""Raw DICOM Upper Layer PDUs (PS3.8 9.3) for tests that play a hostile or broken peer.

Each function returns the bytes a peer would send; :class:`RawPeer` holds a
socket to the node and reads what it answers, with a deadline, never a sleep.
"""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import struct
import time
from dataclasses import dataclass, field

from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, ImplicitVRLittleEndian
from pynetdicom.dsutils import encode

VERIFICATION = "1.2.840.10008.1.1"
APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"
IMPLEMENTATION_CLASS = "1.2.826.0.1.3680043.99.7"
A_ASSOCIATE_AC = 0x02
A_ASSOCIATE_RJ = 0x03
A_ABORT = 0x07


def _item(kind: int, value: bytes) -> bytes:
    return struct.pack(">BBH", kind, 0, len(value)) + value


def associate_rq(
    called: str = "COERCION", calling: str = "RAWPEER", abstract: str = VERIFICATION
) -> bytes:
    """An A-ASSOCIATE-RQ PDU: one presentation context (id 1) in Implicit VR Little Endian."""
    context = bytes([1, 0, 0, 0]) + _item(0x30, abstract.encode())
    context += _item(0x40, ImplicitVRLittleEndian.encode())
    user = _item(0x51, struct.pack(">L", 16384)) + _item(0x52, IMPLEMENTATION_CLASS.encode())
    body = struct.pack(">HH", 1, 0) + called.ljust(16).encode() + calling.ljust(16).encode()
    body += bytes(32) + _item(0x10, APPLICATION_CONTEXT.encode())
    body += _item(0x20, context) + _item(0x50, user)
    return struct.pack(">BBL", 0x01, 0, len(body)) + body


def p_data(data: bytes, control: int, context_id: int = 1) -> bytes:
    """A P-DATA-TF PDU with one PDV (*control*: bit 0 command, bit 1 last fragment)."""
    pdv = struct.pack(">LBB", len(data) + 2, context_id, control) + data
    return struct.pack(">BBL", 0x04, 0, len(pdv)) + pdv


def p_data_header(length: int) -> bytes:
    """The header of a P-DATA-TF PDU announcing *length* bytes."""
    return struct.pack(">BBL", 0x04, 0, length)


def c_store_command(instance: str, message_id: int = 1) -> bytes:
    """The command set of a C-STORE-RQ for a CT object (Implicit VR Little Endian)."""
    command = Dataset()
    command.AffectedSOPClassUID = CTImageStorage
    command.CommandField = 0x0001
    command.MessageID = message_id
    command.Priority = 0
    command.CommandDataSetType = 0x0000
    command.AffectedSOPInstanceUID = instance
    body = encode(command, True, True)  # implicit VR little endian, as every command set
    assert body is not None
    return struct.pack("<HHLL", 0, 0, 4, len(body)) + body  # (0000,0000) CommandGroupLength


@dataclass
class RawPeer:
    """A connection to the node that speaks raw bytes; *received* gathers what the node sent."""

    sock: socket.socket
    received: bytearray = field(default_factory=bytearray)
    closed: bool = False

    @classmethod
    def connect(cls, port: int, tls: ssl.SSLContext | None = None) -> RawPeer:
        """Connect to 127.0.0.1:*port* (TLS handshake included if *tls*)."""
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        if tls is not None:
            sock = tls.wrap_socket(sock, server_hostname="127.0.0.1")
        return cls(sock)

    def send(self, data: bytes) -> bool:
        """Send *data*; False when the node has closed the connection."""
        try:
            self.sock.sendall(data)
        except OSError:
            self.closed = True
            return False
        return True

    def read_until_closed(self, deadline: float) -> bool:
        """Read until the node closes the connection; False if it is still open at *deadline*."""
        while not self.closed:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.poll(min(left, 0.5))
        return True

    def poll(self, wait: float) -> None:
        """Take what the node sent within *wait* seconds (noting a close)."""
        pending = isinstance(self.sock, ssl.SSLSocket) and self.sock.pending()
        if not pending and not select.select([self.sock], [], [], wait)[0]:
            return
        try:
            chunk = self.sock.recv(65536)
        except ssl.SSLWantReadError:
            return
        except OSError:
            chunk = b""
        if chunk:
            self.received += chunk
        else:
            self.closed = True

    def read_pdu(self, deadline: float) -> int | None:
        """The type of the next whole PDU the node sent (None: closed or *deadline* passed)."""
        while len(self.received) < 6 or len(self.received) < 6 + _length(self.received):
            if self.closed or time.monotonic() > deadline:
                return None
            self.poll(min(max(deadline - time.monotonic(), 0), 0.5))
        pdu_type = self.received[0]
        del self.received[: 6 + _length(self.received)]
        return pdu_type

    def close(self) -> None:
        """Close the connection."""
        with contextlib.suppress(OSError):
            self.sock.close()


def _length(data: bytearray) -> int:
    return int(struct.unpack(">L", data[2:6])[0])
