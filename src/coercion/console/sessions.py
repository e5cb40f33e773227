"""Signed-in sessions: a random token in an HttpOnly cookie, a CSRF token, an idle time-out.

Sessions live in memory only (a restart signs everyone out). A session ends
after ``timeout`` seconds without a request; every request that changes
something must carry the session's CSRF token in the ``X-CSRF-Token`` header,
which a page of another site cannot set.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from dataclasses import dataclass, field

from coercion.console.accounts import Role

__all__ = ["COOKIE", "CSRF_HEADER", "Session", "Sessions"]

#: The cookie that holds the session token.
COOKIE = "coercion_session"
#: The header that carries the CSRF token on POST, PUT, PATCH and DELETE.
CSRF_HEADER = "X-CSRF-Token"


@dataclass
class Session:
    """One signed-in person."""

    name: str
    role: Role
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    last_seen: float = field(default_factory=time.monotonic)

    @property
    def admin(self) -> bool:
        """Whether the person may change things."""
        return self.role is Role.ADMIN

    def csrf_ok(self, token: str | None) -> bool:
        """Whether *token* is this session's CSRF token."""
        return token is not None and hmac.compare_digest(token.encode(), self.csrf.encode())


class Sessions:
    """The sessions of one console, by token."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._by_token: dict[str, Session] = {}
        self._lock = threading.Lock()

    def open(self, name: str, role: Role) -> tuple[str, Session]:
        """A new session for *name*; returns its token and the session."""
        token = secrets.token_urlsafe(32)
        session = Session(name, role)
        with self._lock:
            self._expire()
            self._by_token[token] = session
        return token, session

    def get(self, token: str | None) -> Session | None:
        """The live session of *token* (its idle clock restarted), or None."""
        if not token:
            return None
        now = time.monotonic()
        with self._lock:
            session = self._by_token.get(token)
            if session is None:
                return None
            if now - session.last_seen > self.timeout:
                del self._by_token[token]
                return None
            session.last_seen = now
            return session

    def close(self, token: str | None) -> None:
        """End the session of *token* (signing out)."""
        with self._lock:
            self._by_token.pop(token or "", None)

    def _expire(self) -> None:
        now = time.monotonic()
        for token in [t for t, s in self._by_token.items() if now - s.last_seen > self.timeout]:
            del self._by_token[token]
