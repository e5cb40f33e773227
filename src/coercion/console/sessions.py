"""Signed-in sessions: a random token in an HttpOnly cookie, a CSRF token, an idle time-out.

Sessions live in memory only (a restart signs everyone out). A session ends
after ``timeout`` seconds without a request; every request that changes
something must carry the session's CSRF token in the ``X-CSRF-Token`` header,
which a page of another site cannot set.

Guessing passwords is slowed by :class:`SignInThrottle`: after a few failed
sign-ins from one address, or for one name, within a window, further attempts
from that address or for that name are refused (HTTP 429) until the window has
passed, without asking the directory or the password file.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from coercion.console.accounts import Role

__all__ = ["COOKIE", "CSRF_HEADER", "SIGNIN_FAILURES", "Session", "Sessions", "SignInThrottle"]

#: The cookie that holds the session token.
COOKIE = "coercion_session"
#: The header that carries the CSRF token on POST, PUT, PATCH and DELETE.
CSRF_HEADER = "X-CSRF-Token"
#: Failed sign-ins, from one address or for one name, after which the next ones wait.
SIGNIN_FAILURES = 5
#: Addresses and names remembered at most (the oldest are forgotten first).
_THROTTLE_KEYS = 10_000


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


class SignInThrottle:
    """Failed sign-ins per client address and per name, over the last *window* seconds.

    :meth:`wait` says how long a new attempt must wait: 0 while fewer than
    *failures* attempts failed within the window, for the address and for the
    name; otherwise until the oldest of them leaves the window. A success
    forgets the failures of its address and name.
    """

    def __init__(
        self,
        window: float,
        failures: int = SIGNIN_FAILURES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.window = window
        self.failures = failures
        self._clock = clock
        self._times: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _keys(address: str, name: str) -> tuple[str, str]:
        return f"address {address}", f"name {name}"

    def wait(self, address: str, name: str) -> float:
        """Seconds before a sign-in from *address* for *name* may be tried (0: now)."""
        now = self._clock()
        longest = 0.0
        with self._lock:
            for key in self._keys(address, name):
                times = self._recent(key, now)
                if len(times) >= self.failures:
                    longest = max(longest, times[-self.failures] + self.window - now)
        return longest

    def failed(self, address: str, name: str) -> None:
        """Count a failed sign-in from *address* for *name*."""
        now = self._clock()
        with self._lock:
            for key in self._keys(address, name):
                self._recent(key, now).append(now)
                self._times[key] = self._times.pop(key)  # the newest key last
            while len(self._times) > _THROTTLE_KEYS:
                del self._times[next(iter(self._times))]

    def succeeded(self, address: str, name: str) -> None:
        """Forget the failed sign-ins of *address* and *name*."""
        with self._lock:
            for key in self._keys(address, name):
                self._times.pop(key, None)

    def _recent(self, key: str, now: float) -> deque[float]:
        times = self._times.setdefault(key, deque())
        while times and now - times[0] > self.window:
            times.popleft()
        return times
