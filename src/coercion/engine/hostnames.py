"""Host names for ``SendingHostname``/``ReceivingHostname`` conditions: reverse lookups, cached.

dcm4chee-arc compares a peer's host *name* (the reverse lookup of its address,
so that ``127.0.0.1`` is ``localhost``); an event context holds the address.
:func:`host_names` gives both, so a condition written either way matches. A
lookup waits at most :data:`LOOKUP_TIMEOUT` seconds (an answer that comes
later is kept for the next object); answers, failures included, are kept for
:data:`CACHE_SECONDS` in a cache of at most :data:`CACHE_SIZE` addresses.
"""

from __future__ import annotations

import concurrent.futures
import ipaddress
import logging
import socket
import threading
import time
from collections import OrderedDict

__all__ = ["CACHE_SECONDS", "CACHE_SIZE", "LOOKUP_TIMEOUT", "host_names"]

log = logging.getLogger(__name__)

LOOKUP_TIMEOUT = 0.5
CACHE_SECONDS = 300.0
CACHE_SIZE = 1024

_cache: OrderedDict[str, tuple[float, str]] = OrderedDict()
_pending: dict[str, concurrent.futures.Future[str]] = {}
_lock = threading.Lock()
_pool = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="reverse-dns")


def host_names(host: str) -> tuple[str, ...]:
    """*host* and, when it is an IP address with a reverse name, that name."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return (host,)  # already a name
    name = _lookup(str(address))
    return (host, name) if name and name != host else (host,)


def _lookup(address: str) -> str:
    now = time.monotonic()
    with _lock:
        cached = _cache.get(address)
        if cached is not None and now - cached[0] < CACHE_SECONDS:
            _cache.move_to_end(address)
            return cached[1]
        future = _pending.get(address)
        started = future is None
        if future is None:
            future = _pending[address] = _pool.submit(_reverse, address)
    if started:  # outside the lock: a lookup done already calls back at once, in this thread
        future.add_done_callback(lambda done: _keep(address, done))
    try:
        return future.result(timeout=LOOKUP_TIMEOUT)
    except concurrent.futures.TimeoutError:
        log.debug("reverse lookup of %s took longer than %ss", address, LOOKUP_TIMEOUT)
        return ""


def _reverse(address: str) -> str:
    try:
        return socket.gethostbyaddr(address)[0]
    except OSError:
        return ""


def _keep(address: str, done: concurrent.futures.Future[str]) -> None:
    name = "" if done.cancelled() or done.exception() else done.result()
    with _lock:
        _pending.pop(address, None)
        _cache[address] = (time.monotonic(), name)
        _cache.move_to_end(address)
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)
